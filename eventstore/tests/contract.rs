//! The event store contract, run against SQLite and MariaDB alike.

// The support module names this crate as the rest of the workspace does.
extern crate pointstream_eventstore as eventstore;

#[macro_use]
mod support;

use std::time::Duration;

use domain::values::{Points, Reason};
use domain::{DomainError, Member, MemberCommand, Wallet, WalletCommand, WalletEvent};
use eventstore::chain::ChainBreak;
use eventstore::{CommandContext, CommandError, EventStoreConfig, EventStoreError, Metadata};
use sea_orm::{ConnectionTrait, Statement};
use support::{Backend, cafe, earn, member, open, points, quiet, scratch, world};

on_both_backends!(
    round_trip_keeps_events_metadata_and_positions,
    a_lost_race_is_retried_and_then_fails_as_a_conflict,
    concurrent_commands_on_one_aggregate_all_land_in_order,
    a_command_id_seen_before_returns_the_first_outcome,
    one_keyed_command_racing_in_two_processes_lands_once,
    refused_commands_write_nothing,
    snapshot_state_equals_full_replay_state,
    tampering_is_named_by_verification,
    unknown_and_malformed_stored_events_are_named_errors,
    points_earned_v1_fixture_loads_through_the_upcaster,
    waiters_wake_when_the_log_moves,
    the_follower_reads_only_what_other_processes_appended,
    ids_differing_only_in_case_are_different_streams,
    a_fresh_id_that_names_a_stream_is_decided_on_its_stored_state,
    a_refusal_is_decided_on_the_stored_state_not_a_stale_cache,
    a_refusal_reads_the_stream_once,
);

/// Bob earns `count` times at the cafe (purchases r0, r1, ...), paying
/// 1,000 plus `raise` times the purchase's number.
async fn bob_earns(store: &eventstore::EventStore, count: u64, raise: u64) {
    for i in 0..count {
        store
            .execute::<Wallet>("bob", earn("bob", &format!("r{i}"), 1_000 + raise * i), CommandContext::default())
            .await
            .expect("earn lands");
    }
}

async fn sql(store: &eventstore::EventStore, statement: &str) {
    let backend = store.backend();
    store.db().execute_raw(Statement::from_string(backend, statement)).await.expect("raw SQL runs");
}

async fn round_trip_keeps_events_metadata_and_positions(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    let context = CommandContext {
        command_id: Some("till-7/0001".into()),
        actor: Some("staff:ann".into()),
        role: Some("staff".into()),
        correlation_id: Some("req-42".into()),
        causation_id: Some("purchase-99".into()),
        request_id: Some("req-42".into()),
        client_ip: Some("10.0.0.7".into()),
        fresh_id: false,
    };
    let outcome = store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), context).await.expect("earn lands");
    assert!(!outcome.replayed);
    assert_eq!(outcome.sequence, 2, "WalletOpened then PointsEarned");

    let events = store.read_from(0, 1_000).await.expect("log reads");
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=events.len() as u64).collect::<Vec<_>>(), "positions are dense from 1");
    assert_eq!(store.head(), events.len() as u64);
    assert_eq!((outcome.first_position, outcome.last_position), (positions[positions.len() - 2], store.head()));

    let stream = store.read_stream("Wallet", "bob").await.expect("stream reads");
    assert_eq!(stream.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(stream[0].decode::<Wallet>().expect("decodes"), WalletEvent::WalletOpened { member: member("bob") });
    match stream[1].decode::<Wallet>().expect("decodes") {
        WalletEvent::PointsEarned { points, policy_version, .. } => {
            assert_eq!((points.get(), policy_version), (100, 1));
        }
        other => panic!("expected PointsEarned, got {other:?}"),
    }
    let metadata: Metadata = stream[1].metadata().expect("metadata reads");
    assert_eq!(
        metadata,
        Metadata {
            actor: Some("staff:ann".into()),
            role: Some("staff".into()),
            command_id: "till-7/0001".into(),
            correlation_id: "req-42".into(),
            causation_id: Some("purchase-99".into()),
            request_id: Some("req-42".into()),
            client_ip: Some("10.0.0.7".into()),
            traceparent: None,
            tracestate: None,
        }
    );

    // A second process (cold cache) sees the same state.
    let other = open(&db, quiet()).await;
    let loaded = other.load::<Wallet>("bob").await.expect("wallet loads");
    assert_eq!(loaded.state.balance(&cafe()), 100);
    assert_eq!(loaded, store.current::<Wallet>("bob").await.expect("cached wallet"));
    assert!(store.verify().await.expect("verifies").is_clean());
}

