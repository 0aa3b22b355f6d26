//! The Merkle tree over the log, on SQLite and MariaDB: the stored tree's
//! roots and proofs are RFC 9162's (checked with the `verify` crate and
//! byte for byte against ct-merkle), out-of-range requests are typed
//! errors, racing extenders never both write, a hole stops the tree, and
//! the log check names a rewritten event.

// The support module names this crate as the rest of the workspace does.
extern crate pointstream_eventstore as eventstore;

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use domain::Wallet;
use eventstore::merkle::{self, Extended, Finding, Hash, ProofUnavailable, Signer};
use eventstore::{CommandContext, EventStore, RecordedEvent};
use sea_orm::{ConnectionTrait, Statement};
use support::{Backend, earn, open, quiet, scratch, world};

on_both_backends!(
    the_stored_trees_proofs_are_rfc_9162s,
    proofs_out_of_range_or_beyond_the_tree_are_typed_errors,
    two_extenders_racing_never_both_write,
    a_hole_in_the_log_stops_the_tree_before_it,
    the_log_check_names_a_rewritten_event,
);

const MEMBERS: [&str; 4] = ["ann", "bob", "cat", "dan"];

/// Registers the members and the cafe, then `count` earns spread over the
/// members (purchases `{prefix}0`, `{prefix}1`, ...).
async fn fill(store: &EventStore, count: u64) {
    world(store, &MEMBERS).await;
    earns(store, "r", count).await;
}

async fn earns(store: &EventStore, prefix: &str, count: u64) {
    for i in 0..count {
        let who = MEMBERS[(i % MEMBERS.len() as u64) as usize];
        let command = earn(who, &format!("{prefix}{i}"), 1_000 + i);
        store.execute::<Wallet>(who, command, CommandContext::default()).await.expect("earn lands");
    }
}

async fn sql(store: &EventStore, statement: &str) {
    store.db().execute_raw(Statement::from_string(store.backend(), statement)).await.expect("raw SQL runs");
}

/// The whole log as the database holds it.
async fn log(store: &EventStore) -> Vec<RecordedEvent> {
    let events = store.read_stored(0, 1_000_000).await.expect("the log reads");
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=events.len() as u64).collect::<Vec<_>>(), "positions are dense from 1");
    events
}

/// An event's leaf input, built here from the `verify` crate's definition.
fn leaf_input(event: &RecordedEvent) -> Vec<u8> {
    verify::leaf_input(&verify::EventLeaf {
        position: event.position,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        event_type: &event.event_type,
        event_version: event.event_version,
        payload: &event.payload,
        metadata_hash: verify::metadata_hash(&event.metadata),
        recorded_at_us: event.recorded_at_us,
    })
}

/// The leaf hashes of `events`, computed without the store (and checked
/// against the store's own `leaf_hash`).
fn leaf_hashes(events: &[RecordedEvent]) -> Vec<Hash> {
    events
        .iter()
        .map(|event| {
            let leaf = verify::leaf_hash(&leaf_input(event));
            assert_eq!(leaf, merkle::leaf_hash(event), "leaf of position {}", event.position);
            leaf
        })
        .collect()
}

/// Every row of `merkle_nodes`.
async fn stored_nodes(store: &EventStore) -> BTreeMap<(u32, u64), Hash> {
    let rows = store
        .db()
        .query_all_raw(Statement::from_string(store.backend(), "SELECT level, node_index, hash FROM merkle_nodes"))
        .await
        .expect("the nodes read");
    rows.iter()
        .map(|row| {
            let level = row.try_get::<i32>("", "level").expect("a level") as u32;
            let index = row.try_get::<i64>("", "node_index").expect("an index") as u64;
            let hash: String = row.try_get("", "hash").expect("a hash");
            ((level, index), verify::parse_hash(&hash).expect("a hash in hex"))
        })
        .collect()
}

