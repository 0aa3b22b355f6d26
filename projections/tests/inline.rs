//! Inline projections: read models written in the append transaction, on
//! SQLite and MariaDB. No projector runs in these tests unless one says so:
//! what a command's answer can read must already be there.

// The shared support module names this crate as the rest of the workspace does.
extern crate pointstream_projections as projections;

#[path = "../../eventstore/tests/support/mod.rs"]
#[macro_use]
mod support;

use std::sync::Arc;

use domain::values::{ShareId, ShareMessage};
use domain::{Post, SharePart, Wallet, WalletCommand};
use eventstore::{CommandContext, CommandError, EventStore};
use projections::entities::{balances, ledger, posts, shares};
use projections::inline::Inline;
use projections::rebuild::rebuild;
use projections::{Names, PROJECTIONS, Wallets, audit, catch_up, checkpoint};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait, Statement};
use support::{Backend, cafe, earn, member, open, points, quiet, scratch, world};

on_both_backends!(
    an_acknowledged_command_is_in_its_read_models,
    an_append_catches_up_what_another_process_left,
    a_long_backlog_is_left_to_the_projector,
    an_event_the_projection_cannot_read_does_not_stop_appends,
    a_failing_inline_write_fails_the_append_and_writes_nothing,
    two_processes_writing_inline_build_on_each_others_rows,
    tables_swapped_in_behind_the_appends_are_caught_up,
    tables_swapped_in_at_the_same_position_are_read_not_the_kept_rows,
    the_checkpoint_of_a_projection_the_appends_do_not_concern_is_stored,
    a_batch_after_batches_of_no_concern_moves_the_checkpoint_without_reading_it,
    a_checkpoint_moved_by_a_move_whose_answer_was_lost_is_taken_up,
);

/// A store on `db` that writes every projection inline.
async fn inline_store(db: &eventstore::scratch::ScratchDatabase) -> EventStore {
    let store = open(db, quiet()).await;
    projections::write_inline(&store, &PROJECTIONS).expect("known projections");
    store
}

/// A scratch database whose store writes every projection inline, with ann
/// and bob registered and bob's first earn (100 points) applied.
async fn bob_earned_once(backend: Backend) -> Option<(eventstore::scratch::ScratchDatabase, EventStore)> {
    let db = scratch(backend).await?;
    let store = inline_store(&db).await;
    world(&store, &["ann", "bob"]).await;
    earn_on(&store, "bob", "r1", 1_000).await;
    Some((db, store))
}

async fn balance(store: &EventStore, who: &str) -> Option<i64> {
    let row = balances::Entity::find_by_id((who.to_string(), "cafe".to_string())).one(store.db()).await;
    row.expect("reads").map(|row| row.balance)
}

async fn wallets_checkpoint(store: &EventStore) -> u64 {
    checkpoint::read(store.db(), "wallets", &Names::LIVE).await.expect("reads the checkpoint")
}

async fn earn_on(store: &EventStore, who: &str, purchase_ref: &str, paid: u64) -> eventstore::CommandOutcome {
    store.execute::<Wallet>(who, earn(who, purchase_ref, paid), CommandContext::default()).await.expect("earns")
}

/// Bob posts `id` about the cafe, cross-posted to Facebook.
async fn bob_posts(store: &EventStore, id: &str) {
    store.execute::<Post>(id, support::cafe_post("bob", id), CommandContext::default()).await.expect("posts");
}

/// Every projector of a store, running, polling every 50 ms.
struct Projectors {
    stop: tokio::sync::watch::Sender<bool>,
    running: projections::Running,
}

impl Projectors {
    fn start(store: &EventStore) -> Self {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let config = projections::ProjectorConfig {
            idle_wait: std::time::Duration::from_millis(50),
            ..projections::ProjectorConfig::default()
        };
        Projectors { stop, running: projections::spawn_all(store, &config, &shutdown) }
    }