async fn a_lost_race_is_retried_and_then_fails_as_a_conflict(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let first = open(&db, quiet()).await;
    world(&first, &["ann", "bob"]).await;
    first.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await.expect("earn lands");

    // A process that may try only once: its cached wallet is stale, so it loses.
    let impatient = open(&db, EventStoreConfig { max_attempts: 1, ..quiet() }).await;
    impatient.current::<Wallet>("bob").await.expect("warms the cache");
    first.execute::<Wallet>("bob", earn("bob", "r2", 1_000), CommandContext::default()).await.expect("earn lands");
    let head = first.head();
    let lost = impatient.execute::<Wallet>("bob", earn("bob", "r3", 1_000), CommandContext::default()).await;
    match lost {
        Err(CommandError::Conflict { aggregate_type: "Wallet", aggregate_id, attempts: 1 }) => {
            assert_eq!(aggregate_id, "bob");
        }
        other => panic!("expected a conflict after one attempt, got {other:?}"),
    }
    assert_eq!(first.read_from(head, 10).await.expect("log reads"), vec![], "the loser wrote nothing");

    // A process allowed to retry reloads and lands.
    let patient = open(&db, quiet()).await;
    patient.current::<Wallet>("bob").await.expect("warms the cache");
    first.execute::<Wallet>("bob", earn("bob", "r4", 1_000), CommandContext::default()).await.expect("earn lands");
    let outcome = patient
        .execute::<Wallet>("bob", earn("bob", "r5", 1_000), CommandContext::default())
        .await
        .expect("the retry lands");
    assert_eq!(outcome.sequence, 5);
    let wallet = first.load::<Wallet>("bob").await.expect("wallet loads");
    assert_eq!(wallet.state.balance(&cafe()), 400, "r1, r2, r4 and r5 earned; r3 did not");
}

async fn concurrent_commands_on_one_aggregate_all_land_in_order(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let stores = [open(&db, quiet()).await, open(&db, quiet()).await];
    world(&stores[0], &["ann", "bob"]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store.execute::<Wallet>("bob", earn("bob", &format!("c{i}"), 1_000), CommandContext::default()).await
        }));
    }
    let mut landed = 0;
    for task in tasks {
        match task.await.expect("task runs") {
            Ok(_) => landed += 1,
            // Two stores hammering one wallet may exhaust the retries: a clean refusal.
            Err(CommandError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(landed >= 20, "most commands land ({landed} of 40)");
    let stream = stores[1].read_stream("Wallet", "bob").await.expect("stream reads");
    assert_eq!(stream.iter().map(|e| e.sequence).collect::<Vec<_>>(), (1..=landed + 1).collect::<Vec<u64>>());
    let wallet = stores[1].load::<Wallet>("bob").await.expect("wallet loads");
    assert_eq!(wallet.state.balance(&cafe()), 100 * landed);
    assert!(stores[0].verify().await.expect("verifies").is_clean());
}

async fn a_command_id_seen_before_returns_the_first_outcome(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    let keyed = || CommandContext { command_id: Some("till-7/0001".into()), ..CommandContext::default() };

    let first = store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), keyed()).await.expect("earn lands");
    let head = store.head();
    let again = store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), keyed()).await.expect("replay answers");
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.first_position, again.last_position, again.sequence),
        (first.first_position, first.last_position, first.sequence)
    );

    // Another process that never saw the command gives the same answer.
    let other = open(&db, quiet()).await;
    let elsewhere = other.execute::<Wallet>("bob", earn("bob", "r1", 1_000), keyed()).await.expect("replay answers");
    assert!(elsewhere.replayed);
    assert_eq!(elsewhere.last_position, first.last_position);

    let reused = store.execute::<Wallet>("bob", earn("bob", "r1", 5_000), keyed()).await;
    assert!(
        matches!(&reused, Err(CommandError::IdempotencyKeyReused { command_id }) if command_id == "till-7/0001"),
        "got {reused:?}"
    );
    let elsewhere = store.execute::<Wallet>("ann", earn("ann", "r9", 1_000), keyed()).await;
    assert!(matches!(elsewhere, Err(CommandError::IdempotencyKeyReused { .. })), "same key, other aggregate");
    assert_eq!(store.read_from(head, 10).await.expect("log reads"), vec![], "nothing was written");
    assert_eq!(store.load::<Wallet>("bob").await.expect("loads").state.balance(&cafe()), 100);
}

