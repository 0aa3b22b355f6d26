//! The notary, running as the server runs it while commands land: it keeps
//! the Merkle tree up with the log, signs digests that verify and extend
//! one another, publishes each once (read-only, as stored), and when two
//! run on one database only the lease holder works; the other takes over
//! when it stops.

// The shared support module names this crate as the rest of the workspace does.
extern crate pointstream_projections as projections;

#[path = "../../eventstore/tests/support/mod.rs"]
#[macro_use]
mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::Wallet;
use eventstore::merkle::{self, Digest, Publish, Signer};
use eventstore::{CommandContext, EventStore};
use media::digests::{DigestPublisher, digest_document, digest_name};
use projections::notary::{self, NotaryConfig};
use support::{Backend, earn, open, quiet, scratch, world};
use tokio::sync::watch;
use tokio::task::JoinHandle;

on_both_backends!(the_notary_signs_and_publishes_a_consistent_history, two_notaries_take_turns_and_never_both_sign);

const MEMBERS: [&str; 3] = ["ann", "bob", "cat"];

fn config() -> NotaryConfig {
    NotaryConfig {
        every_events: 5,
        every: Duration::from_millis(200),
        batch_size: 3,
        lease_ttl: Duration::from_secs(2),
        pace: Duration::from_millis(20),
    }
}

/// `count` earns spread over the members, purchases `{prefix}0`, `{prefix}1`, ...
async fn earns(store: &EventStore, prefix: &str, count: u64) {
    for i in 0..count {
        let who = MEMBERS[(i % MEMBERS.len() as u64) as usize];
        let command = earn(who, &format!("{prefix}{i}"), 1_000 + i);
        store.execute::<Wallet>(who, command, CommandContext::default()).await.expect("earn lands");
    }
}

/// Waits, polling, until `check` holds; fails the test after 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The largest tree size published in `dir` (0: none yet).
fn published_size(dir: &Path) -> u64 {
    media::digests::read_dir(dir).ok().and_then(|digests| digests.last().map(|d| d.tree_size)).unwrap_or(0)
}

/// Waits until the digests published in `dir` cover the log's head.
async fn wait_until_published(store: &EventStore, dir: &Path) {
    let head = store.read_head().await.expect("the head reads");
    eventually(&format!("a digest of {head} events is published"), || async { published_size(dir) >= head }).await;
}

/// A publisher that notes which notary published what.
struct Noting {
    inner: DigestPublisher,
    who: &'static str,
    log: Arc<Mutex<Vec<(&'static str, u64)>>>,
}

#[async_trait::async_trait]
impl Publish for Noting {
    async fn publish(&self, digest: &Digest) -> Result<String, String> {
        // Noted before the digest appears where the test waits for it, so a
        // test that saw the file also sees the note. An attempt that then
        // failed would be noted without a file: the comparison of the two
        // says so.
        self.log.lock().expect("not poisoned").push((self.who, digest.tree_size));
        self.inner.publish(digest).await
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(store: EventStore, signer: &Signer, publisher: Arc<dyn Publish>) -> Running {
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(notary::run(store, config(), signer.clone(), Some(publisher), shutdown));
        Running { stop, task }
    }

    async fn stop(self) {
        self.stop.send(true).expect("the notary listens");
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the notary stops promptly")
            .expect("the notary did not panic");
    }
}

/// Everything published in `dir` against the database and the log: the
/// same digests as stored, written once and read-only, each signed by
/// `signer`, of strictly growing sizes, each consistent with the one
/// before, each root the root of the log's prefix, the last of the whole
/// log; nothing left to publish.
async fn check_published(store: &EventStore, dir: &Path, signer: &Signer) -> Vec<Digest> {
    let db = store.db();
    let published = media::digests::read_dir(dir).expect("the digests read");
    let stored = merkle::digests_after(db, 0, 100_000).await.expect("the digests read");
    assert_eq!(published, stored, "what is published is what is stored");
    assert!(merkle::unpublished(db, 100).await.expect("reads").is_empty(), "nothing left to publish");

    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the directory lists")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, published.iter().map(digest_name).collect::<Vec<_>>(), "one file per digest, nothing else");
    for digest in &published {
        let path = dir.join(digest_name(digest));
        assert_eq!(std::fs::read(&path).expect("reads"), digest_document(digest).expect("a document"), "{path:?}");
        assert!(std::fs::metadata(&path).expect("a file").permissions().readonly(), "{path:?} is read-only");
        digest.verify(signer.public_key()).unwrap_or_else(|err| panic!("digest of {}: {err}", digest.tree_size));
    }

    let events = store.read_stored(0, 1_000_000).await.expect("the log reads");
    let leaves: Vec<merkle::Hash> = events.iter().map(merkle::leaf_hash).collect();
    let sizes: Vec<u64> = published.iter().map(|d| d.tree_size).collect();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "strictly growing sizes: {sizes:?}");
    assert!(published.windows(2).all(|w| w[0].timestamp_us <= w[1].timestamp_us), "signed in order");
    for digest in &published {
        let root = verify::root(&leaves[..digest.tree_size as usize]);
        assert_eq!(digest.root().expect("a root"), root, "digest of {}", digest.tree_size);
    }
    for pair in published.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        let proof = merkle::consistency_proof(db, earlier.tree_size, later.tree_size).await.expect("a proof");
        let roots = (earlier.root().expect("a root"), later.root().expect("a root"));
        assert_eq!(
            verify::verify_consistency(earlier.tree_size, later.tree_size, &roots.0, &roots.1, &proof),
            Ok(()),
            "{} -> {}",
            earlier.tree_size,
            later.tree_size
        );
    }
    let last = published.last().expect("something was published");
    assert_eq!(last.tree_size, events.len() as u64, "the last digest covers the whole log");
    assert_eq!(last.root().expect("a root"), verify::root(&leaves));
    assert_eq!(merkle::size(db).await.expect("reads"), events.len() as u64);
    let report = merkle::check_log(db, &published, signer.public_key()).await.expect("checks");
    assert!(report.is_clean(), "{:?}", report.findings);
    published
}

