//! Read models, the share distribution, rebuilds and the audit, on SQLite and MariaDB.

// The shared support module names this crate as the rest of the workspace does.
extern crate pointstream_projections as projections;

#[path = "../../eventstore/tests/support/mod.rs"]
#[macro_use]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use domain::values::{ExternalRef, PhotoKey, Provider};
use domain::values::{PostBody, PostId, Reason, ShareId, ShareMessage};
use domain::{Member, MemberCommand, Post, PostCommand, SharePart, SocialOutcome, Wallet, WalletCommand};
use eventstore::chain::ChainBreak;
use eventstore::{CommandContext, EventStore};
use projections::entities::{
    balances, ledger, members, post_photo_social, post_photos, post_social, posts, share_recipients, shares, stores,
};
use projections::rebuild::rebuild;
use projections::{ProjectionError, Wallets, audit, catch_up, queries};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait, Statement};
use support::{Backend, cafe, earn, member, open, points, quiet, scratch, world};

on_both_backends!(
    read_models_follow_the_log,
    an_upcasted_event_projects_like_a_current_one,
    the_audit_names_tampering,
    a_rebuild_never_shows_a_partial_read_model,
    a_batch_that_creates_posts_reads_none_of_their_rows,
);

async fn run(store: &EventStore, id: &str, command: WalletCommand) {
    store.execute::<Wallet>(id, command, CommandContext::default()).await.expect("the command lands");
}

fn share(id: &str, parts: &[(&str, u64)]) -> WalletCommand {
    WalletCommand::Share {
        share: ShareId::parse(id).expect("valid"),
        store: cafe(),
        recipients: parts.iter().map(|(m, p)| SharePart { member: member(m), points: points(*p) }).collect(),
        message: ShareMessage::parse("enjoy").expect("valid"),
    }
}

async fn sql(store: &EventStore, statement: &str) {
    store.db().execute_raw(Statement::from_string(store.backend(), statement)).await.expect("raw SQL runs");
}

/// How many secondary indexes `table` has.
async fn secondary_indexes(store: &EventStore, table: &str) -> usize {
    let sql = match store.backend() {
        sea_orm::DbBackend::MySql => format!(
            "SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND INDEX_NAME <> 'PRIMARY'"
        ),
        _ => {
            format!("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND sql IS NOT NULL")
        }
    };
    store.db().query_all_raw(Statement::from_string(store.backend(), sql)).await.expect("indexes read").len()
}

async fn a_batch_that_creates_posts_reads_none_of_their_rows(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    // Reads of the posts projection's own rows (not its checkpoint).
    let (store, reads) = support::open_counting(&db, |sql| {
        let reads_rows = ["posts", "post_social", "post_photo_social"]
            .iter()
            .any(|table| sql.contains(&format!("FROM `{table}`")) || sql.contains(&format!("FROM \"{table}\"")));
        sql.starts_with("SELECT") && reads_rows
    })
    .await;
    world(&store, &["ann", "bob"]).await;
    let create = |id: &str| support::cafe_post("bob", id);
    for id in ["p1", "p2", "p3"] {
        store.execute::<Post>(id, create(id), CommandContext::default()).await.expect("posts");
    }
    let published = PostCommand::RecordSocialResult {
        provider: Provider::Facebook,
        outcome: SocialOutcome::Published {
            external_id: ExternalRef::parse("fb-1").expect("valid"),
            url: ExternalRef::parse("https://facebook.example/fb-1").expect("valid"),
        },
    };
    store.execute::<Post>("p1", published.clone(), CommandContext::default()).await.expect("records");
    catch_up(&store, 100).await.expect("projections catch up");
    assert_eq!(reads.load(Ordering::SeqCst), 0, "posts created in the batch: nothing to read");
    let row = post_social::Entity::find_by_id(("p1".to_string(), "facebook".to_string())).one(store.db()).await;
    assert_eq!(row.expect("reads").expect("a row").status, "published", "applied in memory, then written");

    // A later batch reads the rows of the posts it did not create.
    store.execute::<Post>("p2", published, CommandContext::default()).await.expect("records");
    catch_up(&store, 100).await.expect("projections catch up");
    assert!(reads.load(Ordering::SeqCst) > 0, "an existing post's rows are read");
    let row = post_social::Entity::find_by_id(("p2".to_string(), "facebook".to_string())).one(store.db()).await;
    assert_eq!(row.expect("reads").expect("a row").status, "published");
    assert_eq!(posts::Entity::find().count(store.db()).await.expect("counts"), 3);
}