async fn one_keyed_command_racing_in_two_processes_lands_once(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let stores = [open(&db, quiet()).await, open(&db, quiet()).await];
    world(&stores[0], &["ann", "bob"]).await;
    for round in 0..10 {
        let key = format!("till-7/{round}");
        let racers: Vec<_> = stores
            .iter()
            .map(|store| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let context = CommandContext { command_id: Some(key), ..CommandContext::default() };
                    store.execute::<Wallet>("bob", earn("bob", &format!("race-{round}"), 1_000), context).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.expect("racer runs").expect("both racers get the outcome"));
        }
        assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1, "exactly one racer wrote: {outcomes:?}");
        assert_eq!(outcomes[0].last_position, outcomes[1].last_position);
    }
    let earned = stores[1].read_stream("Wallet", "bob").await.expect("reads");
    assert_eq!(earned.iter().filter(|e| e.event_type == "PointsEarned").count(), 10);
}

async fn refused_commands_write_nothing(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await.expect("earn lands");
    let head = store.head();

    let refusals: Vec<(&str, WalletCommand, DomainError)> = vec![
        ("zed", earn("zed", "r2", 1_000), DomainError::UnknownMember(member("zed"))),
        (
            "ann",
            earn("ann", "r1", 1_000),
            DomainError::DuplicatePurchaseRef {
                store: cafe(),
                purchase_ref: domain::values::PurchaseRef::parse("r1").expect("valid"),
            },
        ),
        (
            "bob",
            WalletCommand::Redeem { store: cafe(), points: points(101), reward: Reason::parse("cake").expect("valid") },
            DomainError::InsufficientPoints { store: cafe(), balance: 100, needed: 101 },
        ),
    ];
    for (id, command, expected) in refusals {
        match store.execute::<Wallet>(id, command.clone(), CommandContext::default()).await {
            Err(CommandError::Rejected(error)) => assert_eq!(error, expected, "{command:?}"),
            other => panic!("{command:?} should be refused with {expected}, got {other:?}"),
        }
    }
    let taken = MemberCommand::Register {
        member: member("cat"),
        handle: domain::values::Handle::parse("bob").expect("valid"),
        display_name: domain::values::DisplayName::parse("Cat").expect("valid"),
    };
    let refused = store.execute::<Member>("cat", taken, CommandContext::default()).await;
    assert!(matches!(refused, Err(CommandError::Rejected(DomainError::HandleTaken(_)))), "got {refused:?}");

    assert_eq!(store.read_from(head, 10).await.expect("log reads"), vec![]);
    assert_eq!(open(&db, quiet()).await.load::<Wallet>("bob").await.expect("loads").state.balance(&cafe()), 100);
}

