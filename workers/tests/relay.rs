//! The relay against a real Redis (a private `redis-server` per test, so it
//! can be killed) and MariaDB: two relays, one active by lease while the other
//! stands by and writes nothing, the active one killed mid-run and the other
//! taking over, Redis killed and restarted empty while commands keep landing;
//! afterwards the stream holds every event exactly once, in position order.

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod services;

use std::time::{Duration, Instant};

use domain::Wallet;
use eventstore::{CommandContext, EventStore};
use fred::prelude::*;
use sea_orm::{ConnectionTrait, Statement};
use services::RedisServer;
use support::tap::{self, Tap};
use support::{Backend, earn, open, quiet, scratch, world};
use tokio::sync::watch;
use workers::relay::{self, RelayConfig};

extern crate pointstream_workers as workers;

async fn earns(store: &EventStore, from: usize, to: usize) {
    for n in from..to {
        let who = if n % 2 == 0 { "ann" } else { "bob" };
        let command = earn(who, &format!("r-{n}"), 1_000);
        store.execute::<Wallet>(who, command, CommandContext::default()).await.expect("lands");
    }
}

async fn wait_until_relayed(redis: &Client, stream: &str, head: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let relayed = relay::relayed(redis, stream).await.unwrap_or(0);
        if relayed >= head {
            return;
        }
        assert!(Instant::now() < deadline, "the stream reached {relayed}, not {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream's entry ids, as positions: every event once, in position order,
/// must read `1..=head`.
async fn stream_positions(redis: &Client, stream: &str) -> Vec<(u64, Vec<(String, String)>)> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis.xrange(stream, "-", "+", None).await.expect("the stream reads");
    entries.into_iter().map(|(id, fields)| (relay::position_of(&id).expect("a relayed id"), fields)).collect()
}

/// Who holds the relay's lease now (`None`: nobody).
async fn relay_lease_holder(store: &EventStore) -> Option<String> {
    let sql = "SELECT holder FROM leases WHERE name = 'relay'";
    let row = store.db().query_one_raw(Statement::from_string(store.backend(), sql)).await.expect("the lease reads");
    row.map(|row| row.try_get::<String>("", "holder").expect("a holder"))
}

/// One relay of the test: its own store and Redis connection, each through
/// a tap, so what it says to either is its own to see (and cut).
struct Relay {
    task: tokio::task::JoinHandle<Result<(), workers::WorkerError>>,
    database: Tap,
    redis: Tap,
}

impl Relay {
    async fn spawn(db_url: &str, redis_url: &str, config: &RelayConfig, shutdown: &watch::Receiver<bool>) -> Relay {
        let database = Tap::start(&tap::host_port(db_url));
        let redis = Tap::start(&tap::host_port(redis_url));
        let store = EventStore::open(&format!("{}?ssl-mode=disabled", tap::through(db_url, &database)), quiet())
            .await
            .expect("the relay's store opens");
        let client = workers::redis::connect(&tap::through(redis_url, &redis)).await.expect("connects");
        let (config, shutdown) = (config.clone(), shutdown.clone());
        let task = tokio::spawn(async move { relay::run(store, client, config, shutdown).await });
        Relay { task, database, redis }
    }

    /// Batches it has sent to Redis to append (each one script call).
    fn batches(&self) -> usize {
        self.redis.sent_count(b"$4\r\nEVAL\r\n") + self.redis.sent_count(b"$7\r\nEVALSHA\r\n")
    }

    /// Whether the database has refused it the lease (another holder had it).
    fn refused_the_lease(&self) -> bool {
        self.database.received_count(b"Duplicate entry 'relay'") > 0
    }

    /// Dies without a word: the task ends and its connections with it.
    fn kill(self) {
        self.task.abort();
        self.database.cut();
        self.redis.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_every_event_once_in_order_across_relay_and_redis_restarts() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    earns(&store, 0, 200).await;
    let server = RedisServer::start();
    // A lease a live holder keeps on a loaded machine; a dead one's expires soon enough.
    let config = RelayConfig { lease_ttl: Duration::from_secs(3), batch: 64, ..RelayConfig::new("test") };
    let (stop, shutdown) = watch::channel(false);
    let redis = workers::redis::connect(&server.url()).await.expect("connects");

    // One relay takes the lease and relays the log.
    let active = Relay::spawn(&db.url, &server.url(), &config, &shutdown).await;
    wait_until_relayed(&redis, &config.stream, store.read_head().await.expect("head")).await;
    let holder = relay_lease_holder(&store).await.expect("the active relay holds the lease");

    // A second one stands by: refused the lease, it writes nothing, while
    // the active one goes on relaying what lands.
    let standby = Relay::spawn(&db.url, &server.url(), &config, &shutdown).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !standby.refused_the_lease() {
        assert!(Instant::now() < deadline, "the second relay never asked for the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = active.batches();
    earns(&store, 200, 250).await;
    wait_until_relayed(&redis, &config.stream, store.read_head().await.expect("head")).await;
    assert!(active.batches() > written, "the lease holder relays what lands");
    assert_eq!(standby.batches(), 0, "the relay standing by wrote nothing");
    assert_eq!(relay_lease_holder(&store).await, Some(holder.clone()), "the first relay still holds the lease");

    // The active relay dies without a word; the other takes the lease over
    // once it expires, and only then writes.
    active.kill();
    assert_eq!(standby.batches(), 0, "the relay standing by wrote nothing while the other held the lease");
    let deadline = Instant::now() + Duration::from_secs(30);
    let successor = loop {
        match relay_lease_holder(&store).await {
            Some(now) if now != holder => break now,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the lease was not taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    earns(&store, 250, 300).await;
    wait_until_relayed(&redis, &config.stream, store.read_head().await.expect("head")).await;
    assert!(standby.batches() > 0, "the relay that took over writes");
    assert_eq!(relay_lease_holder(&store).await, Some(successor), "the lease stays with the relay that took it over");

    // Redis dies and comes back empty while commands keep landing.
    let port = server.kill();
    let head_at_kill = store.read_head().await.expect("head");
    let writer = tokio::spawn({
        let store = store.clone();
        async move { earns(&store, 300, 400).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.read_head().await.expect("head") < head_at_kill + 20 {
        assert!(Instant::now() < deadline, "commands landed while Redis was down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server = RedisServer::start_on(port);
    writer.await.expect("the writer finished");
    let head = store.read_head().await.expect("head");
    wait_until_relayed(&redis, &config.stream, head).await;

    let entries = stream_positions(&redis, &config.stream).await;
    let ids: Vec<u64> = entries.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=head).collect::<Vec<_>>(), "every event once, in position order");
    let log = store.read_from(0, head).await.expect("the log reads");
    for ((id, fields), event) in entries.iter().zip(&log) {
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(field("position"), Some(event.position.to_string()), "{id}");
        assert_eq!(field("event_type"), Some(event.event_type.clone()), "{id}");
        assert_eq!(field("payload"), Some(event.payload.clone()), "{id}");
    }

    stop.send_replace(true);
    standby.task.await.expect("stops").expect("ran cleanly");
    drop(server);
}

/// Redis killed at random points while the relay writes and restarted empty,
/// round after round: a batch read against the old stream must not land on
/// the new one (which would leave the start of the log out for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_mid_batch_never_leaves_a_gap() {
    const ROUNDS: usize = 20;
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    earns(&store, 0, 2_000).await;
    let mut server = RedisServer::start();
    let config = RelayConfig { batch: 256, ..RelayConfig::new("rounds") };
    let (stop, shutdown) = watch::channel(false);
    let relay = tokio::spawn({
        let (store, config, shutdown, url) = (store.clone(), config.clone(), shutdown.clone(), server.url());
        async move {
            let redis = workers::redis::connect(&url).await.expect("connects");
            relay::run(store, redis, config, shutdown).await
        }
    });
    let writer = tokio::spawn({
        let store = store.clone();
        async move { earns(&store, 2_000, 2_000 + ROUNDS * 40).await }
    });
    let redis = workers::redis::connect(&server.url()).await.expect("connects");
    let mut moved_under_the_relay = 0;
    for round in 0..ROUNDS {
        // Wait until the relay is writing (the stream grows), then kill Redis
        // a few milliseconds later, somewhere inside a batch.
        // Should it have caught up with the log (the writer done), one more
        // earn gives it something to write.
        let before = relay::relayed(&redis, &config.stream).await.unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut extra = 0;
        loop {
            let relayed = relay::relayed(&redis, &config.stream).await.unwrap_or(0);
            if relayed != before {
                break;
            }
            if relayed >= store.read_head().await.expect("head") {
                extra += 1;
                let command = earn("ann", &format!("round-{round}-{extra}"), 1_000);
                store.execute::<Wallet>("ann", command, CommandContext::default()).await.expect("lands");
            }
            assert!(Instant::now() < deadline, "round {round}: the relay does not write");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis((round % 5) as u64)).await;
        let port = server.kill();
        server = RedisServer::start_on(port);
        if relay::relayed(&redis, &config.stream).await.unwrap_or(0) > 0 {
            moved_under_the_relay += 1;
        }
    }
    writer.await.expect("the writer finished");
    let head = store.read_head().await.expect("head");
    wait_until_relayed(&redis, &config.stream, head).await;
    let ids: Vec<u64> = stream_positions(&redis, &config.stream).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len() as u64,
        head,
        "every event once ({moved_under_the_relay} rounds saw writes right after the restart)"
    );
    assert_eq!(ids, (1..=head).collect::<Vec<_>>(), "in position order, from the start of the log");
    stop.send_replace(true);
    relay.await.expect("stops").expect("ran cleanly");
    drop(server);
}