/// Every perfect subtree of the tree over `leaves`: what `merkle_nodes`
/// is to hold for it, no more, no less.
fn expected_nodes(leaves: &[Hash]) -> BTreeMap<(u32, u64), Hash> {
    let mut nodes = BTreeMap::new();
    let mut level = 0;
    while 1usize << level <= leaves.len() {
        let width = 1usize << level;
        for index in 0..leaves.len() / width {
            nodes.insert((level, index as u64), verify::root(&leaves[index * width..(index + 1) * width]));
        }
        level += 1;
    }
    nodes
}

fn as_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes.chunks(32).map(|chunk| chunk.try_into().expect("32 bytes")).collect()
}

async fn the_stored_trees_proofs_are_rfc_9162s(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    fill(&store, 150).await;
    let events = log(&store).await;
    let head = events.len() as u64;
    assert!(head > 150, "{head} events");
    let inputs: Vec<Vec<u8>> = events.iter().map(leaf_input).collect();
    let leaves = leaf_hashes(&events);

    // Uneven batches; the builder is dropped once so the frontier is also
    // read back from the database.
    let mut builder = None;
    let mut size = 0;
    for max in [1, 7, 64, head] {
        if max == 64 {
            builder = None;
        }
        let added = max.min(head - size);
        size += added;
        let grown = merkle::extend(store.db(), &mut builder, max).await.expect("extends");
        assert_eq!(grown, Extended::Grown { size, added }, "batch of {max}");
        assert_eq!(
            builder.as_ref().map(|b| (b.size(), b.root())),
            Some((size, verify::root(&leaves[..size as usize])))
        );
    }
    assert_eq!(
        merkle::extend(store.db(), &mut builder, 10).await.expect("extends"),
        Extended::Grown { size: head, added: 0 }
    );
    assert_eq!(merkle::size(store.db()).await.expect("reads"), head);
    assert_eq!(stored_nodes(&store).await, expected_nodes(&leaves), "every perfect subtree, stored once");
    let stored_leaves = merkle::leaves(store.db(), 0, head).await.expect("reads");
    assert_eq!(stored_leaves, leaves.iter().copied().enumerate().map(|(i, h)| (i as u64, h)).collect::<Vec<_>>());

    assert_eq!(merkle::root(store.db(), 0).await.expect("a root"), verify::empty_root());
    // ct-merkle's tree grows one leaf at a time, giving what each size's
    // proofs are to be; the server is asked for them several sizes at once.
    let mut reference = MemoryBackedTree::<sha2_next::Sha256, Vec<u8>>::new();
    let mut roots = vec![verify::empty_root()];
    let mut checks = tokio::task::JoinSet::new();
    for n in 1..=head {
        reference.push(inputs[n as usize - 1].clone());
        let root = verify::root(&leaves[..n as usize]);
        assert_eq!(reference.root().as_bytes().as_slice(), root.as_slice(), "ct-merkle's root of {n}");
        roots.push(root);
        let indices: Vec<u64> =
            if n <= 64 { (0..n).collect() } else { (0..n).step_by(7).chain([n / 2, n - 1]).collect() };
        let olds: Vec<u64> = if n <= 64 {
            (0..=n).collect()
        } else {
            let powers = (0..8).map(|bit| 1u64 << bit).filter(|m| *m <= n);
            (0..=n).step_by(7).chain(powers).chain([n - 1, n]).collect()
        };
        let expected = Expected {
            n,
            leaves: indices.iter().map(|index| leaves[*index as usize]).collect(),
            inclusion: indices
                .iter()
                .map(|index| (*index, as_hashes(reference.prove_inclusion(*index as usize).as_bytes())))
                .collect(),
            consistency: olds
                .iter()
                .map(|m| {
                    let proof = if *m == 0 || *m == n {
                        Vec::new()
                    } else {
                        as_hashes(reference.prove_consistency((n - m) as usize).as_bytes())
                    };
                    (*m, roots[*m as usize], proof)
                })
                .collect(),
            root,
        };
        while checks.len() >= 8 {
            checks.join_next().await.expect("a check").expect("the check passes");
        }
        checks.spawn(served_as_expected(store.clone(), expected));
    }
    while let Some(check) = checks.join_next().await {
        check.expect("the check passes");
    }
}

