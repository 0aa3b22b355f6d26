//! The relay and the social workers against Redis with failover, each test
//! starting its own servers on free ports (and failing if `redis-server` or
//! `redis-cli` is missing):
//!
//! * a primary with two replicas behind three sentinels, whose primary is
//!   killed under load after its replicas were cut off from it (so the
//!   promoted one lacks the last entries): the relay refills them, the stream
//!   ends up equal to the log, and every post is published once per network;
//! * a three-master Redis Cluster with the relay and two workers on it: the
//!   stream equals the log, dead letters are listed and requeued, and
//!   another instance is woken by its blocking read of the stream.

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod services;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use domain::values::{ExternalRef, MemberId, PostBody, PostId, Provider, StoreId};
use domain::{Member, MemberCommand, Post, PostCommand, SocialStatus, Wallet};
use eventstore::{CommandContext, EventStore};
use fred::prelude::*;
use services::{Cluster, Fake, SentinelSet, fake_networks, redis_cli, wait_for};
use support::{Backend, earn, open, quiet, scratch, world};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use workers::WorkerError;
use workers::providers::{Facebook, SocialNetwork, Twitter, http_client};
use workers::relay::{self, RelayConfig};
use workers::social::{SocialConfig, SocialWorker};
use workers::tokens::{TokenSet, TokenVault};

extern crate pointstream_workers as workers;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Ann and Bob, Ann with Facebook and Twitter accounts linked (tokens sealed).
async fn members(store: &EventStore, vault: &TokenVault) {
    world(store, &["ann", "bob"]).await;
    for (provider, account) in [(Provider::Facebook, "ann-page"), (Provider::Twitter, "@ann")] {
        let link = MemberCommand::LinkSocialAccount {
            provider,
            external_id: ExternalRef::parse(account).expect("a ref"),
            instance: None,
            link: None,
        };
        store.execute::<Member>("ann", link, CommandContext::default()).await.expect("links");
        vault
            .store(store.db(), "ann", &provider.to_string(), &TokenSet::access("token"), 0)
            .await
            .expect("stores the token");
    }
    // The workers look the accounts up in the read model.
    projections::catch_up(store, 1_000).await.expect("projects");
}

/// A post's text: one no other post's text contains.
fn body(n: usize) -> String {
    format!("flat-white-{n}-end")
}

/// Ann's post `p{n}` to both networks.
async fn post(store: &EventStore, n: usize) -> String {
    let id = format!("p{n}");
    let create = PostCommand::Create {
        post: PostId::parse(id.as_str()).expect("id"),
        author: MemberId::parse("ann").expect("id"),
        store: StoreId::parse("cafe").expect("id"),
        body: PostBody::parse(body(n)).expect("body"),
        photos: Vec::new(),
        providers: vec![Provider::Facebook, Provider::Twitter],
    };
    store.execute::<Post>(&id, create, CommandContext::default()).await.expect("posts");
    id
}

/// Commands landing until `stop` is set: Bob earns, and every fifth
/// command Ann posts. Answers the posts' numbers.
fn load(store: &EventStore, from: usize, stop: Arc<AtomicBool>) -> JoinHandle<Vec<usize>> {
    let store = store.clone();
    tokio::spawn(async move {
        let mut posts = Vec::new();
        let mut n = from;
        while !stop.load(Ordering::SeqCst) {
            if n.is_multiple_of(5) {
                post(&store, n).await;
                posts.push(n);
            } else {
                store
                    .execute::<Wallet>("bob", earn("bob", &format!("r-{n}"), 1_000), CommandContext::default())
                    .await
                    .expect("lands");
            }
            n += 1;
            // A steady trickle rather than a flood: the failover happens mid-stream.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        posts
    })
}

fn networks(base: &str) -> BTreeMap<Provider, Arc<dyn SocialNetwork>> {
    let http = http_client(Duration::from_secs(2));
    let mut networks: BTreeMap<Provider, Arc<dyn SocialNetwork>> = BTreeMap::new();
    networks.insert(Provider::Facebook, Arc::new(Facebook::new(http.clone(), format!("{base}/fb"))));
    networks.insert(Provider::Twitter, Arc::new(Twitter::new(http, base.to_string(), None)));
    networks
}

/// The relay and two social workers under `prefix`, each with a Redis
/// client of its own on `url`, until `shutdown` turns true.
async fn roles(
    store: &EventStore,
    url: &str,
    prefix: &str,
    base: &str,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<(), WorkerError>>> {
    let vault = TokenVault::from_hex(KEY).expect("a key");
    let config = RelayConfig { lease_ttl: Duration::from_secs(3), batch: 64, ..RelayConfig::new(prefix) };
    let redis = workers::redis::connect(url).await.expect("the relay connects");
    let mut tasks = vec![tokio::spawn(relay::run(store.clone(), redis, config, shutdown.clone()))];
    for name in ["w1", "w2"] {
        let config = social_config(prefix, name);
        let redis = workers::redis::connect(url).await.expect("a worker connects");
        let photos = media::scratch::scratch_fs("http://127.0.0.1");
        let worker = SocialWorker::new(store.clone(), Some(redis), Some(vault.clone()), photos, networks(base), config);
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker.run(shutdown).await }));
    }
    tasks
}

