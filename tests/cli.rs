//! The `pointstream` binary, run as a user runs it, on SQLite and MariaDB.

#[path = "../eventstore/tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

use domain::Wallet;
use eventstore::CommandContext;
use sea_orm::{ConnectionTrait, Statement};
use support::{Backend, earn, open, quiet, scratch, world};

fn pointstream(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(args)
        .env("DATABASE_URL", database_url)
        // The demo stores photos: in a directory of the test's own, not the working directory.
        .env("POINTSTREAM_MEDIA_DIR", media::scratch::scratch_dir())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn migrate_log_and_verify(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let migrated = pointstream(&db.url, &["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let empty = pointstream(&db.url, &["audit", "verify"]);
    assert!(empty.status.success(), "{empty:?}");
    assert!(
        stdout(&empty).contains("0 events in 0 streams checked, 5 read models compared, 0 problems"),
        "{}",
        stdout(&empty)
    );

    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    store.execute::<Wallet>("bob", earn("bob", "r1", 1_000), CommandContext::default()).await.expect("earn lands");
    let head = store.head();

    let log = pointstream(&db.url, &["log", "--after", "1", "--limit", "3"]);
    assert!(log.status.success(), "{log:?}");
    let lines: Vec<serde_json::Value> =
        stdout(&log).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert_eq!(lines.iter().map(|l| l["position"].as_u64()).collect::<Vec<_>>(), vec![Some(2), Some(3), Some(4)]);
    let all = pointstream(&db.url, &["log"]);
    let last: serde_json::Value = serde_json::from_str(stdout(&all).lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["position"].as_u64(), Some(head));
    assert_eq!(last["event_type"], "PointsEarned");
    assert_eq!(last["payload"]["points"], 100);

    let clean = pointstream(&db.url, &["audit", "verify", "--json"]);
    assert!(clean.status.success(), "{clean:?}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&clean)).expect("the report is JSON");
    assert_eq!(report["chain"]["events"].as_u64(), Some(head));

    let replay = pointstream(&db.url, &["replay", "--projection", "wallets"]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        stdout(&replay).contains(&format!("wallets: rebuilt {head} events up to position {head}")),
        "{}",
        stdout(&replay)
    );
    let unknown = pointstream(&db.url, &["replay", "--projection", "nonsense"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown projection \"nonsense\""));
    let audited = pointstream(&db.url, &["audit", "verify"]);
    assert!(audited.status.success(), "{audited:?}");
    let balance = projections::queries::balance(store.db(), "bob", "cafe").await.expect("reads");
    assert_eq!(balance, 100, "the rebuilt wallets read model is live");

    let tamper = format!("UPDATE events SET payload = REPLACE(payload, '100', '999') WHERE position = {head}");
    store.db().execute_raw(Statement::from_string(store.backend(), tamper)).await.expect("tampering runs");
    let broken = pointstream(&db.url, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(
        stdout(&broken).contains(&format!("hash mismatch at position {head}: Wallet/bob #2")),
        "{}",
        stdout(&broken)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_log_and_verify_on_sqlite() {
    migrate_log_and_verify(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_log_and_verify_on_mysql() {
    migrate_log_and_verify(Backend::Mysql).await;
}

#[test]
fn status_reports_the_head_and_every_checkpoint() {
    let db = eventstore::scratch::ScratchDatabase::sqlite();
    let demo = pointstream(&db.url, &["demo"]);
    assert!(demo.status.success(), "{demo:?}");
    let output = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .arg("status")
        .env("DATABASE_URL", &db.url)
        .env_remove("REDIS_URL")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let head = status["head"].as_u64().expect("a head");
    assert!(head > 10, "{status}");
    let wallets = status["projections"].as_array().expect("projections").iter().find(|p| p["name"] == "wallets");
    assert_eq!(wallets.map(|w| w["checkpoint"].clone()), Some(serde_json::json!(head)), "{status}");
    assert!(status["streams"].is_null(), "no Redis, no streams: {status}");
    // The demo's posts target both networks; nothing has posted them (no worker ran).
    let social = status["social"].as_array().expect("a social tally");
    let providers: Vec<&str> = social.iter().filter_map(|row| row["provider"].as_str()).collect();
    assert_eq!(providers, ["facebook", "twitter"], "{status}");
    for row in social {
        assert_eq!(
            (&row["status"], &row["attempts"]),
            (&serde_json::json!("pending"), &serde_json::json!(0)),
            "{status}"
        );
        assert!(row["posts"].as_u64().is_some_and(|posts| posts > 1), "{status}");
    }
    // demo-post-1's photo was added later: it waits for the post, on both networks.
    assert_eq!(
        status["social_photos"],
        serde_json::json!([
            { "provider": "facebook", "status": "pending", "posts": 1, "attempts": 0 },
            { "provider": "twitter", "status": "pending", "posts": 1, "attempts": 0 }
        ]),
        "{status}"
    );
}

#[test]
fn the_relay_without_redis_is_a_clear_error() {
    let db = eventstore::scratch::ScratchDatabase::sqlite();
    let output = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .arg("relay")
        .env("DATABASE_URL", &db.url)
        .env_remove("REDIS_URL")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --redis-url"), "{stderr}");
}

#[test]
fn an_unsupported_database_url_is_a_clear_error() {
    let output = pointstream("postgres://localhost/pointstream", &["migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported database URL \"postgres://localhost/pointstream\""), "{stderr}");
}