async fn snapshot_state_equals_full_replay_state(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let config = EventStoreConfig { snapshot_every: 5, ..quiet() };
    let store = open(&db, config.clone()).await;
    world(&store, &["ann", "bob"]).await;
    bob_earns(&store, 23, 1).await;
    let row = store
        .db()
        .query_one_raw(Statement::from_string(
            store.backend(),
            "SELECT sequence FROM snapshots WHERE aggregate_type = 'Wallet' AND aggregate_id = 'bob'",
        ))
        .await
        .expect("snapshot query runs")
        .expect("a snapshot was taken");
    assert_eq!(row.try_get::<i64>("", "sequence").expect("sequence"), 20, "24 events: last snapshot at 20");

    let cold = open(&db, config).await;
    let from_snapshot = cold.load::<Wallet>("bob").await.expect("loads from the snapshot");
    let replayed = cold.replay::<Wallet>("bob").await.expect("replays from the first event");
    assert_eq!(from_snapshot, replayed);
    assert_eq!(from_snapshot, store.current::<Wallet>("bob").await.expect("cached"));
    assert_eq!(from_snapshot.sequence, 24);

    // Proof the snapshot is what loads: break an event before it; the
    // snapshot load does not read it, the full replay does.
    sql(
        &store,
        "UPDATE events SET payload = '{}' WHERE aggregate_type = 'Wallet' AND aggregate_id = 'bob' AND sequence = 3",
    )
    .await;
    assert_eq!(cold.load::<Wallet>("bob").await.expect("snapshot load skips the broken event"), from_snapshot);
    assert!(matches!(cold.replay::<Wallet>("bob").await, Err(EventStoreError::MalformedEvent { .. })));
    let report = store.verify().await.expect("verifies");
    assert!(report.breaks.iter().any(|b| matches!(b, ChainBreak::HashMismatch { sequence: 3, .. })));
}

async fn tampering_is_named_by_verification(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    bob_earns(&store, 3, 0).await;
    let clean = store.verify().await.expect("verifies");
    assert!(clean.is_clean(), "{:?}", clean.breaks);
    assert_eq!(clean.events, store.head());

    let target = store.read_stream("Wallet", "bob").await.expect("reads").remove(2);
    sql(
        &store,
        &format!("UPDATE events SET payload = REPLACE(payload, '100', '900') WHERE position = {}", target.position),
    )
    .await;
    let report = store.verify().await.expect("verifies");
    assert_eq!(
        report.breaks,
        vec![ChainBreak::HashMismatch {
            position: target.position,
            aggregate_type: "Wallet".into(),
            aggregate_id: "bob".into(),
            sequence: 3,
            event_type: "PointsEarned".into(),
        }]
    );
    let message = report.breaks[0].to_string();
    assert!(
        message.contains("Wallet/bob #3") && message.contains(&format!("position {}", target.position)),
        "{message}"
    );

    // Deleting an event is a hole in the stream and in the log.
    sql(&store, &format!("DELETE FROM events WHERE position = {}", target.position)).await;
    let report = store.verify().await.expect("verifies");
    assert!(
        report.breaks.iter().any(|b| matches!(b, ChainBreak::SequenceGap { expected: 3, found: 4, .. })),
        "{:?}",
        report.breaks
    );
    assert!(report.breaks.iter().any(|b| matches!(b, ChainBreak::PositionGap { .. })), "{:?}", report.breaks);
}