    /// Waits (10 s at most, else fails with `failure`) until projection
    /// `name`'s stored checkpoint reaches `position`.
    async fn until(&self, store: &EventStore, name: &str, position: u64, failure: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while checkpoint::read(store.db(), name, &Names::LIVE).await.expect("reads the checkpoint") < position {
            assert!(std::time::Instant::now() < deadline, "{failure}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.running.tasks {
            task.await.expect("a projector stops").expect("a projector ran cleanly");
        }
    }
}

async fn assert_clean(store: &EventStore) {
    let report = audit(store).await.expect("audits");
    assert!(report.is_clean(), "the read models match the log: {report:?}");
}

async fn an_acknowledged_command_is_in_its_read_models(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = inline_store(&db).await;
    world(&store, &["ann", "bob", "cat"]).await;

    let earned = earn_on(&store, "bob", "r1", 1_000).await;
    assert_eq!(balance(&store, "bob").await, Some(100), "the balance is written with the event");
    assert_eq!(wallets_checkpoint(&store).await, earned.last_position, "and the checkpoint with it");
    let applied = store.inline_applied("wallets").expect("wallets is inline");
    assert_eq!(*applied.borrow(), earned.last_position, "the store knows it is applied");
    assert_eq!(ledger::Entity::find().count(store.db()).await.expect("counts"), 1);

    let share = WalletCommand::Share {
        share: ShareId::parse("s1").expect("valid"),
        store: cafe(),
        recipients: vec![SharePart { member: member("cat"), points: points(30) }],
        message: ShareMessage::parse("enjoy").expect("valid"),
    };
    store.execute::<Wallet>("bob", share, CommandContext::default()).await.expect("shares");
    assert_eq!(balance(&store, "bob").await, Some(70));
    assert!(shares::Entity::find_by_id("s1".to_string()).one(store.db()).await.expect("reads").is_some());

    bob_posts(&store, "p1").await;
    assert!(posts::Entity::find_by_id("p1".to_string()).one(store.db()).await.expect("reads").is_some());
    assert_clean(&store).await;

    // The projectors, catching up afterwards, find nothing to apply twice.
    catch_up(&store, 100).await.expect("catches up");
    assert_eq!(balance(&store, "cat").await, Some(30), "the share distribution credited the recipient");
    assert_eq!(balance(&store, "bob").await, Some(70));
    assert_eq!(wallets_checkpoint(&store).await, store.read_head().await.expect("head"));
    assert_clean(&store).await;
}

async fn an_append_catches_up_what_another_process_left(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    // Another process, appending without the inline projections.
    let plain = open(&db, quiet()).await;
    world(&plain, &["ann", "bob"]).await;
    for (n, who) in ["bob", "ann", "bob"].iter().enumerate() {
        earn_on(&plain, who, &format!("plain-{n}"), 500).await;
    }
    assert_eq!(balance(&plain, "bob").await, None, "nothing applied yet");

    let store = inline_store(&db).await;
    let earned = earn_on(&store, "ann", "inline-1", 1_000).await;
    assert_eq!(balance(&store, "bob").await, Some(100), "the backlog was applied in the append");
    assert_eq!(balance(&store, "ann").await, Some(150));
    assert_eq!(wallets_checkpoint(&store).await, earned.last_position);
    assert_clean(&store).await;

    // A rebuild swaps in tables as of its end; the next append goes on from there.
    earn_on(&plain, "bob", "plain-3", 500).await;
    rebuild::<Wallets>(&store, 2, |_, _| {}).await.expect("rebuilds");
    earn_on(&plain, "bob", "plain-4", 500).await;
    let earned = earn_on(&store, "ann", "inline-2", 1_000).await;
    assert_eq!(balance(&store, "bob").await, Some(200));
    assert_eq!(balance(&store, "ann").await, Some(250));
    assert_eq!(wallets_checkpoint(&store).await, earned.last_position);
    assert_clean(&store).await;
}

async fn a_long_backlog_is_left_to_the_projector(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let plain = open(&db, quiet()).await;
    world(&plain, &["ann", "bob"]).await;
    for n in 0..5 {
        earn_on(&plain, "bob", &format!("plain-{n}"), 100).await;
    }
    let store = open(&db, quiet()).await;
    store.project_inline(Arc::new(Inline::<Wallets>::with_catch_up(3)));
    let before = wallets_checkpoint(&store).await;

    let earned = earn_on(&store, "ann", "inline-1", 1_000).await;
    assert_eq!(wallets_checkpoint(&store).await, before, "too long a backlog: left to the projector");
    assert_eq!(balance(&store, "ann").await, None);
    assert!(*store.inline_applied("wallets").expect("inline").borrow() < earned.last_position);
    assert_eq!(store.read_head().await.expect("head"), earned.last_position, "the append committed all the same");

    catch_up(&store, 100).await.expect("the projector catches up");
    assert_eq!(balance(&store, "ann").await, Some(100));
    let earned = earn_on(&store, "ann", "inline-2", 1_000).await;
    assert_eq!(balance(&store, "ann").await, Some(200), "inline again once caught up");
    assert_eq!(wallets_checkpoint(&store).await, earned.last_position);
    assert_clean(&store).await;
}

async fn an_event_the_projection_cannot_read_does_not_stop_appends(backend: Backend) {
    let Some((_db, store)) = bob_earned_once(backend).await else { return };
    let before = wallets_checkpoint(&store).await;
    // An event another process wrote that this build cannot decode.
    let position = before + 1;
    for statement in [
        "UPDATE log_head SET position = position + 1 WHERE id = 1".to_string(),
        format!(
            "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, recorded_at_us, hash) VALUES ({position}, 'Wallet', 'zed', 1, 'PointsEarned', 1, \
             '{{\"not\": \"a wallet event\"}}', '{{}}', 0, 'x')"
        ),
    ] {
        store.db().execute_raw(Statement::from_string(store.backend(), statement)).await.expect("raw SQL runs");
    }

    let earned = earn_on(&store, "bob", "r2", 1_000).await;
    assert_eq!(earned.first_position, position + 1, "the append committed after the unreadable event");
    assert_eq!(wallets_checkpoint(&store).await, before, "the projection stays before the unreadable event");
    assert_eq!(balance(&store, "bob").await, Some(100));
    assert!(catch_up(&store, 100).await.is_err(), "its projector reports the event, as without inline projections");
}

async fn a_failing_inline_write_fails_the_append_and_writes_nothing(backend: Backend) {
    let Some((_db, store)) = bob_earned_once(backend).await else { return };
    let head = store.read_head().await.expect("head");
    let rename = |from: &str, to: &str| match store.backend() {
        sea_orm::DbBackend::MySql => format!("RENAME TABLE `{from}` TO `{to}`"),
        _ => format!("ALTER TABLE \"{from}\" RENAME TO \"{to}\""),
    };
    let sql = |statement: String| store.db().execute_raw(Statement::from_string(store.backend(), statement));
    sql(rename("ledger", "ledger_away")).await.expect("renames");

    let failed = store.execute::<Wallet>("bob", earn("bob", "r2", 1_000), CommandContext::default()).await;
    assert!(matches!(failed, Err(CommandError::Store(_))), "a database error: {failed:?}");
    assert_eq!(store.read_head().await.expect("head"), head, "no event was written");
    sql(rename("ledger_away", "ledger")).await.expect("renames back");
    assert_eq!(balance(&store, "bob").await, Some(100), "nor a balance");

    // The same command goes through once the table is back, exactly once.
    earn_on(&store, "bob", "r2", 1_000).await;
    assert_eq!(balance(&store, "bob").await, Some(200));
    assert_clean(&store).await;
}

async fn two_processes_writing_inline_build_on_each_others_rows(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let one = inline_store(&db).await;
    let two = inline_store(&db).await;
    world(&one, &["ann", "bob"]).await;
    // Each process keeps the balance rows it wrote; the other's writes in
    // between must be read, not overwritten with what it kept.
    for round in 0..3 {
        earn_on(&one, "ann", &format!("one-{round}"), 1_000).await;
        earn_on(&two, "ann", &format!("two-{round}"), 500).await;
        earn_on(&one, "bob", &format!("bob-{round}"), 100).await;
    }
    assert_eq!(balance(&one, "ann").await, Some(450));
    assert_eq!(balance(&one, "bob").await, Some(30));
    let earned = earn_on(&one, "ann", "one-last", 1_000).await;
    assert_eq!(balance(&one, "ann").await, Some(550));
    assert_eq!(wallets_checkpoint(&one).await, earned.last_position);
    assert_clean(&one).await;
}

async fn tables_swapped_in_behind_the_appends_are_caught_up(backend: Backend) {
    let Some((_db, store)) = bob_earned_once(backend).await else { return };
    // The wallets tables as a rebuild would swap them in at this position...
    let at = wallets_checkpoint(&store).await;
    let balances_then = balances::Entity::find().all(store.db()).await.expect("reads");
    // ...while appends go on past it.
    earn_on(&store, "bob", "r2", 1_000).await;
    let last = earn_on(&store, "ann", "r3", 1_000).await;
    assert_eq!(*store.inline_applied("wallets").expect("inline").borrow(), last.last_position);

    // The swap: the tables and their checkpoint as they were at `at`.
    let sql = |statement: String| store.db().execute_raw(Statement::from_string(store.backend(), statement));
    sql("DELETE FROM balances".to_string()).await.expect("clears");
    balances::Entity::insert_many(balances_then.into_iter().map(balances::ActiveModel::from))
        .exec(store.db())
        .await
        .expect("restores");
    sql(format!("DELETE FROM ledger WHERE position > {at}")).await.expect("trims");
    sql(format!("UPDATE wallets_checkpoint SET position = {at}")).await.expect("rewinds");

    // The projector notices the checkpoint went back and catches up, with no
    // append to prompt it.
    let projecting = Projectors::start(&store);
    projecting.until(&store, "wallets", last.last_position, "the projector did not catch up after the swap").await;
    projecting.stop().await;
    assert_eq!(balance(&store, "bob").await, Some(200));
    assert_eq!(balance(&store, "ann").await, Some(100));
    assert_clean(&store).await;
}

async fn tables_swapped_in_at_the_same_position_are_read_not_the_kept_rows(backend: Backend) {
    let Some((_db, store)) = bob_earned_once(backend).await else { return };
    // Tables swapped in at the very position this process stored, written at
    // another time, with a row that differs from what the process keeps (as
    // a rebuild repairing a damaged row would leave it).
    let sql = |statement: String| store.db().execute_raw(Statement::from_string(store.backend(), statement));
    sql("UPDATE balances SET balance = 500, earned = 500 WHERE member_id = 'bob'".to_string()).await.expect("edits");
    sql("UPDATE wallets_checkpoint SET updated_at_us = 1".to_string()).await.expect("restamps");

    earn_on(&store, "bob", "r2", 1_000).await;
    assert_eq!(balance(&store, "bob").await, Some(600), "built on the swapped-in row, not the kept one");
}

async fn the_checkpoint_of_a_projection_the_appends_do_not_concern_is_stored(backend: Backend) {
    let Some((_db, store)) = bob_earned_once(backend).await else { return };
    let projecting = Projectors::start(&store);
    // Earns only: nothing for the members projection, whose appends write nothing.
    let mut last = 0;
    for n in 2..6 {
        last = earn_on(&store, "bob", &format!("r{n}"), 1_000).await.last_position;
    }
    projecting.until(&store, "members", last, "the members checkpoint stayed behind the appends").await;
    projecting.stop().await;
    assert_clean(&store).await;
}

/// The database went away as the projector moved the members checkpoint
/// over appends of no concern to it: the move committed, its answer was
/// lost, and the process still holds the checkpoint where it was. The next
/// move, conditional on that old value, moves nothing; the projector takes
/// the checkpoint from the database and goes on from there.
async fn a_checkpoint_moved_by_a_move_whose_answer_was_lost_is_taken_up(backend: Backend) {
    let Some((_db, store)) = bob_earned_once(backend).await else { return };
    let known = store.inline_stored("members").expect("members is written inline");
    let mut last = 0;
    for n in 2..6 {
        last = earn_on(&store, "bob", &format!("r{n}"), 1_000).await.last_position;
    }
    assert!(known < last - 1, "earns of no concern to members leave its stored checkpoint behind");
    // The move that committed unseen.
    let lost = format!("UPDATE members_checkpoint SET position = {} WHERE position = {known}", last - 1);
    store.db().execute_raw(Statement::from_string(store.backend(), lost)).await.expect("moves");

    let projecting = Projectors::start(&store);
    projecting.until(&store, "members", last, "the members checkpoint stayed where the lost move left it").await;
    projecting.stop().await;
    assert_eq!(store.inline_stored("members"), Some(last));
    assert_clean(&store).await;
}

/// Batches of no concern to the wallets projection (a post) leave its stored
/// checkpoint behind; the next earn moves it over that settled stretch in
/// its one conditional statement, reading neither the checkpoint nor the
/// events in between.
async fn a_batch_after_batches_of_no_concern_moves_the_checkpoint_without_reading_it(backend: Backend) {
    use std::sync::atomic::Ordering;

    let Some(db) = scratch(backend).await else { return };
    let (store, reads) =
        support::open_counting(&db, |sql| sql.starts_with("SELECT") && sql.contains("wallets_checkpoint")).await;
    projections::write_inline(&store, &PROJECTIONS).expect("known projections");
    world(&store, &["ann", "bob"]).await;
    earn_on(&store, "bob", "r1", 1_000).await;
    bob_posts(&store, "p1").await;
    let before = reads.load(Ordering::SeqCst);
    let earned = earn_on(&store, "bob", "r2", 1_000).await;
    assert_eq!(reads.load(Ordering::SeqCst) - before, 0, "the checkpoint was not read");
    assert_eq!(wallets_checkpoint(&store).await, earned.last_position);
    assert_eq!(balance(&store, "bob").await, Some(200));
    assert_clean(&store).await;
}

#[tokio::test]
async fn inline_projections_are_named_none_counts_as_no_name_and_others_are_refused() {
    let db = eventstore::scratch::ScratchDatabase::sqlite();
    let store = open(&db, quiet()).await;
    projections::write_inline(&store, &["none"]).expect("none is accepted");
    assert!(store.inline_applied("wallets").is_none(), "none writes nothing inline");
    let names: Vec<&str> = projections::ALL_INLINE.split(',').collect();
    projections::write_inline(&store, &names).expect("every projection is known");
    assert!(PROJECTIONS.iter().all(|name| store.inline_applied(name).is_some()));
    let refused = projections::write_inline(&store, &["balances"]);
    assert!(matches!(refused, Err(projections::ProjectionError::UnknownProjection(name)) if name == "balances"));
}

/// The balance rows an append keeps answer reads while the next batch is in
/// flight: that batch works on copies. Here it waits on a row lock another
/// connection holds, inside its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mysql_kept_balances_answer_while_a_batch_is_in_flight() {
    use projections::inline::kept_balance;
    use sea_orm::TransactionTrait;