/// What the server is to serve for the tree of `n` leaves.
struct Expected {
    n: u64,
    root: Hash,
    /// The leaves asked about, and ct-merkle's proof of each.
    leaves: Vec<Hash>,
    inclusion: Vec<(u64, Vec<Hash>)>,
    /// Earlier sizes, their roots, and ct-merkle's proof from each.
    consistency: Vec<(u64, Hash, Vec<Hash>)>,
}

/// Checks the server's root and proofs for one size with the `verify`
/// crate, and that they are ct-merkle's byte for byte.
async fn served_as_expected(store: EventStore, expected: Expected) {
    let (db, n, root) = (store.db(), expected.n, expected.root);
    assert_eq!(merkle::root(db, n).await.expect("a root"), root, "root of {n}");
    let indices: Vec<u64> = expected.inclusion.iter().map(|(index, _)| *index).collect();
    let batch = merkle::inclusion_proofs(db, &indices, n).await.expect("proofs");
    assert_eq!(batch.len(), indices.len());
    for (((index, theirs), (leaf, path)), expected_leaf) in expected.inclusion.iter().zip(&batch).zip(&expected.leaves)
    {
        assert_eq!(leaf, expected_leaf, "leaf {index}");
        assert_eq!(verify::verify_inclusion(*index, n, leaf, path, &root), Ok(()), "leaf {index} of {n}");
        assert_eq!(path, theirs, "leaf {index} of {n}: ct-merkle's proof");
    }
    // One at a time, as served to a member: the same proofs.
    for (index, proof) in indices.iter().zip(&batch).filter(|(index, _)| *index % 3 == n % 3) {
        assert_eq!(&merkle::inclusion_proof(db, *index, n).await.expect("a proof"), proof, "leaf {index} of {n}");
    }
    for (m, old_root, theirs) in &expected.consistency {
        let proof = merkle::consistency_proof(db, *m, n).await.expect("a proof");
        assert_eq!(
            verify::verify_consistency(*m, n, old_root, &root, &proof),
            Ok(()),
            "{m} -> {n}: {} hashes",
            proof.len()
        );
        assert_eq!(&proof, theirs, "{m} -> {n}: ct-merkle's proof");
    }
}

async fn proofs_out_of_range_or_beyond_the_tree_are_typed_errors(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    let db = store.db();
    assert!(matches!(merkle::inclusion_proof(db, 0, 0).await, Err(ProofUnavailable::OutOfRange(_))));
    assert_eq!(merkle::root(db, 0).await.expect("the empty root"), verify::empty_root());
    assert_eq!(merkle::consistency_proof(db, 0, 0).await.expect("nothing to prove"), Vec::<Hash>::new());

    fill(&store, 12).await;
    let head = store.head();
    let size = 10;
    let mut builder = None;
    assert_eq!(merkle::extend(db, &mut builder, size).await.expect("extends"), Extended::Grown { size, added: size });
    assert!(head > size, "the log goes on past the tree");

    for (index, tree) in [(size, size), (size + 3, size), (0, 0), (5, 3)] {
        match merkle::inclusion_proof(db, index, tree).await {
            Err(ProofUnavailable::OutOfRange(_)) => {}
            other => panic!("leaf {index} of {tree}: {other:?}"),
        }
    }
    match merkle::inclusion_proofs(db, &[0, 3, size], size).await {
        Err(ProofUnavailable::OutOfRange(_)) => {}
        other => panic!("one leaf out of range: {other:?}"),
    }
    for asked in [size + 1, head, head + 100] {
        match merkle::inclusion_proof(db, 0, asked).await {
            Err(ProofUnavailable::BeyondTree { asked: a, tree }) => assert_eq!((a, tree), (asked, size)),
            other => panic!("a tree of {asked}: {other:?}"),
        }
        match merkle::root(db, asked).await {
            Err(ProofUnavailable::BeyondTree { asked: a, tree }) => assert_eq!((a, tree), (asked, size)),
            other => panic!("the root of {asked}: {other:?}"),
        }
        match merkle::consistency_proof(db, 1, asked).await {
            Err(ProofUnavailable::BeyondTree { asked: a, tree }) => assert_eq!((a, tree), (asked, size)),
            other => panic!("1 -> {asked}: {other:?}"),
        }
    }
    for (old, new) in [(size, size - 1), (2, 1), (size + 5, size)] {
        match merkle::consistency_proof(db, old, new).await {
            Err(error @ ProofUnavailable::OutOfRange(_)) => assert!(!error.to_string().is_empty()),
            other => panic!("{old} -> {new}: {other:?}"),
        }
    }
    let message = merkle::root(db, size + 1).await.expect_err("beyond").to_string();
    assert!(message.contains(&size.to_string()) && message.contains(&(size + 1).to_string()), "{message}");
    // Within the tree all is served.
    merkle::inclusion_proof(db, size - 1, size).await.expect("the last leaf's proof");
    merkle::consistency_proof(db, 1, size).await.expect("a consistency proof");
}

