//! The relay against a real Redis (a private `redis-server` per test, so it
//! can be killed) and MariaDB: two relays (one active, by lease), one of them
//! killed mid-run, Redis killed and restarted empty while commands keep
//! landing; afterwards the stream holds every event exactly once, in position
//! order.

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod services;

use std::time::{Duration, Instant};

use domain::Wallet;
use eventstore::{CommandContext, EventStore};
use fred::prelude::*;
use services::RedisServer;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_every_event_once_in_order_across_relay_and_redis_restarts() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    earns(&store, 0, 200).await;
    let server = RedisServer::start();
    let config = RelayConfig { lease_ttl: Duration::from_millis(500), batch: 64, ..RelayConfig::new("test") };
    let (stop, shutdown) = watch::channel(false);
    let spawn_relay = || {
        let (store, config, shutdown, url) = (store.clone(), config.clone(), shutdown.clone(), server.url());
        tokio::spawn(async move {
            let redis = workers::redis::connect(&url).await.expect("connects");
            relay::run(store, redis, config, shutdown).await
        })
    };
    let first = spawn_relay();
    let second = spawn_relay();
    let redis = workers::redis::connect(&server.url()).await.expect("connects");
    wait_until_relayed(&redis, &config.stream, store.read_head().await.expect("head")).await;

    // One relay dies without a word; the other takes over (or already holds the lease).
    first.abort();
    earns(&store, 200, 300).await;
    wait_until_relayed(&redis, &config.stream, store.read_head().await.expect("head")).await;

    // Redis dies and comes back empty while commands keep landing.
    let port = server.kill();
    let writer = tokio::spawn({
        let store = store.clone();
        async move { earns(&store, 300, 400).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    second.await.expect("stops").expect("ran cleanly");
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
        let before = relay::relayed(&redis, &config.stream).await.unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while relay::relayed(&redis, &config.stream).await.unwrap_or(0) == before {
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