async fn read_models_follow_the_log(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob", "cat", "dan"]).await;
    run(&store, "bob", earn("bob", "r1", 1_000)).await;
    let before_share = eventstore::now_us();
    store.execute::<Member>("dan", MemberCommand::Deactivate, CommandContext::default()).await.expect("deactivates");
    run(&store, "bob", share("s1", &[("cat", 30), ("dan", 20)])).await;
    let post = PostCommand::Create {
        post: PostId::parse("p1").expect("valid"),
        author: member("bob"),
        store: cafe(),
        body: PostBody::parse("Great coffee").expect("valid"),
        photos: vec![domain::Photo {
            key: PhotoKey::parse("photos/p1-0").expect("valid"),
            content_type: "image/png".into(),
            size: 68,
            sha256: "ab".repeat(32),
        }],
        providers: vec![Provider::Facebook, Provider::Twitter],
    };
    store.execute::<Post>("p1", post, CommandContext::default()).await.expect("posts");
    let published = PostCommand::RecordSocialResult {
        provider: Provider::Facebook,
        outcome: SocialOutcome::Published {
            external_id: ExternalRef::parse("fb-1").expect("valid"),
            url: ExternalRef::parse("https://facebook.example/fb-1").expect("valid"),
        },
    };
    store.execute::<Post>("p1", published, CommandContext::default()).await.expect("records");
    let added = PostCommand::AddPhoto {
        photo: domain::Photo {
            key: PhotoKey::parse("photos/p1-1.jpg").expect("valid"),
            content_type: "image/jpeg".into(),
            size: 2_048,
            sha256: "cd".repeat(32),
        },
    };
    store.execute::<Post>("p1", added, CommandContext::default()).await.expect("adds a photo");
    let photo_failed = PostCommand::RecordPhotoResult {
        photo: PhotoKey::parse("photos/p1-1.jpg").expect("valid"),
        provider: Provider::Twitter,
        outcome: SocialOutcome::Failed { reason: Reason::parse("HTTP 503").expect("valid"), attempt: 1 },
    };
    store.execute::<Post>("p1", photo_failed, CommandContext::default()).await.expect("records");

    catch_up(&store, 100).await.expect("projections catch up");
    let db = store.db();

    let balance = |m: &'static str| queries::balance(db, m, "cafe");
    assert_eq!(balance("bob").await.expect("reads"), 70, "100 earned, 50 shared, 20 refunded from dan");
    assert_eq!(balance("cat").await.expect("reads"), 30);
    assert_eq!(balance("dan").await.expect("reads"), 0);
    assert_eq!(queries::balance_at(db, "bob", "cafe", before_share).await.expect("reads"), 100);
    let bob = balances::Entity::find_by_id(("bob".to_string(), "cafe".to_string())).one(db).await.expect("reads");
    let bob = bob.expect("bob has a balance row");
    assert_eq!((bob.earned, bob.shared_out, bob.refunded), (100, 50, 20));

    let history = queries::ledger_page(db, "bob", Some("cafe"), None, 10).await.expect("reads");
    let kinds: Vec<(&str, i64, i64)> = history.iter().map(|l| (l.kind.as_str(), l.delta, l.balance_after)).collect();
    assert_eq!(kinds, vec![("refund", 20, 70), ("share", -50, 50), ("earn", 100, 100)]);
    let older = queries::ledger_page(db, "bob", None, Some(history[0].position), 1).await.expect("reads");
    assert_eq!(older[0].kind, "share", "pages continue before the cursor");
    let earned: ledger::Model = history[2].clone();
    assert_eq!((earned.purchase_ref.as_deref(), earned.amount_paid), (Some("r1"), Some(1_000)));

    let row = shares::Entity::find_by_id("s1".to_string()).one(db).await.expect("reads").expect("share row");
    assert_eq!((row.status.as_str(), row.settled, row.recipients, row.total), ("settled", 2, 2, 50));
    let parts = share_recipients::Entity::find().all(db).await.expect("reads");
    let statuses: Vec<(&str, &str)> = parts.iter().map(|p| (p.member_id.as_str(), p.status.as_str())).collect();
    assert_eq!(statuses, vec![("cat", "received"), ("dan", "refunded")]);

    let dan = members::Entity::find_by_id("dan".to_string()).one(db).await.expect("reads").expect("dan");
    assert!(!dan.active);
    let cafe_row = stores::Entity::find_by_id("cafe".to_string()).one(db).await.expect("reads").expect("cafe");
    assert_eq!((cafe_row.rate_basis_points, cafe_row.policy_version, cafe_row.open), (1_000, 1, true));
    let post_row = posts::Entity::find_by_id("p1".to_string()).one(db).await.expect("reads").expect("post");
    assert_eq!(post_row.body, "Great coffee");
    assert_eq!(post_row.photo_count, 2);
    let photos = post_photos::Entity::find().all(db).await.expect("reads");
    let photos: Vec<(i64, &str, i64)> = photos.iter().map(|p| (p.idx, p.photo_key.as_str(), p.size)).collect();
    assert_eq!(
        photos,
        vec![(0, "photos/p1-0", 68), (1, "photos/p1-1.jpg", 2_048)],
        "a later photo takes the next index"
    );
    let social = post_social::Entity::find().all(db).await.expect("reads");
    let social: Vec<(&str, &str)> = social.iter().map(|s| (s.provider.as_str(), s.status.as_str())).collect();
    assert_eq!(social, vec![("facebook", "published"), ("twitter", "pending")]);
    let later = post_photo_social::Entity::find().all(db).await.expect("reads");
    let later: Vec<(&str, &str, &str, Option<&str>, i64)> = later
        .iter()
        .map(|s| (s.photo_key.as_str(), s.provider.as_str(), s.status.as_str(), s.reason.as_deref(), s.attempts))
        .collect();
    assert_eq!(
        later,
        vec![
            ("photos/p1-1.jpg", "facebook", "pending", None, 0),
            ("photos/p1-1.jpg", "twitter", "failed", Some("HTTP 503"), 1)
        ],
        "only the photo added later has statuses of its own, at the post's providers"
    );

    // Running the distribution again (a redelivery) changes nothing.
    let head = store.read_head().await.expect("head");
    sql(&store, "UPDATE share_distribution_checkpoint SET position = 0").await;
    catch_up(&store, 100).await.expect("projections catch up");
    assert_eq!(store.read_head().await.expect("head"), head, "no command was issued twice");
    let report = audit(&store).await.expect("audits");
    assert!(report.is_clean(), "{:?}", report.problems());
}