/// Extends the tree on its own store until it reaches the log's final head
/// (once `done`); every outcome.
async fn extend_until_done(store: EventStore, maxes: &[u64], done: Arc<AtomicBool>) -> Vec<Extended> {
    let mut builder = None;
    let mut outcomes = Vec::new();
    for round in 0.. {
        let finished = done.load(Ordering::SeqCst);
        let max = maxes[round % maxes.len()];
        let outcome = match merkle::extend(store.db(), &mut builder, max).await {
            Ok(outcome) => outcome,
            Err(err) => panic!("extend (round {round}, after {outcomes:?}): {err}"),
        };
        outcomes.push(outcome);
        if finished
            && let Extended::Grown { size, .. } = outcome
            && size == store.read_head().await.expect("the head reads")
        {
            break;
        }
        if let Extended::Grown { added: 0, .. } = outcome {
            // Caught up: give the appends a moment rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    outcomes
}

async fn two_extenders_racing_never_both_write(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let writer = open(&db, quiet()).await;
    world(&writer, &MEMBERS).await;
    // Two processes' stores, each with its own pool and frontier.
    let (first, second) = (open(&db, quiet()).await, open(&db, quiet()).await);
    let done = Arc::new(AtomicBool::new(false));
    let appending = {
        let (writer, done) = (writer.clone(), done.clone());
        tokio::spawn(async move {
            earns(&writer, "r", 120).await;
            done.store(true, Ordering::SeqCst);
        })
    };
    let one = tokio::spawn(extend_until_done(first, &[1, 3, 2, 5], done.clone()));
    let two = tokio::spawn(extend_until_done(second, &[2, 1, 4, 3], done.clone()));
    appending.await.expect("the appends land");
    let (one, two) = (one.await.expect("extends"), two.await.expect("extends"));

    let events = log(&writer).await;
    let head = events.len() as u64;
    let leaves = leaf_hashes(&events);
    let mut added = 0;
    let mut raced = 0;
    for outcome in one.iter().chain(&two) {
        match outcome {
            Extended::Grown { added: a, .. } => added += a,
            Extended::Raced => raced += 1,
            Extended::Hole(at) => panic!("a hole at {at} in a dense log"),
        }
    }
    eprintln!("{} and {} extensions, {raced} lost races, {head} leaves", one.len(), two.len());
    assert_eq!(added, head, "each leaf was added by exactly one extension");
    for outcomes in [&one, &two] {
        let sizes: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| if let Extended::Grown { size, .. } = o { Some(*size) } else { None })
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "the tree never shrinks: {sizes:?}");
    }
    assert_eq!(merkle::size(writer.db()).await.expect("reads"), head);
    assert_eq!(stored_nodes(&writer).await, expected_nodes(&leaves), "no node missing, none extra, none wrong");
    for n in 0..=head {
        assert_eq!(
            merkle::root(writer.db(), n).await.expect("a root"),
            verify::root(&leaves[..n as usize]),
            "size {n}"
        );
    }
}