/// Short waits all round, so a test sees reclaims and retries within seconds.
fn social_config(prefix: &str, consumer: &str) -> SocialConfig {
    SocialConfig {
        max_attempts: 3,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        claim_idle: Duration::from_secs(2),
        block: Duration::from_millis(200),
        ..SocialConfig::new(prefix, consumer)
    }
}

/// Waits (at most `within`) until the stream holds the log's head and every
/// post in `posts` is published on both networks.
async fn settled(store: &EventStore, redis: &Client, stream: &str, posts: &[usize], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        // Publications first: recording one appends to the log, and once
        // every post is published nothing more is appended.
        let mut published = 0;
        for n in posts {
            let post = store.load::<Post>(&format!("p{n}")).await.expect("loads");
            let social = post.state.social();
            published += usize::from(social.values().all(|s| matches!(s, SocialStatus::Published { .. })));
        }
        let head = store.read_head().await.expect("head");
        let relayed = relay::relayed(redis, stream).await.unwrap_or(0);
        if relayed == head && published == posts.len() {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "within {within:?}: the stream at {relayed} of {head}, {published} of {} posts published",
            posts.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream holds the log up to `head`: entry ids `1..=head`, once each,
/// in order, each with its event's fields.
async fn assert_stream_equals_log(store: &EventStore, redis: &Client, stream: &str, head: u64) {
    let entries: Vec<(String, Vec<(String, String)>)> = redis.xrange(stream, "-", "+", None).await.expect("reads");
    let ids: Vec<u64> = entries.iter().map(|(id, _)| relay::position_of(id).expect("a relayed id")).collect();
    assert_eq!(ids, (1..=head).collect::<Vec<_>>(), "every event once, in position order");
    let log = store.read_from(0, head).await.expect("the log reads");
    for ((id, fields), event) in entries.iter().zip(&log) {
        let expected: Vec<(String, String)> =
            relay::fields(event).into_iter().map(|(name, value)| (name.to_string(), value)).collect();
        assert_eq!(fields, &expected, "entry {id}");
    }
}

/// Every post in `posts` was published once on each network: one call that
/// succeeded carrying its text (and none for any other text).
fn assert_published_once_each(fake: &Fake, posts: &[usize]) {
    for network in ["facebook", "twitter"] {
        let published: Vec<_> = fake.calls(network).into_iter().filter(|c| c.status == 200).collect();
        for n in posts {
            let text = body(*n);
            let times = published.iter().filter(|c| c.body.contains(&text)).count();
            assert_eq!(times, 1, "post {n} published {times} times on {network}");
        }
        assert_eq!(published.len(), posts.len(), "{network}: one publication per post");
    }
}

/// The position of the newest entry of `stream` on the server at `port`
/// (0 when empty), read there directly (a replica answers too).
fn tail_on(port: u16, stream: &str) -> u64 {
    let answer = redis_cli(port, &["XREVRANGE", stream, "+", "-", "COUNT", "1"]);
    answer.first().filter(|id| !id.is_empty()).map_or(0, |id| relay::position_of(id).expect("a relayed id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_failover_under_load_loses_no_event_and_publishes_each_post_once_per_network() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    members(&store, &vault).await;
    let mut set = tokio::task::block_in_place(SentinelSet::start);
    let url = set.url();
    let fake = Arc::new(Fake::default());
    let base = fake_networks(fake.clone()).await;
    let prefix = "failover";
    let stream = workers::redis::key(prefix, "events");
    let (stop_roles, shutdown) = watch::channel(false);
    let tasks = roles(&store, &url, prefix, &base, &shutdown).await;
    let watcher = workers::redis::connect(&url).await.expect("the test connects");

    let stop_load = Arc::new(AtomicBool::new(false));
    let load = load(&store, 0, stop_load.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.calls("twitter").len() < 3 || relay::relayed(&watcher, &stream).await.unwrap_or(0) < 30 {
        assert!(Instant::now() < deadline, "the relay and workers got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The replicas stop hearing from the primary (frozen, their links cut)
    // while it takes more entries; then it dies, and they wake without them.
    let old = set.primary.take().expect("the first primary");
    let old_port = old.port();
    let (lost_from, at_kill) = tokio::task::block_in_place(|| {
        for replica in &set.replicas {
            replica.signal("STOP");
        }
        redis_cli(old.port(), &["CLIENT", "KILL", "TYPE", "replica"]);
        let lost_from = tail_on(old.port(), &stream);
        wait_for("the primary takes entries its replicas never see", Duration::from_secs(10), || {
            tail_on(old.port(), &stream) >= lost_from + 10
        });
        let at_kill = tail_on(old.port(), &stream);
        old.kill();
        for replica in &set.replicas {
            replica.signal("CONT");
        }
        (lost_from, at_kill)
    });
    let replicas_at: Vec<u64> =
        tokio::task::block_in_place(|| set.replicas.iter().map(|r| tail_on(r.port(), &stream)).collect());
    assert!(
        replicas_at.iter().all(|at| *at < at_kill),
        "the replicas lack the primary's last entries: they end at {replicas_at:?}, it ended at {at_kill} \
         (cut off at {lost_from})"
    );
    eprintln!("the replicas end at {replicas_at:?}, the killed primary ended at {at_kill}");
    let failover = Instant::now();
    tokio::task::block_in_place(|| {
        wait_for("the sentinels promote a replica", Duration::from_secs(30), || set.primary_port() != old_port)
    });

    eprintln!("a replica promoted {:?} after the kill", failover.elapsed());
    // Commands keep landing after the failover, then stop.
    let head_at_failover = store.read_head().await.expect("head");
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay::relayed(&watcher, &stream).await.unwrap_or(0) < head_at_failover + 20 {
        assert!(Instant::now() < deadline, "the relay writes to the promoted primary");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_load.store(true, Ordering::SeqCst);
    let posts = load.await.expect("the load ran");
    let head = settled(&store, &watcher, &stream, &posts, Duration::from_secs(30)).await;

    assert!(head > at_kill, "events landed after the failover");
    assert_stream_equals_log(&store, &watcher, &stream, head).await;
    assert_published_once_each(&fake, &posts);
    stop_roles.send_replace(true);
    for task in tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_the_stream_equals_the_log_and_dead_letters_are_requeued() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    members(&store, &vault).await;
    let cluster = tokio::task::block_in_place(Cluster::start);
    let url = cluster.url();
    let prefix = "clustered";
    let config = social_config(prefix, "w1");
    // The keys a script or a read touches together are on one node.
    let slots: Vec<String> = [&config.events, &config.retries, &config.dead]
        .iter()
        .map(|key| redis_cli(cluster.masters[0].port(), &["CLUSTER", "KEYSLOT", key]).concat())
        .collect();
    assert!(slots.iter().all(|slot| *slot == slots[0]), "one slot for every key: {slots:?}");

    // Twitter refuses the first post until it is dead-lettered.
    let fake = Arc::new(Fake::default());
    fake.script("twitter", &[(400, None), (400, None), (400, None)]);
    let base = fake_networks(fake.clone()).await;
    let (stop_roles, shutdown) = watch::channel(false);
    let mut tasks = roles(&store, &url, prefix, &base, &shutdown).await;
    let redis = workers::redis::connect(&url).await.expect("the test connects");
    // Another instance, whose follower would poll the log only hourly,
    // learns of commits from its blocking read of the stream on the cluster.
    let other = open(&db, quiet()).await;
    let reader = workers::redis::connect(&url).await.expect("the other instance connects");
    tasks.push(tokio::spawn(relay::follow_stream(other.clone(), reader, config.events.clone(), shutdown.clone())));
    post(&store, 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while workers::dlq::list(&redis, &config).await.expect("lists").len() != 1 {
        assert!(Instant::now() < deadline, "the first post dead-lettered on twitter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letters = workers::dlq::list(&redis, &config).await.expect("lists");
    assert_eq!(letters[0].1.get("provider").map(String::as_str), Some("twitter"), "{letters:?}");

    // More lands meanwhile; the letter is requeued and published.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = load(&store, 1, stop_load.clone());
    assert_eq!(workers::dlq::retry(&redis, &config, &[]).await.expect("requeues"), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.read_head().await.expect("head") < 150 {
        assert!(Instant::now() < deadline, "commands land");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_load.store(true, Ordering::SeqCst);
    let mut posts = load.await.expect("the load ran");
    posts.push(0);
    let head = settled(&store, &redis, &config.events, &posts, Duration::from_secs(30)).await;

    assert_stream_equals_log(&store, &redis, &config.events, head).await;
    assert_eq!(other.wait_for(head - 1, Duration::from_secs(10)).await, head, "the other instance woke");
    assert_published_once_each(&fake, &posts);
    assert_eq!(fake.calls("twitter").iter().filter(|c| c.status == 400).count(), 3, "three refusals, then the letter");
    assert!(workers::dlq::list(&redis, &config).await.expect("lists").is_empty(), "no letter left");
    stop_roles.send_replace(true);
    for task in tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
}