async fn an_upcasted_event_projects_like_a_current_one(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "old"]).await;
    support::import_v1_fixture(&store).await;
    catch_up(&store, 100).await.expect("projections catch up");
    let history = queries::ledger_page(store.db(), "old", None, None, 10).await.expect("reads");
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].amount_paid, history[0].delta, history[0].balance_after), (Some(2_500), 250, 250));
    assert_eq!(queries::balance(store.db(), "old", "cafe").await.expect("reads"), 250);
    assert!(audit(&store).await.expect("audits").is_clean());
}

async fn the_audit_names_tampering(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob", "cat"]).await;
    for i in 0..3 {
        run(&store, "bob", earn("bob", &format!("r{i}"), 1_000)).await;
    }
    run(&store, "cat", earn("cat", "c1", 2_000)).await;
    catch_up(&store, 100).await.expect("projections catch up");
    assert!(audit(&store).await.expect("audits").is_clean());

    // An edited balance row.
    sql(&store, "UPDATE balances SET balance = 1000000 WHERE member_id = 'cat'").await;
    let report = audit(&store).await.expect("audits");
    let problems = report.problems();
    assert!(
        problems.iter().any(|p| p.starts_with("balances (\"cat\", \"cafe\")") && p.contains("1000000")),
        "{problems:?}"
    );
    sql(&store, "UPDATE balances SET balance = 200 WHERE member_id = 'cat'").await;
    assert!(audit(&store).await.expect("audits").is_clean());

    // An edited event payload: the chain names the event, the replay the rows it changes.
    let stream = store.read_stream("Wallet", "bob").await.expect("reads");
    let edited = &stream[2];
    sql(
        &store,
        &format!("UPDATE events SET payload = REPLACE(payload, '100', '900') WHERE position = {}", edited.position),
    )
    .await;
    let report = audit(&store).await.expect("audits");
    assert!(
        report
            .chain
            .breaks
            .iter()
            .any(|b| matches!(b, ChainBreak::HashMismatch { position, .. } if *position == edited.position))
    );
    let problems = report.problems();
    assert!(problems.iter().any(|p| p.starts_with("balances (\"bob\", \"cafe\")")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with(&format!("ledger {}", edited.position))), "{problems:?}");

    // A deleted event.
    sql(&store, &format!("DELETE FROM events WHERE position = {}", stream[3].position)).await;
    let report = audit(&store).await.expect("audits");
    assert!(report.chain.breaks.iter().any(|b| matches!(b, ChainBreak::PositionGap { .. })), "{:?}", report.chain);
    assert!(report.problems().iter().any(|p| p.starts_with(&format!("ledger {}", stream[3].position))));
    assert!(!report.is_clean());
    // A rebuild stops at the hole instead of swapping in a model without the event.
    let rebuilt = rebuild::<Wallets>(&store, 3, |_, _| {}).await;
    assert!(matches!(rebuilt, Err(ProjectionError::Gap { next, .. }) if next == stream[3].position + 1), "{rebuilt:?}");
}