async fn a_hole_in_the_log_stops_the_tree_before_it(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    fill(&store, 30).await;
    let events = log(&store).await;
    let leaves = leaf_hashes(&events);
    let mut builder = None;
    assert_eq!(
        merkle::extend(store.db(), &mut builder, 10).await.expect("extends"),
        Extended::Grown { size: 10, added: 10 }
    );

    let hole = 21;
    assert!(events.len() as u64 > hole + 5, "events follow the hole");
    sql(&store, &format!("DELETE FROM events WHERE position = {hole}")).await;
    assert_eq!(merkle::extend(store.db(), &mut builder, 1_000).await.expect("extends"), Extended::Hole(hole));
    assert_eq!(merkle::size(store.db()).await.expect("reads"), hole - 1, "grown up to the hole");
    assert_eq!(builder.as_ref().map(|b| b.size()), Some(hole - 1));
    let before = &leaves[..hole as usize - 1];
    assert_eq!(merkle::root(store.db(), hole - 1).await.expect("a root"), verify::root(before));
    assert_eq!(stored_nodes(&store).await, expected_nodes(before), "nothing stored past the hole");

    // It stays stopped, from the frontier held or read back.
    assert_eq!(merkle::extend(store.db(), &mut builder, 1_000).await.expect("extends"), Extended::Hole(hole));
    assert_eq!(merkle::extend(store.db(), &mut None, 3).await.expect("extends"), Extended::Hole(hole));
    assert_eq!(merkle::size(store.db()).await.expect("reads"), hole - 1);
    assert!(matches!(merkle::root(store.db(), hole).await, Err(ProofUnavailable::BeyondTree { .. })));
}

async fn the_log_check_names_a_rewritten_event(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    fill(&store, 30).await;
    let head = store.head();
    assert_eq!(
        merkle::extend(store.db(), &mut None, head).await.expect("extends"),
        Extended::Grown { size: head, added: head }
    );
    let (signer, _seed) = Signer::generate();
    let key = signer.public_key();
    let early = 15;
    let now = eventstore::now_us();
    let digests = [
        signer.sign(early, &merkle::root(store.db(), early).await.expect("a root"), now),
        signer.sign(head, &merkle::root(store.db(), head).await.expect("a root"), now + 1),
    ];
    for digest in &digests {
        digest.verify(key).expect("signed");
    }
    let clean = merkle::check_log(store.db(), &digests, key).await.expect("checks");
    assert!(clean.is_clean(), "{:?}", clean.findings);
    assert_eq!((clean.events, clean.digests), (head, 2));

    // A rewritten event after the first digest: named exactly, under the second.
    let later = early + 7;
    sql(&store, &format!("UPDATE events SET payload = '{{\"rewritten\":true}}' WHERE position = {later}")).await;
    let report = merkle::check_log(store.db(), &digests, key).await.expect("checks");
    assert_eq!(report.findings, vec![Finding::RootMismatch { tree_size: head, from: later, to: later }]);
    assert_eq!(report.first_disagreement(), Some(later));

    // One under both digests: named under each.
    let earlier = 4;
    sql(&store, &format!("UPDATE events SET payload = '{{\"rewritten\":true}}' WHERE position = {earlier}")).await;
    let report = merkle::check_log(store.db(), &digests, key).await.expect("checks");
    assert_eq!(
        report.findings,
        vec![
            Finding::RootMismatch { tree_size: early, from: earlier, to: earlier },
            Finding::RootMismatch { tree_size: head, from: earlier, to: earlier },
        ]
    );
}