    let Some((db, store)) = bob_earned_once(Backend::Mysql).await else { return };
    let ann = earn_on(&store, "ann", "a1", 2_000).await;
    let bob = balances::Entity::find_by_id(("bob".to_string(), "cafe".to_string()))
        .one(store.db())
        .await
        .expect("reads")
        .expect("bob has a balance");
    let kept = |who: &str, position: u64| kept_balance(&store, who, "cafe", position).map(|row| row.balance);
    assert_eq!(kept("ann", ann.last_position), Some(200));

    let other = sea_orm::Database::connect(db.url.as_str()).await.expect("connects");
    let holder = other.begin().await.expect("begins");
    let lock = "SELECT balance FROM balances WHERE member_id = 'ann' FOR UPDATE";
    holder.execute_raw(Statement::from_string(store.backend(), lock)).await.expect("locks ann's row");
    let appending = {
        let store = store.clone();
        tokio::spawn(async move { earn_on(&store, "ann", "a2", 1_000).await })
    };
    // The append's upsert of ann's row, waiting on the lock.
    let waits = "SELECT COUNT(*) AS waits FROM information_schema.PROCESSLIST \
                 WHERE db = DATABASE() AND info LIKE 'INSERT INTO `balances`%'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let row = other.query_one_raw(Statement::from_string(store.backend(), waits)).await.expect("reads");
        if row.expect("a count").try_get::<i64>("", "waits").expect("a number") > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the append never waited on ann's row");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    assert_eq!(kept("ann", ann.last_position), Some(200), "ann's row as committed, not the batch's");
    assert_eq!(kept("bob", bob.last_position as u64), Some(100), "rows the batch does not touch");
    holder.rollback().await.expect("releases the lock");
    let earned = appending.await.expect("the append ran");
    assert_eq!(kept("ann", earned.last_position), Some(300), "the batch's row once it committed");
    assert_eq!(kept("bob", bob.last_position as u64), Some(100), "laid over the rows kept before");
    assert_clean(&store).await;
}