async fn a_rebuild_never_shows_a_partial_read_model(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store = open(&db, quiet()).await;
    let people: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    let names: Vec<&str> = people.iter().map(String::as_str).collect();
    world(&store, &names).await;
    for round in 0..10 {
        for who in &names {
            run(&store, who, earn(who, &format!("{who}-{round}"), 1_000)).await;
        }
    }
    catch_up(&store, 100).await.expect("projections catch up");
    let expected_rows = balances::Entity::find().count(store.db()).await.expect("counts");
    let expected_ledger = ledger::Entity::find().count(store.db()).await.expect("counts");
    assert_eq!((expected_rows, expected_ledger), (20, 200));

    let indexes_before = secondary_indexes(&store, "ledger").await;
    assert_eq!(indexes_before, 3, "the primary key, ledger_member and ledger_store");
    for _ in 0..2 {
        let done = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn({
            let (store, done) = (store.clone(), done.clone());
            async move {
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) {
                    let rows = balances::Entity::find().all(store.db()).await.expect("reads during the rebuild");
                    let total: i64 = rows.iter().map(|b| b.balance).sum();
                    assert_eq!((rows.len(), total), (20, 20_000), "a query saw a partial read model");
                    let ledger_rows = ledger::Entity::find().count(store.db()).await.expect("counts");
                    assert_eq!(ledger_rows, 200, "a query saw a partial ledger");
                    reads += 1;
                }
                reads
            }
        });
        let report = rebuild::<Wallets>(&store, 7, |_, _| {}).await.expect("rebuilds");
        done.store(true, Ordering::SeqCst);
        let reads = reader.await.expect("the reader never saw a partial model");
        assert!(reads > 0);
        assert_eq!(report.position, store.read_head().await.expect("head"));
    }
    assert_eq!(secondary_indexes(&store, "ledger").await, indexes_before, "the rebuilt table has its indexes");
    // The swapped-in tables are the live ones from now on.
    run(&store, "m00", earn("m00", "after", 1_000)).await;
    catch_up(&store, 100).await.expect("projections catch up");
    assert_eq!(queries::balance(store.db(), "m00", "cafe").await.expect("reads"), 1_100);
    let report = audit(&store).await.expect("audits");
    assert!(report.is_clean(), "{:?}", report.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeem_reason_is_in_the_ledger() {
    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    run(&store, "bob", earn("bob", "r1", 1_000)).await;
    let redeem =
        WalletCommand::Redeem { store: cafe(), points: points(40), reward: Reason::parse("cake").expect("valid") };
    run(&store, "bob", redeem).await;
    catch_up(&store, 100).await.expect("projections catch up");
    let history = queries::ledger_page(store.db(), "bob", None, None, 1).await.expect("reads");
    assert_eq!(
        (history[0].kind.as_str(), history[0].reason.as_deref(), history[0].balance_after),
        ("redeem", Some("cake"), 60)
    );
}
