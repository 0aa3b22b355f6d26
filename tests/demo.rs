//! `pointstream demo` as a newcomer runs it, on a fresh SQLite database and
//! a photo directory of the test's own: it loads what it announces, a second
//! run writes nothing, the audit agrees, and `pointstream serve` then pages
//! through its data and serves its posts' photos.

mod app;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use api::auth::Role;
use app::{App, fetch, token};
use eventstore::scratch::ScratchDatabase;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ESPRESSO: &[u8] = include_bytes!("../src/demo/photos/espresso.jpg");
const SAUCER: &[u8] = include_bytes!("../src/demo/photos/saucer.png");

fn pointstream(database_url: &str, media: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("POINTSTREAM_MEDIA_DIR", media)
        .env_remove("S3_BUCKET")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The figure the demo's announcement gives right before `what`
/// ("... 2000 purchases, ...").
fn announced(line: &str, what: &str) -> u64 {
    let words: Vec<&str> = line.split([' ', ',', '(', ')']).filter(|w| !w.is_empty()).collect();
    words
        .windows(2)
        .find(|pair| pair[1] == what)
        .and_then(|pair| pair[0].parse().ok())
        .unwrap_or_else(|| panic!("no figure for {what} in {line:?}"))
}

/// The log head, as `pointstream status` reports it.
fn head(database_url: &str, media: &Path) -> u64 {
    let status = pointstream(database_url, media, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).expect("JSON");
    status["head"].as_u64().unwrap_or_else(|| panic!("a head: {status}"))
}

/// How many events of each type the log holds, and how many photos its posts were given.
fn tally(database_url: &str, media: &Path) -> (BTreeMap<String, u64>, u64) {
    let log = pointstream(database_url, media, &["log", "--limit", "1000000"]);
    assert!(log.status.success(), "{log:?}");
    let mut types = BTreeMap::new();
    let mut photos = 0;
    for line in stdout(&log).lines() {
        let event: Value = serde_json::from_str(line).expect("each line is JSON");
        let kind = event["event_type"].as_str().expect("an event type").to_string();
        photos += match kind.as_str() {
            "PostCreated" => event["payload"]["photos"].as_array().map_or(0, |p| p.len() as u64),
            "PhotoAdded" => 1,
            _ => 0,
        };
        *types.entry(kind).or_default() += 1;
    }
    (types, photos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_loads_what_it_announces_once_and_serves_its_photos() {
    let db = ScratchDatabase::sqlite();
    let media = media::scratch::scratch_dir();

    let started = Instant::now();
    let first = pointstream(&db.url, &media, &["demo"]);
    assert!(first.status.success(), "{first:?}");
    eprintln!("the demo loaded in {:.1?}", started.elapsed());
    let line = stdout(&first);
    assert!(line.starts_with("demo data loaded: "), "{line}");

    // Everything announced is in the log.
    let (types, photos) = tally(&db.url, &media);
    for (what, event) in [
        ("stores", "StoreRegistered"),
        ("members", "MemberRegistered"),
        ("purchases", "PointsEarned"),
        ("shares", "PointsShared"),
        ("redemptions", "PointsRedeemed"),
        ("adjustments", "PointsAdjusted"),
        ("posts", "PostCreated"),
    ] {
        assert_eq!(types.get(event).copied().unwrap_or(0), announced(&line, what), "{what}: {types:?}");
    }
    assert_eq!(photos, announced(&line, "photos"));
    assert_eq!(types.get("StoreClosed").copied(), Some(announced(&line, "closed")));
    assert!(announced(&line, "members") >= 100 && announced(&line, "purchases") >= 2_000, "{line}");
    assert!(announced(&line, "posts") >= 30 && announced(&line, "photos") >= 20, "{line}");
    // Every share reached its recipients before the demo said it was done.
    assert!(types.get("SharedPointsReceived").copied().unwrap_or(0) >= announced(&line, "shares"), "{types:?}");

    // A second run writes nothing, and says the same.
    let loaded = head(&db.url, &media);
    let again = pointstream(&db.url, &media, &["demo"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(stdout(&again), line);
    assert_eq!(head(&db.url, &media), loaded, "the second run wrote events");

    // Run against another photo store, it puts the photos there too (and writes no event).
    let elsewhere = media::scratch::scratch_dir();
    let restored = pointstream(&db.url, &elsewhere, &["demo"]);
    assert!(restored.status.success(), "{restored:?}");
    let objects = std::fs::read_dir(elsewhere.join("photos")).map_or(0, |dir| dir.count() as u64);
    assert_eq!(objects, announced(&line, "photos"));
    assert_eq!(head(&db.url, &media), loaded, "the run on another photo store wrote events");

    let audit = pointstream(&db.url, &media, &["audit", "verify"]);
    assert!(audit.status.success(), "{}", stdout(&audit));
    assert!(stdout(&audit).contains(&format!("{loaded} events in ")), "{}", stdout(&audit));

    // Served: the data pages, and a post's photos are the demo's own bytes.
    let media_dir = media.display().to_string();
    let app = App::spawn(db, &["--media-dir", &media_dir]);
    let bob = token(Role::Member, Some("bob"), None);

    let query = "{ balances(member: \"bob\") { storeId balance } \
                 ledger(member: \"bob\", first: 20) { edges { cursor } pageInfo { hasNextPage } } \
                 feed(first: 10) { edges { node { id } } pageInfo { hasNextPage } } }";
    let answer = app.graphql(Some(&bob), query, json!({}));
    let cafe = answer["data"]["balances"].as_array().and_then(|b| b.iter().find(|b| b["storeId"] == "cafe"));
    let balance = cafe.and_then(|b| b["balance"].as_i64()).unwrap_or_else(|| panic!("bob's cafe balance: {answer}"));
    assert!(balance >= 300, "bob has {balance} points at the cafe");
    assert_eq!(answer["data"]["ledger"]["pageInfo"]["hasNextPage"], true, "{answer}");
    assert_eq!(answer["data"]["feed"]["pageInfo"]["hasNextPage"], true, "{answer}");
    let dan = token(Role::Member, Some("dan"), None);
    let share = app.graphql(Some(&dan), "{ share(id: \"demo-share-1\") { senderId status } }", json!({}));
    assert_eq!(share["data"]["share"], json!({ "senderId": "bob", "status": "settled" }), "{share}");

    let photos_of = |post: &str| {
        let query =
            "query($id: String!) { post(id: $id) { authorId storeId photos { key contentType size sha256 url } } }";
        let answer = app.graphql(Some(&bob), query, json!({ "id": post }));
        answer["data"]["post"].clone()
    };
    let first_post = photos_of("demo-post-1");
    assert_eq!((&first_post["authorId"], &first_post["storeId"]), (&json!("bob"), &json!("cafe")), "{first_post}");
    let second_post = photos_of("demo-post-2");
    let expected = [
        (&first_post, 0, ESPRESSO, "image/jpeg"),
        (&second_post, 0, ESPRESSO, "image/jpeg"),
        (&second_post, 1, SAUCER, "image/png"),
    ];
    for (post, index, bytes, content_type) in expected {
        let photo = &post["photos"][index];
        assert_eq!(photo["contentType"], content_type, "{post}");
        assert_eq!(photo["size"].as_u64(), Some(bytes.len() as u64), "{post}");
        assert_eq!(photo["sha256"], hex::encode(Sha256::digest(bytes)), "{post}");
        let url = photo["url"].as_str().unwrap_or_else(|| panic!("a photo URL: {post}"));
        let (status, served_as, served) = fetch(url).await;
        assert_eq!((status, served_as.as_str()), (200, content_type), "{url}");
        assert!(served == bytes, "{url} serves other bytes than the demo's photo");
    }
    // Each post's photo is an object of its own.
    assert_ne!(first_post["photos"][0]["key"], second_post["photos"][0]["key"]);
}