async fn unknown_and_malformed_stored_events_are_named_errors(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob", "cat"]).await;
    store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await.expect("earn lands");
    store.execute::<Wallet>("cat", earn("cat", "r2", 1_000), CommandContext::default()).await.expect("earn lands");
    sql(&store, "UPDATE events SET event_type = 'PointsTeleported' WHERE aggregate_id = 'bob' AND sequence = 2 AND aggregate_type = 'Wallet'").await;
    sql(&store, "UPDATE events SET payload = '{\"store\": 5' WHERE aggregate_id = 'cat' AND sequence = 2 AND aggregate_type = 'Wallet'").await;

    let cold = open(&db, quiet()).await;
    match cold.load::<Wallet>("bob").await {
        Err(error @ EventStoreError::UnknownEventType { .. }) => {
            let message = error.to_string();
            assert!(message.contains("PointsTeleported") && message.contains("Wallet/bob #2"), "{message}");
        }
        other => panic!("expected an unknown event type, got {other:?}"),
    }
    match cold.load::<Wallet>("cat").await {
        Err(error @ EventStoreError::MalformedEvent { .. }) => {
            let message = error.to_string();
            assert!(message.contains("PointsEarned") && message.contains("Wallet/cat #2"), "{message}");
        }
        other => panic!("expected a malformed event, got {other:?}"),
    }
    // A command on the broken aggregate fails with the same error, writing nothing.
    let head = cold.head();
    let refused = cold.execute::<Wallet>("bob", earn("bob", "r3", 1_000), CommandContext::default()).await;
    assert!(matches!(refused, Err(CommandError::Store(EventStoreError::UnknownEventType { .. }))), "{refused:?}");
    assert_eq!(cold.read_from(head, 10).await.expect("log reads"), vec![]);
}

async fn points_earned_v1_fixture_loads_through_the_upcaster(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "old"]).await;
    support::import_v1_fixture(&store).await;

    let cold = open(&db, quiet()).await;
    let stream = cold.read_stream("Wallet", "old").await.expect("reads");
    assert_eq!(stream[1].event_version, 1);
    assert_eq!(
        stream[1].decode::<Wallet>().expect("v1 decodes"),
        WalletEvent::PointsEarned {
            store: cafe(),
            purchase_ref: domain::values::PurchaseRef::parse("legacy-1").expect("valid"),
            amount_paid: support::amount(2_500),
            points: Points::new(250).expect("valid"),
            policy_version: 1,
        }
    );
    assert_eq!(cold.load::<Wallet>("old").await.expect("loads").state.balance(&cafe()), 250);
    assert!(cold.verify().await.expect("verifies").is_clean());
    // The stream goes on in the current shape, its chain unbroken.
    let outcome =
        cold.execute::<Wallet>("old", earn("old", "new-1", 1_000), CommandContext::default()).await.expect("lands");
    assert_eq!(outcome.sequence, 3);
    assert_eq!(cold.read_stream("Wallet", "old").await.expect("reads")[2].event_version, 2);
    assert_eq!(cold.load::<Wallet>("old").await.expect("loads").state.balance(&cafe()), 350);
    assert!(cold.verify().await.expect("verifies").is_clean());
}

