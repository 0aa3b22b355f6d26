//! `pointstream worker social` as processes: one is killed with SIGKILL while
//! it holds entries (waiting out a 429's Retry-After); another reclaims them
//! after the idle timeout. Each post is published exactly once per network,
//! and nothing is left pending.

#[path = "../eventstore/tests/support/mod.rs"]
mod support;

#[path = "../workers/tests/services/mod.rs"]
mod services;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::values::{ExternalRef, MemberId, PostBody, PostId, Provider, StoreId};
use domain::{Member, MemberCommand, Post, PostCommand, SocialStatus};
use eventstore::{CommandContext, EventStore};
use services::{Fake, RedisServer, fake_networks};
use support::{Backend, open, quiet, scratch, world};
use workers::relay::{self, RelayConfig};
use workers::tokens::TokenVault;

const KEY: &str = "8899aabbccddeeff00112233445566778899aabbccddeeff0011223344556677";
const POSTS: usize = 5;

fn worker(db: &str, redis: &str, base: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(["worker", "social"])
        .env("DATABASE_URL", db)
        .env("REDIS_URL", redis)
        .env("POINTSTREAM_STREAM_PREFIX", "kill")
        .env("POINTSTREAM_TOKEN_KEY", KEY)
        .env("POINTSTREAM_FACEBOOK_URL", format!("{base}/fb"))
        .env("POINTSTREAM_TWITTER_URL", base)
        .env("POINTSTREAM_CLAIM_IDLE_MS", "1000")
        .env("POINTSTREAM_CONSUMER", name)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

async fn published(store: &EventStore) -> usize {
    let mut count = 0;
    for n in 0..POSTS {
        let post = store.load::<Post>(&format!("p{n}")).await.expect("loads");
        count += post.state.social().values().filter(|s| matches!(s, SocialStatus::Published { .. })).count();
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_entries_are_reclaimed_and_each_post_is_published_once() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann"]).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    for (provider, account) in [(Provider::Facebook, "ann-page"), (Provider::Twitter, "@ann")] {
        let link =
            MemberCommand::LinkSocialAccount { provider, external_id: ExternalRef::parse(account).expect("a ref") };
        store.execute::<Member>("ann", link, CommandContext::default()).await.expect("links");
        vault.store(store.db(), "ann", &provider.to_string(), "token", 0).await.expect("stores");
    }
    for n in 0..POSTS {
        let create = PostCommand::Create {
            post: PostId::parse(format!("p{n}")).expect("id"),
            author: MemberId::parse("ann").expect("id"),
            store: StoreId::parse("cafe").expect("id"),
            body: PostBody::parse(format!("post number {n}")).expect("body"),
            photos: Vec::new(),
            providers: vec![Provider::Facebook, Provider::Twitter],
        };
        store.execute::<Post>(&format!("p{n}"), create, CommandContext::default()).await.expect("posts");
    }
    projections::catch_up(&store, 1_000).await.expect("projects");
    let fake = Arc::new(Fake::default());
    // The first call is told to come back in 30 s: its worker sleeps holding its entries.
    fake.script("facebook", &[(429, Some(30))]);
    let base = fake_networks(fake.clone()).await;
    let redis_server = RedisServer::start();
    let redis = workers::redis::connect(&redis_server.url()).await.expect("connects");
    relay::step(&store, &redis, &RelayConfig::new("kill")).await.expect("relays");

    let mut first = worker(&db.url, &redis_server.url(), &base, "first");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.calls("facebook").is_empty() {
        assert!(Instant::now() < deadline, "the first worker called facebook");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let pending: (i64, fred::prelude::Value, fred::prelude::Value, fred::prelude::Value) =
        fred::prelude::StreamsInterface::xpending(&redis, "{kill}:events", "social", ()).await.expect("pending");
    assert!(pending.0 > 0, "the killed worker held entries");

    let mut second = worker(&db.url, &redis_server.url(), &base, "second");
    let deadline = Instant::now() + Duration::from_secs(30);
    while published(&store).await < POSTS * 2 {
        assert!(Instant::now() < deadline, "every post published on both networks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending: (i64, fred::prelude::Value, fred::prelude::Value, fred::prelude::Value) =
            fred::prelude::StreamsInterface::xpending(&redis, "{kill}:events", "social", ()).await.expect("pending");
        if pending.0 == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "entries still pending: {pending:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill().expect("stops");
    second.wait().expect("reaped");

    // Nothing was dead-lettered; the CLI says so.
    let dlq = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pointstream"))
            .arg("dlq")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis_server.url())
            .env("POINTSTREAM_STREAM_PREFIX", "kill")
            .output()
            .expect("the binary runs")
    };
    let listed = dlq(&["list"]);
    assert!(listed.status.success() && listed.stdout.is_empty(), "{listed:?}");
    let retried = dlq(&["retry"]);
    assert!(String::from_utf8_lossy(&retried.stdout).contains("0 dead letter(s) requeued"), "{retried:?}");
    // `status` on MariaDB and Redis: the streams, and every post published on both networks.
    projections::catch_up(&store, 1_000).await.expect("projects");
    let status = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .arg("status")
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", redis_server.url())
        .env("POINTSTREAM_STREAM_PREFIX", "kill")
        .output()
        .expect("the binary runs");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["streams"]["dead_letters"], 0, "{status}");
    assert!(status["streams"]["length"].as_u64().is_some_and(|n| n > 0), "{status}");
    for network in ["facebook", "twitter"] {
        let published = status["social"]
            .as_array()
            .expect("a tally")
            .iter()
            .find(|t| t["provider"] == network && t["status"] == "published")
            .map(|t| t["posts"].clone());
        assert_eq!(published, Some(serde_json::json!(POSTS)), "{status}");
    }

    for network in ["facebook", "twitter"] {
        for n in 0..POSTS {
            let text = format!("post+number+{n}");
            let json_text = format!("post number {n}");
            let successes = fake
                .calls(network)
                .iter()
                .filter(|c| c.status == 200 && (c.body.contains(&text) || c.body.contains(&json_text)))
                .count();
            assert_eq!(successes, 1, "post {n} published once on {network}");
        }
    }
}