fn digest_dir(temporary: &tempfile::TempDir) -> PathBuf {
    // Not there yet: the publisher makes it.
    temporary.path().join("digests")
}

async fn the_notary_signs_and_publishes_a_consistent_history(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let dir = digest_dir(&temporary);
    let (signer, _seed) = Signer::generate();
    let notary = Running::start(store.clone(), &signer, Arc::new(DigestPublisher::Dir(dir.clone())));

    world(&store, &MEMBERS).await;
    for round in 0..4 {
        earns(&store, &format!("r{round}-"), 7 + round).await;
        wait_until_published(&store, &dir).await;
    }
    notary.stop().await;

    let published = check_published(&store, &dir, &signer).await;
    assert!(published.len() >= 4, "a digest per round at least: {}", published.len());
    let head = store.head();
    assert_eq!(published.last().map(|d| d.tree_size), Some(head));
    // Signing now adds nothing new: the last digest already covers the log.
    assert_eq!(notary::sign_now(&store, &signer, 3).await.expect("signs"), published.last().cloned().expect("one"));
}

async fn two_notaries_take_turns_and_never_both_sign(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let writer = open(&db, quiet()).await;
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let dir = digest_dir(&temporary);
    let (signer, _seed) = Signer::generate();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut notaries = Vec::new();
    for who in ["first", "second"] {
        // Each on a store of its own, as two processes would be.
        let store = open(&db, quiet()).await;
        let publisher = Noting { inner: DigestPublisher::Dir(dir.clone()), who, log: log.clone() };
        notaries.push((who, Running::start(store, &signer, Arc::new(publisher))));
    }

    world(&writer, &MEMBERS).await;
    for round in 0..3 {
        earns(&writer, &format!("r{round}-"), 6).await;
        wait_until_published(&writer, &dir).await;
    }
    let before: Vec<(&str, u64)> = log.lock().expect("not poisoned").clone();
    let active = before[0].0;
    assert!(before.iter().all(|(who, _)| *who == active), "one notary at a time: {before:?}");

    // The active one stops (and gives up its lease): the other takes over.
    let at = notaries.iter().position(|(who, _)| *who == active).expect("one of them");
    let (_, stopped) = notaries.remove(at);
    stopped.stop().await;
    for round in 3..5 {
        earns(&writer, &format!("r{round}-"), 6).await;
        wait_until_published(&writer, &dir).await;
    }
    let (other, running) = notaries.remove(0);
    running.stop().await;

    let published = check_published(&writer, &dir, &signer).await;
    let log = log.lock().expect("not poisoned").clone();
    let sizes: Vec<u64> = log.iter().map(|(_, size)| *size).collect();
    assert_eq!(sizes, published.iter().map(|d| d.tree_size).collect::<Vec<_>>(), "each published once, in order");
    let after = &log[before.len()..];
    assert!(!after.is_empty() && after.iter().all(|(who, _)| *who == other), "{other} took over: {log:?}");
}
