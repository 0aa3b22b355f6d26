//! `pointstream worker social` as processes: one is killed with SIGKILL while
//! it holds entries (waiting out a 429's Retry-After); another reclaims them
//! after the idle timeout. Each post is published exactly once per network,
//! and nothing is left pending. And Mastodon and Bluesky, whose APIs take a
//! key of the caller's: a worker killed after the network took a post, before
//! its outcome was recorded, never makes a second post there.

#[path = "../eventstore/tests/support/mod.rs"]
mod support;

#[path = "../workers/tests/services/mod.rs"]
mod services;

#[path = "fakes/networks.rs"]
mod networks;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::values::{ExternalRef, MemberId, PostBody, PostId, Provider, StoreId};
use domain::{Member, MemberCommand, Post, PostCommand, SocialStatus};
use eventstore::{CommandContext, EventStore};
use services::{Fake, RedisServer, fake_networks};
use support::{Backend, open, quiet, scratch, world};
use workers::relay::{self, RelayConfig};
use workers::tokens::{TokenSet, TokenVault};

const KEY: &str = "8899aabbccddeeff00112233445566778899aabbccddeeff0011223344556677";
const POSTS: usize = 5;

/// A `worker social` process named `name` on the streams under `prefix`,
/// with extra environment `env` (where the networks are).
fn worker(db: &str, redis: &str, prefix: &str, name: &str, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(["worker", "social"])
        .env("DATABASE_URL", db)
        .env("REDIS_URL", redis)
        .env("POINTSTREAM_STREAM_PREFIX", prefix)
        .env("POINTSTREAM_TOKEN_KEY", KEY)
        .env("POINTSTREAM_CLAIM_IDLE_MS", "1000")
        .env("POINTSTREAM_CONSUMER", name)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

/// A worker of the first test: Facebook and Twitter at the fake networks' `base`.
fn killable_worker(db: &str, redis: &str, base: &str, name: &str) -> Child {
    let facebook = format!("{base}/fb");
    worker(db, redis, "kill", name, &[("POINTSTREAM_FACEBOOK_URL", &facebook), ("POINTSTREAM_TWITTER_URL", base)])
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
        let link = MemberCommand::LinkSocialAccount {
            provider,
            external_id: ExternalRef::parse(account).expect("a ref"),
            instance: None,
            link: None,
        };
        store.execute::<Member>("ann", link, CommandContext::default()).await.expect("links");
        vault.store(store.db(), "ann", &provider.to_string(), &TokenSet::access("token"), 0).await.expect("stores");
    }
    for n in 0..POSTS {
        let create =
            create_post(&format!("p{n}"), format!("post number {n}"), vec![Provider::Facebook, Provider::Twitter]);
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

    let mut first = killable_worker(&db.url, &redis_server.url(), &base, "first");
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

    let mut second = killable_worker(&db.url, &redis_server.url(), &base, "second");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_call_never_posts_twice_on_mastodon_or_bluesky() {
    const ROUNDS: usize = 4;
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann"]).await;
    let (nets, base) = networks::start().await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    for (provider, account, network) in
        [(Provider::Mastodon, "109001", "mastodon"), (Provider::Bluesky, "did:plc:ann42", "bluesky")]
    {
        let link = MemberCommand::LinkSocialAccount {
            provider,
            external_id: ExternalRef::parse(account).expect("a ref"),
            instance: Some(ExternalRef::parse(base.as_str()).expect("a ref")),
            link: None,
        };
        store.execute::<Member>("ann", link, CommandContext::default()).await.expect("links");
        let tokens = TokenSet {
            refresh: Some(nets.token(network, "refresh")),
            ..TokenSet::access(nets.token(network, "access"))
        };
        vault.store(store.db(), "ann", &provider.to_string(), &tokens, 0).await.expect("stores");
    }
    let redis_server = RedisServer::start();
    let redis = workers::redis::connect(&redis_server.url()).await.expect("connects");
    let both = |post: domain::Post| {
        [Provider::Mastodon, Provider::Bluesky]
            .iter()
            .all(|p| matches!(post.social().get(p), Some(SocialStatus::Published { .. })))
    };
    for round in 0..ROUNDS {
        // Mastodon is called first; in odd rounds it answers and Bluesky hangs.
        let network = if round % 2 == 0 { "mastodon" } else { "bluesky" };
        let taken = |nets: &networks::Networks| {
            nets.with(|s| if network == "mastodon" { s.statuses.len() } else { s.records.len() })
        };
        let before = taken(&nets);
        nets.hang(network, true);
        let id = format!("once{round}");
        let create =
            create_post(&id, format!("exactly once, round {round}"), vec![Provider::Mastodon, Provider::Bluesky]);
        store.execute::<Post>(&id, create, CommandContext::default()).await.expect("posts");
        // The read models as projectors keep them: a relink's worker reads them.
        projections::catch_up(&store, 1_000).await.expect("projects");
        relay::step(&store, &redis, &RelayConfig::new("once")).await.expect("relays");

        let mut first = worker(&db.url, &redis_server.url(), "once", &format!("first-{round}"), &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while taken(&nets) == before {
            assert!(Instant::now() < deadline, "round {round}: {network} took the post");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Killed at some point while the network holds the answer back.
        tokio::time::sleep(Duration::from_millis(rand_below(200))).await;
        first.kill().expect("SIGKILL");
        first.wait().expect("reaped");
        assert!(
            !both(store.load::<Post>(&id).await.expect("loads").state),
            "round {round}: the outcome was not recorded"
        );
        nets.hang(network, false);

        let mut second = worker(&db.url, &redis_server.url(), "once", &format!("second-{round}"), &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !both(store.load::<Post>(&id).await.expect("loads").state) {
            assert!(Instant::now() < deadline, "round {round}: published on both networks");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        second.kill().expect("stops");
        second.wait().expect("reaped");
    }
    nets.with(|s| {
        assert_eq!(s.statuses.len(), ROUNDS, "one Mastodon status per post: {:?}", s.statuses);
        assert_eq!(s.records.len(), ROUNDS, "one Bluesky record per post: {:?}", s.records);
        assert!(s.status_calls > ROUNDS as u32, "a killed call was repeated, and answered from its key");
        for round in 0..ROUNDS {
            let text = format!("exactly once, round {round}");
            assert_eq!(s.statuses.iter().filter(|(_, t)| *t == text).count(), 1, "round {round} on Mastodon");
            assert_eq!(s.records.values().filter(|t| **t == text).count(), 1, "round {round} on Bluesky");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_refreshed_once_then_a_post_waits_for_the_relink_without_dead_letters() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann"]).await;
    let (nets, base) = networks::start().await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    link_x(&store, &vault, &nets, "link-1").await;
    let redis_server = RedisServer::start();
    let redis = workers::redis::connect(&redis_server.url()).await.expect("connects");
    let post = |id: &'static str, n: usize| {
        let create = create_post(id, format!("relink post {n}"), vec![Provider::Twitter]);
        store.execute::<Post>(id, create, CommandContext::default())
    };
    let step = || async {
        projections::catch_up(&store, 1_000).await.expect("projects");
        relay::step(&store, &redis, &RelayConfig::new("relink")).await.expect("relays");
    };
    let tweets = |n: usize| nets.with(|s| s.tweets.iter().filter(|(_, t)| *t == format!("relink post {n}")).count());
    let token_url = format!("{base}/x/token");
    let mut worker = worker(
        &db.url,
        &redis_server.url(),
        "relink",
        "relinking",
        &[
            ("POINTSTREAM_TWITTER_URL", &base),
            ("POINTSTREAM_TWITTER_CLIENT_ID", networks::X_CLIENT.0),
            ("POINTSTREAM_TWITTER_CLIENT_SECRET", networks::X_CLIENT.1),
            ("POINTSTREAM_TWITTER_TOKEN_URL", &token_url),
        ],
    );

    // The access token expired early: 401, one refresh, one more try.
    nets.expire_access("x");
    post("r1", 1).await.expect("posts");
    step().await;
    until(&store, "r1", |s| matches!(s, Some(SocialStatus::Published { .. }))).await;
    assert_eq!((nets.with(|s| s.refreshes.len()), tweets(1)), (1, 1), "refreshed once, posted once");

    // Revoked: the refresh is refused; the post waits, spending no attempt.
    nets.revoke("x");
    post("r2", 2).await.expect("posts");
    step().await;
    until(&store, "r2", |s| matches!(s, Some(SocialStatus::NeedsRelink { .. }))).await;
    let member = store.load::<Member>("ann").await.expect("loads");
    assert!(member.state.link(Provider::Twitter).is_some_and(|l| l.needs_relink), "the account needs relinking");
    let dead: u64 = fred::prelude::StreamsInterface::xlen(&redis, "{relink}:dlq:social").await.expect("xlen");
    assert_eq!((dead, tweets(2)), (0, 0), "no dead letter, nothing posted");

    // Linked again: the waiting post is published, once.
    link_x(&store, &vault, &nets, "link-2").await;
    step().await;
    until(&store, "r2", |s| matches!(s, Some(SocialStatus::Published { .. }))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((tweets(1), tweets(2)), (1, 1), "each post once");
    let dead: u64 = fred::prelude::StreamsInterface::xlen(&redis, "{relink}:dlq:social").await.expect("xlen");
    assert_eq!(dead, 0);
    worker.kill().expect("stops");
    worker.wait().expect("reaped");
}

/// Links ann's X account as link `id`, with fresh tokens from the fake
/// (sealed first, as the API does).
async fn link_x(store: &EventStore, vault: &TokenVault, nets: &networks::Networks, id: &str) {
    let tokens = TokenSet {
        refresh: Some(nets.token("x", "refresh")),
        link: Some(id.to_string()),
        ..TokenSet::access(nets.token("x", "access"))
    };
    vault.store(store.db(), "ann", "twitter", &tokens, 0).await.expect("stores");
    let link = MemberCommand::LinkSocialAccount {
        provider: Provider::Twitter,
        external_id: ExternalRef::parse("x-ann-42").expect("a ref"),
        instance: None,
        link: Some(ExternalRef::parse(id).expect("a ref")),
    };
    store.execute::<Member>("ann", link, CommandContext::default()).await.expect("links");
}

/// Ann's post `id` at the cafe.
fn create_post(id: &str, body: String, providers: Vec<Provider>) -> PostCommand {
    PostCommand::Create {
        post: PostId::parse(id).expect("id"),
        author: MemberId::parse("ann").expect("id"),
        store: StoreId::parse("cafe").expect("id"),
        body: PostBody::parse(body).expect("body"),
        photos: Vec::new(),
        providers,
    }
}

/// Waits (30 s at most) until post `id`'s status at Twitter is what `done` accepts.
async fn until(store: &EventStore, id: &str, done: fn(Option<&SocialStatus>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let post = store.load::<Post>(id).await.expect("loads");
        let now = post.state.social().get(&Provider::Twitter);
        if done(now) {
            return;
        }
        assert!(Instant::now() < deadline, "post {id}: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A number of milliseconds below `limit`, different each run.
fn rand_below(limit: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) % limit
}