async fn waiters_wake_when_the_log_moves(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let writer = open(&db, quiet()).await;
    world(&writer, &["ann", "bob"]).await;
    let head = writer.head();
    // A reader in another "process" learns of new events through its follower.
    let reader =
        open(&db, EventStoreConfig { follow_interval: Duration::from_millis(20), ..EventStoreConfig::default() }).await;
    let local = tokio::spawn({
        let writer = writer.clone();
        async move { writer.wait_for(head, Duration::from_secs(30)).await }
    });
    let remote = tokio::spawn(async move { reader.wait_for(head, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await.expect("lands");
    let (local, remote) = (local.await.expect("runs"), remote.await.expect("runs"));
    assert_eq!(local, head + 2);
    assert_eq!(remote, head + 2);
    assert_eq!(writer.wait_for(head + 2, Duration::from_millis(10)).await, head + 2, "times out at the head");
}

/// The follower keeps the cache true to what other processes append; this
/// process's own commits, held in memory, it does not read back.
async fn the_follower_reads_only_what_other_processes_appended(backend: Backend) {
    use std::sync::atomic::Ordering;

    let Some(db) = scratch(backend).await else { return };
    let config = EventStoreConfig { follow_interval: Duration::from_millis(10), ..EventStoreConfig::default() };
    let (store, counters) = support::open_counting_each(
        &db,
        config,
        &[
            |sql| {
                sql.replace('"', "`")
                    .starts_with("SELECT `position`, `aggregate_type`, `aggregate_id`, `sequence` FROM `events`")
            },
            |sql| sql.replace('"', "`").starts_with("SELECT `position` FROM `log_head`"),
        ],
    )
    .await;
    let (reads, heads) = (counters[0].clone(), counters[1].clone());
    world(&store, &["ann", "bob"]).await;
    // Twenty earns, each followed by turns of the follower that saw it: a
    // head read that started after the earn had committed (the second one
    // completed after it), and the next one, which starts only once that
    // turn has done whatever reading it would. Reading its own commits
    // back, it would read about once per earn.
    for i in 0..20 {
        store
            .execute::<Wallet>("bob", earn("bob", &format!("r{i}"), 1_000), CommandContext::default())
            .await
            .expect("earn lands");
        let committed = heads.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while heads.load(Ordering::SeqCst) < committed + 3 {
            assert!(std::time::Instant::now() < deadline, "the follower does not take its turns");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let own = reads.load(Ordering::SeqCst);
    assert_eq!(own, 0, "its own commits are not read back: {own} reads over 20 earns");

    let other = open(&db, quiet()).await;
    let theirs =
        other.execute::<Wallet>("bob", earn("bob", "o1", 1_000), CommandContext::default()).await.expect("lands");
    assert_eq!(store.wait_for(theirs.last_position - 1, Duration::from_secs(10)).await, theirs.last_position);
    assert!(reads.load(Ordering::SeqCst) > 0, "another process's commit is read");
    let cached = store.current::<Wallet>("bob").await.expect("bob's wallet");
    assert_eq!(cached.sequence, theirs.sequence, "the cached wallet was dropped and read again");
}

async fn ids_differing_only_in_case_are_different_streams(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    let upper = MemberCommand::Register {
        member: member("Ann"),
        handle: domain::values::Handle::parse("ann_upper").expect("valid"),
        display_name: domain::values::DisplayName::parse("Ann again").expect("valid"),
    };
    store.execute::<Member>("Ann", upper, CommandContext::default()).await.expect("a second member registers");
    store.execute::<Wallet>("ann", earn("ann", "r1", 1_000), CommandContext::default()).await.expect("lands");
    store.execute::<Wallet>("Ann", earn("Ann", "R1", 2_000), CommandContext::default()).await.expect("lands");
    let lower = store.read_stream("Wallet", "ann").await.expect("reads");
    assert!(lower.iter().all(|e| e.aggregate_id == "ann"), "{lower:?}");
    assert_eq!(lower.len(), 2);
    let cold = open(&db, quiet()).await;
    assert_eq!(cold.load::<Wallet>("ann").await.expect("loads").state.balance(&cafe()), 100);
    assert_eq!(cold.load::<Wallet>("Ann").await.expect("loads").state.balance(&cafe()), 200);
    assert!(cold.verify().await.expect("verifies").is_clean());
}

async fn a_fresh_id_that_names_a_stream_is_decided_on_its_stored_state(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    let register = |handle: &str| MemberCommand::Register {
        member: member("ann"),
        handle: domain::values::Handle::parse(handle).expect("valid"),
        display_name: domain::values::DisplayName::parse("Ann").expect("valid"),
    };
    store.execute::<Member>("ann", register("ann"), CommandContext::default()).await.expect("registers");

    // Another process, whose caller wrongly believes `ann` to be a new id:
    // the append conflicts on the stream's first sequence, and the command
    // is decided on the stored state. That is no lost race: one attempt will do.
    let other = open(&db, EventStoreConfig { max_attempts: 1, ..quiet() }).await;
    let fresh = CommandContext { fresh_id: true, ..CommandContext::default() };
    let again = other.execute::<Member>("ann", register("ann2"), fresh).await;
    assert!(matches!(again, Err(CommandError::Rejected(_))), "refused as already registered: {again:?}");
    assert_eq!(other.read_stream("Member", "ann").await.expect("reads").len(), 1, "nothing written");

    // A truly new id is written without reading its stream.
    let (third, reads) = support::open_counting(&db, |sql| {
        sql.starts_with("SELECT")
            && ["events", "snapshots"]
                .iter()
                .any(|t| sql.contains(&format!("FROM `{t}`")) || sql.contains(&format!("FROM \"{t}\"")))
    })
    .await;
    let fresh = CommandContext { fresh_id: true, ..CommandContext::default() };
    let bob = MemberCommand::Register {
        member: member("bob"),
        handle: domain::values::Handle::parse("bob").expect("valid"),
        display_name: domain::values::DisplayName::parse("Bob").expect("valid"),
    };
    let before = reads.load(std::sync::atomic::Ordering::SeqCst);
    let outcome = third.execute::<Member>("bob", bob, fresh).await.expect("registers");
    assert_eq!(outcome.sequence, 1);
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst) - before, 0, "no read of bob's stream");
}

async fn a_refusal_is_decided_on_the_stored_state_not_a_stale_cache(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    // One attempt only: deciding again on the stored state is not a retry.
    let one = open(&db, EventStoreConfig { max_attempts: 1, ..quiet() }).await;
    world(&one, &["ann", "bob"]).await;
    let redeem =
        || WalletCommand::Redeem { store: cafe(), points: points(50), reward: Reason::parse("cake").expect("valid") };
    // Process one caches bob's wallet as it is: empty.
    let refused = one.execute::<Wallet>("bob", redeem(), CommandContext::default()).await;
    assert!(matches!(refused, Err(CommandError::Rejected(DomainError::NotFound(_)))), "{refused:?}");

    // Another process credits it; process one has not followed the log.
    let two = open(&db, quiet()).await;
    two.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await.expect("earns");

    // Refused on the cached state, the command is decided again on the stored one.
    let redeemed = one.execute::<Wallet>("bob", redeem(), CommandContext::default()).await;
    assert!(redeemed.is_ok(), "redeemed on the stored state: {redeemed:?}");
    assert_eq!(one.load::<Wallet>("bob").await.expect("loads").state.balance(&cafe()), 50);
}

/// A refusal reads the aggregate's stream once: to load it when it was not
/// cached (and then nothing more), or, when it was, to find that no other
/// process moved it.
async fn a_refusal_reads_the_stream_once(backend: Backend) {
    use std::sync::atomic::Ordering;

    let Some(db) = scratch(backend).await else { return };
    let (store, reads) = support::open_counting(&db, |sql| {
        sql.starts_with("SELECT") && (sql.contains("FROM `events`") || sql.contains("FROM \"events\""))
    })
    .await;
    world(&store, &["ann", "bob"]).await;
    let redeem =
        || WalletCommand::Redeem { store: cafe(), points: points(50), reward: Reason::parse("cake").expect("valid") };
    for case in ["loaded for the command", "from the cache"] {
        let before = reads.load(Ordering::SeqCst);
        let refused = store.execute::<Wallet>("bob", redeem(), CommandContext::default()).await;
        assert!(matches!(refused, Err(CommandError::Rejected(_))), "{case}: {refused:?}");
        assert_eq!(reads.load(Ordering::SeqCst) - before, 1, "{case}: one read of the stream");
    }
}

/// Records, inside each append transaction, the isolation level InnoDB runs it at.
struct IsolationProbe(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl eventstore::InlineProjection for IsolationProbe {
    fn name(&self) -> &'static str {
        "isolation_probe"
    }

    async fn project(&self, batch: &eventstore::InlineBatch<'_>) -> Result<eventstore::Projected, sea_orm::DbErr> {
        // InnoDB refreshes this table at most every 0.1 s.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let sql = "SELECT trx_isolation_level AS level FROM information_schema.INNODB_TRX \
                   WHERE trx_mysql_thread_id = CONNECTION_ID()";
        let row = batch.txn.query_one_raw(Statement::from_string(sea_orm::DbBackend::MySql, sql)).await?;
        let level = row.map(|row| row.try_get::<String>("", "level")).transpose()?.unwrap_or_default();
        self.0.lock().expect("not poisoned").push(level);
        Ok(eventstore::Projected::Irrelevant)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Inline projections lock their checkpoints one after another in the append
/// transaction and read their rows after; under REPEATABLE READ an earlier
/// read would fix a snapshot older than a later lock. Appends run READ
/// COMMITTED, on the group commit's own connections and on a given pool alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mysql_appends_with_inline_projections_read_committed_data() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let own = open(&db, quiet()).await;
    let given =
        eventstore::EventStore::with_connection(eventstore::connect(&db.url, 4).await.expect("connects"), quiet())
            .await
            .expect("opens");
    world(&own, &["ann", "bob"]).await;
    for (n, store) in [&own, &given].into_iter().enumerate() {
        let probe = std::sync::Arc::new(IsolationProbe(std::sync::Mutex::new(Vec::new())));
        store.project_inline(probe.clone());
        store
            .execute::<Wallet>("bob", earn("bob", &format!("r{n}"), 1_000), CommandContext::default())
            .await
            .expect("earns");
        assert_eq!(*probe.0.lock().expect("not poisoned"), vec!["READ COMMITTED".to_string()], "store {n}");
    }
}

/// Kills every connection the server has open to `db`, as a restart would.
async fn kill_connections(db: &eventstore::scratch::ScratchDatabase) {
    let name = db.url.rsplit('/').next().expect("a database name").to_string();
    let admin = eventstore::connect(&eventstore::scratch::mysql_server_url(), 1).await.expect("connects");
    let list = format!("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = '{name}'");
    let ids = admin.query_all_raw(Statement::from_string(sea_orm::DbBackend::MySql, list)).await.expect("lists");
    assert!(ids.len() >= 2, "the store's connections are open: {}", ids.len());
    for row in ids {
        let id: i64 = row.try_get("", "id").expect("an id");
        admin.execute_unprepared(&format!("KILL {id}")).await.expect("kills");
    }
}

/// The group commit's connections are not pinged before each append. When
/// the server drops them while idle (killed here, as a restart would), the
/// next append still lands: its BEGIN fails before anything is sent and is
/// tried on another connection, then on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mysql_an_append_after_the_writers_connections_were_killed_lands() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    kill_connections(&db).await;
    let outcome = store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await;
    assert!(outcome.is_ok(), "the append lands on a new connection: {outcome:?}");
    assert_eq!(store.load::<Wallet>("bob").await.expect("loads").state.balance(&cafe()), 100);
}

/// sqlx pings a pooled connection before handing it out (a round trip
/// before each read, kept for this): connections the server dropped (killed
/// here, as a restart would) are replaced, and no read fails on one, not
/// even right after the last use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mysql_reads_after_the_pools_connections_were_killed_succeed() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    // Several connections in the pool, all of them idle.
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let pool = store.db().clone();
            tokio::spawn(async move { pool.execute_unprepared("DO SLEEP(0.05)").await })
        })
        .collect();
    for read in reads {
        read.await.expect("joins").expect("reads");
    }
    kill_connections(&db).await;
    for n in 0..8 {
        let read = store.db().execute_unprepared("DO 1").await;
        assert!(read.is_ok(), "read {n} after the kill: {read:?}");
    }
    // Bob's stream is not cached yet: the command reads it, then appends.
    let outcome = store.execute::<Wallet>("bob", earn("bob", "r-after", 1_000), CommandContext::default()).await;
    assert!(outcome.is_ok(), "the stream is read and the append lands: {outcome:?}");
}
