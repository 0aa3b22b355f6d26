//! `pointstream projector` killed with SIGKILL in the middle of batches, again
//! and again, while commands keep landing: afterwards the read models equal an
//! in-memory replay of the log (MariaDB).

#[path = "../eventstore/tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use domain::values::{ShareId, ShareMessage};
use domain::{SharePart, Wallet, WalletCommand};
use eventstore::{CommandContext, CommandError, EventStore};
use projections::checkpoint;
use projections::{Names, PROJECTIONS, audit};
use sea_orm::ConnectionTrait;
use support::tap::{self, Tap};
use support::{Backend, cafe, earn, member, open, points, quiet, scratch, world};

const MEMBERS: usize = 20;

/// A `pointstream projector` process, killed (SIGKILL) when dropped, so that
/// a failing test leaves none behind.
struct Projector(Child);

impl Projector {
    fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, then reap it.
    fn kill(mut self) {
        self.0.kill().expect("SIGKILL is delivered");
        self.0.wait().expect("the projector is reaped");
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A projector on `url` whose leases last `lease_ttl_ms`.
fn projector(url: &str, lease_ttl_ms: u64) -> Projector {
    let child = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .arg("projector")
        .env("DATABASE_URL", url)
        .env("POINTSTREAM_LEASE_TTL_MS", lease_ttl_ms.to_string())
        .env("POINTSTREAM_PROJECTOR_BATCH", "25")
        .env("POINTSTREAM_DIGEST_DIR", media::scratch::scratch_dir())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the projector starts");
    Projector(child)
}

async fn write(store: EventStore, task: usize, stop: Arc<AtomicBool>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let who = format!("m{:02}", (i * 7 + task) % MEMBERS);
        let command = if i % 3 == 2 {
            let to = format!("m{:02}", (i * 7 + task + 1) % MEMBERS);
            WalletCommand::Share {
                share: ShareId::parse(format!("s{task}-{i}")).expect("valid"),
                store: cafe(),
                recipients: vec![SharePart { member: member(&to), points: points(5) }],
                message: ShareMessage::parse("hi").expect("valid"),
            }
        } else {
            earn(&who, &format!("t{task}-{i}"), 1_000)
        };
        match store.execute::<Wallet>(&who, command, CommandContext::default()).await {
            Ok(_) | Err(CommandError::Rejected(_)) | Err(CommandError::Conflict { .. }) => {}
            Err(other) => panic!("writer {task}: {other}"),
        }
        // A steady stream rather than a burst, so that kills land mid-batch.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn all_caught_up(store: &EventStore) -> bool {
    let head = store.read_head().await.expect("the head reads");
    all_caught_up_to(store, head).await
}

/// Whether every consumer's checkpoint has reached `head`.
async fn all_caught_up_to(store: &EventStore, head: u64) -> bool {
    for name in PROJECTIONS.iter().chain(["share_distribution"].iter()) {
        if checkpoint::read(store.db(), name, &Names::LIVE).await.expect("reads") < head {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_batch_loses_and_doubles_nothing() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let people: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:02}")).collect();
    world(&store, &people.iter().map(String::as_str).collect::<Vec<_>>()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|task| tokio::spawn(write(store.clone(), task, stop.clone()))).collect();
    let kills = 6;
    for kill in 0..kills {
        // Each projector is killed once it has taken over every lease (its
        // killed predecessor's having expired) and moved the wallets on: in
        // the middle of its work, a little later each time.
        let before = checkpoint::read(store.db(), "wallets", &Names::LIVE).await.expect("reads");
        let child = projector(&db.url, 300);
        let pid = format!("pid {} ", child.id());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let holders = lease_holders(&store).await;
            let holds_all = holders.len() == LEASES && holders.iter().all(|h| h.starts_with(&pid));
            if holds_all && checkpoint::read(store.db(), "wallets", &Names::LIVE).await.expect("reads") > before {
                break;
            }
            assert!(Instant::now() < deadline, "projector {kill} did not take over and make progress: {holders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(70 * kill)).await;
        child.kill();
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("a writer finishes");
    }
    let moved_before_the_last_run = checkpoint::read(store.db(), "wallets", &Names::LIVE).await.expect("reads");
    assert!(moved_before_the_last_run > 0, "the killed projectors made progress");

    // One last projector finishes the work. The share distribution's
    // commands may add events: done when every consumer, the distribution
    // included, has handled the log up to a head that did not move meanwhile
    // (what the distribution appends for an event it has handled is in the
    // log before its checkpoint passes that event).
    let child = projector(&db.url, 300);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let head = store.read_head().await.expect("reads");
        if all_caught_up_to(&store, head).await && head == store.read_head().await.expect("reads") {
            break;
        }
        assert!(Instant::now() < deadline, "the projector did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill();

    let report = audit(&store).await.expect("audits");
    assert!(report.is_clean(), "after {kills} kills: {:?}", report.problems());
    let wallets = report.projections.iter().find(|p| p.name == "wallets").expect("wallets audited");
    assert_eq!(wallets.checkpoint, store.read_head().await.expect("reads"));
}

/// Leases a projector process takes: one per projection, the share
/// distribution's and the notary's.
const LEASES: usize = 7;

async fn lease_holders(store: &EventStore) -> Vec<String> {
    let rows = store
        .db()
        .query_all_raw(sea_orm::Statement::from_string(store.backend(), "SELECT holder FROM leases ORDER BY name"))
        .await
        .expect("leases read");
    rows.iter().map(|row| row.try_get::<String>("", "holder").expect("holder")).collect()
}

async fn lease_names(store: &EventStore) -> Vec<String> {
    let rows = store
        .db()
        .query_all_raw(sea_orm::Statement::from_string(store.backend(), "SELECT name FROM leases ORDER BY name"))
        .await
        .expect("leases read");
    rows.iter().map(|row| row.try_get::<String>("", "name").expect("name")).collect()
}

async fn wait_caught_up(store: &EventStore) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_caught_up(store).await {
        assert!(Instant::now() < deadline, "the projectors did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_projector_waits_and_takes_over_when_the_first_dies() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["m00", "m01"]).await;
    store.execute::<Wallet>("m01", earn("m01", "r1", 1_000), CommandContext::default()).await.expect("lands");

    // Leases long enough that a live holder on a loaded machine keeps them.
    let ttl = 5_000;
    let first = projector(&db.url, ttl);
    wait_caught_up(&store).await;
    let first_pid = format!("pid {} ", first.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holders = lease_holders(&store).await;
        if holders.len() == LEASES && holders.iter().all(|h| h.starts_with(&first_pid)) {
            break;
        }
        assert!(Instant::now() < deadline, "the first projector took a lease per consumer: {holders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leases = lease_names(&store).await;

    // The second reaches the database through a tap: it has tried for every
    // lease once the database has refused it each (the lease row is there
    // and was not its to take).
    let tap = Tap::start(&tap::host_port(&db.url));
    let second = projector(&format!("{}?ssl-mode=disabled", tap::through(&db.url, &tap)), ttl);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let refused: Vec<&String> = leases
            .iter()
            .filter(|name| tap.received_count(format!("Duplicate entry '{name}'").as_bytes()) > 0)
            .collect();
        if refused.len() == leases.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the second projector tried for every lease: refused {refused:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holders = lease_holders(&store).await;
    assert_eq!(holders.len(), LEASES, "a lease per projection, the share distribution and the notary: {holders:?}");
    assert!(holders.iter().all(|h| h.starts_with(&first_pid)), "the first projector holds every lease: {holders:?}");

    first.kill();
    // Taken over once the dead holder's leases expire.
    let second_pid = format!("pid {} ", second.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lease_holders(&store).await.iter().all(|h| h.starts_with(&second_pid)) {
        assert!(Instant::now() < deadline, "the second projector took over: {:?}", lease_holders(&store).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.execute::<Wallet>("m01", earn("m01", "r2", 1_000), CommandContext::default()).await.expect("lands");
    wait_caught_up(&store).await;
    let holders = lease_holders(&store).await;
    assert_eq!(holders.len(), LEASES, "{holders:?}");
    assert!(holders.iter().all(|h| h.starts_with(&second_pid)), "the second projector took over: {holders:?}");
    second.kill();
    let balance = projections::queries::balance(store.db(), "m01", "cafe").await.expect("reads");
    assert_eq!(balance, 200);
    assert!(audit(&store).await.expect("audits").is_clean());
}
