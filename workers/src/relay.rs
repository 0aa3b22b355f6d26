//! The relay: copies the global log into the Redis stream `{prefix}:events`.
//!
//! Each event becomes one entry whose id is `{position}-0`. Redis refuses an
//! id not above the stream's last, so the stream itself is the relay's
//! checkpoint: a restarted relay continues after the newest entry and can
//! neither skip nor repeat an event. If Redis comes back empty (it keeps
//! nothing on disk), the relay fills the stream again from the start of the
//! log, still once each, in order. Entries are written in pipelined batches
//! and the stream is trimmed to about `max_len` entries (`MAXLEN ~`).
//!
//! One relay is active across processes (a lease in the database); another
//! takes over when its holder dies. Should two ever overlap, each writes a
//! contiguous run from the stream's end and Redis refuses whichever of the
//! same id comes second: still no gap and no repeat.

use std::time::Duration;

use eventstore::{EventStore, RecordedEvent};
use fred::prelude::*;
use fred::types::streams::XCap;
use projections::lease::Lease;
use tokio::sync::watch;

use crate::WorkerError;

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The stream (`{prefix}:events`).
    pub stream: String,
    /// Entries the stream keeps, roughly.
    pub max_len: i64,
    /// Events per pipelined batch.
    pub batch: u64,
    /// Lease lifetime: a dead relay is taken over after at most this long.
    pub lease_ttl: Duration,
    /// Longest wait for new events before checking the lease again.
    pub idle_wait: Duration,
}

impl RelayConfig {
    /// Defaults for the streams under `prefix` (`pointstream` by default).
    pub fn new(prefix: &str) -> Self {
        RelayConfig {
            stream: format!("{prefix}:events"),
            max_len: 1_000_000,
            batch: 1_000,
            lease_ttl: Duration::from_secs(10),
            idle_wait: Duration::from_secs(1),
        }
    }
}

/// The position of the stream's newest entry (0 when it is empty or missing).
pub async fn relayed(redis: &Client, stream: &str) -> Result<u64, WorkerError> {
    let newest: Vec<(String, Vec<(String, String)>)> = redis.xrevrange(stream, "+", "-", Some(1)).await?;
    match newest.first() {
        None => Ok(0),
        Some((id, _)) => position_of(id),
    }
}

/// The event position an entry id (`{position}-0`) stands for.
pub fn position_of(id: &str) -> Result<u64, WorkerError> {
    id.strip_suffix("-0")
        .and_then(|position| position.parse().ok())
        .ok_or_else(|| WorkerError::Malformed { id: id.to_string(), what: "not a relayed event id".into() })
}

/// The fields of an event's entry.
pub fn fields(event: &RecordedEvent) -> Vec<(&'static str, String)> {
    vec![
        ("position", event.position.to_string()),
        ("aggregate_type", event.aggregate_type.clone()),
        ("aggregate_id", event.aggregate_id.clone()),
        ("sequence", event.sequence.to_string()),
        ("event_type", event.event_type.clone()),
        ("event_version", event.event_version.to_string()),
        ("payload", event.payload.clone()),
        ("metadata", event.metadata.clone()),
        ("recorded_at_us", event.recorded_at_us.to_string()),
    ]
}

/// Copies the next batch of events after the stream's newest entry; returns
/// the position the stream then ends at and how many entries were added.
pub async fn step(store: &EventStore, redis: &Client, config: &RelayConfig) -> Result<(u64, u64), WorkerError> {
    let after = relayed(redis, &config.stream).await?;
    let events = store.read_from(after, config.batch).await?;
    let Some(last) = events.last().map(|e| e.position) else { return Ok((after, 0)) };
    let pipeline = redis.pipeline();
    for event in &events {
        let cap = XCap::try_from(("MAXLEN", "~", config.max_len))?;
        let () = pipeline.xadd(&config.stream, false, cap, format!("{}-0", event.position), fields(event)).await?;
    }
    let mut added = 0;
    for result in pipeline.try_all::<Value>().await {
        match result {
            Ok(_) => added += 1,
            // Another relay wrote this id first: the entry is there.
            Err(error) if error.details().contains("equal or smaller") => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok((last, added))
}

/// Runs the relay until `shutdown` turns true: takes the lease (or waits for
/// it), then copies events as they are committed.
pub async fn run(
    store: EventStore,
    redis: Client,
    config: RelayConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let lease = Lease::new("relay", config.lease_ttl);
    let db = store.db().clone();
    while !*shutdown.borrow() {
        let active = lease.acquire(&db).await.unwrap_or_else(|error| {
            // The database is away: keep trying rather than end the relay.
            tracing::error!(%error, "relay cannot take its lease; retrying");
            false
        });
        if !active {
            tokio::select! {
                _ = tokio::time::sleep(lease.renew_every()) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        tracing::info!(stream = %config.stream, "relay active");
        let mut renewed = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            if renewed.elapsed() >= lease.renew_every() {
                match lease.acquire(&db).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("relay lease lost to another process");
                        break;
                    }
                    Err(error) => {
                        tracing::error!(%error, "relay cannot renew its lease; pausing");
                        break;
                    }
                }
                renewed = tokio::time::Instant::now();
            }
            let (at, added) = match step(&store, &redis, &config).await {
                Ok(stepped) => stepped,
                Err(error) => {
                    tracing::error!(%error, "relay batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if added < config.batch {
                let idle = config.idle_wait.min(lease.renew_every());
                tokio::select! {
                    _ = store.wait_for(at, idle) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
    if let Err(error) = lease.release(&db).await {
        tracing::warn!(%error, "relay cannot release its lease; it will expire");
    }
    Ok(())
}

/// Wakes `store` whenever the stream grows, so this process (an API instance,
/// say) sees events committed through another at once rather than at its next
/// poll of the database. Runs until `shutdown` turns true; `reader` should be
/// a connection of its own, since it blocks.
pub async fn follow_stream(
    store: EventStore,
    reader: Client,
    stream: String,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut last = "$".to_string();
    while !*shutdown.borrow() {
        let read = tokio::select! {
            read = reader.xread::<Value, _, _>(Some(1_000), Some(1_000), stream.as_str(), last.as_str()) => read,
            _ = shutdown.changed() => continue,
        };
        match read {
            Ok(value) if value.is_null() => {}
            Ok(value) => {
                let entries: fred::types::streams::XReadResponse<String, String, String, String> =
                    value.into_xread_response()?;
                if let Some(newest) = entries.get(&stream).and_then(|entries| entries.last()) {
                    last = newest.0.clone();
                    store.nudge();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot follow the events stream; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}
