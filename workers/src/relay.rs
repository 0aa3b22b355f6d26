//! The relay: copies the global log into the Redis stream `{prefix}:events`
//! (the braces are literal: see [`crate::redis::key`]).
//!
//! Each event becomes one entry whose id is `{position}-0`. Redis refuses an
//! id not above the stream's last, so the stream itself is the relay's
//! checkpoint: a restarted relay continues after the newest entry and can
//! neither skip nor repeat an event. If Redis comes back empty (it keeps
//! nothing on disk), the relay fills the stream again from the start of the
//! log, still once each, in order. Each batch is one server-side script that
//! appends only if the stream still ends where the batch was read for, and
//! the stream is trimmed to about `max_len` entries (`MAXLEN ~`). The check
//! runs in Redis, at the moment of the append, so no reconnect can reorder
//! it: a batch read against a stream that has since restarted empty (the
//! client replays queued commands to the new server) writes nothing, and the
//! next batch starts again from the stream's real end.
//!
//! One relay is active across processes (a lease in the database); another
//! takes over when its holder dies. Should two ever overlap, each writes a
//! contiguous run from the stream's end and Redis refuses whichever of the
//! same id comes second: still no gap and no repeat.

use std::time::Duration;

use eventstore::trace::{self, TraceContext};
use eventstore::{EventStore, RecordedEvent};
use fred::prelude::*;
use projections::lease::Lease;
use tokio::sync::watch;
use tracing::Instrument;

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
            stream: crate::redis::key(prefix, "events"),
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

/// The fields of an event's entry: the event as stored, and its trace
/// context (`traceparent`, `tracestate`) when its metadata holds one, so a
/// stream's reader joins the trace without parsing the metadata.
pub fn fields(event: &RecordedEvent) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("position", event.position.to_string()),
        ("aggregate_type", event.aggregate_type.clone()),
        ("aggregate_id", event.aggregate_id.clone()),
        ("sequence", event.sequence.to_string()),
        ("event_type", event.event_type.clone()),
        ("event_version", event.event_version.to_string()),
        ("payload", event.payload.clone()),
        ("metadata", event.metadata.clone()),
        ("recorded_at_us", event.recorded_at_us.to_string()),
    ];
    if let Some(traced) = trace::stored_in(&event.metadata) {
        fields.push(("traceparent", traced.traceparent));
        if let Some(tracestate) = traced.tracestate {
            fields.push(("tracestate", tracestate));
        }
    }
    fields
}

/// The trace context an entry carries, if any.
pub fn entry_trace(fields: &std::collections::HashMap<String, String>) -> Option<TraceContext> {
    let traceparent = fields.get("traceparent")?.clone();
    Some(TraceContext { traceparent, tracestate: fields.get("tracestate").cloned() })
}

/// The spans of a relayed batch, when traces are on: the batch's own, linked
/// to the traces of its events, and one in each of those traces (a child of
/// the span that wrote its first event there), so that a trace shows when its
/// events reached the stream. They end when dropped.
fn relay_spans(events: &[RecordedEvent]) -> (tracing::Span, Vec<tracing::Span>) {
    if !trace::enabled() {
        return (tracing::Span::none(), Vec::new());
    }
    let (first, last) = (events.first().map_or(0, |e| e.position), events.last().map_or(0, |e| e.position));
    let batch = tracing::info_span!(target: trace::TARGET, "relay_batch", events = events.len(), first, last);
    let mut traces: Vec<(u64, TraceContext)> = Vec::new();
    for event in events {
        if let Some(traced) = trace::stored_in(&event.metadata)
            && !traces.iter().any(|(_, seen)| seen.traceparent == traced.traceparent)
        {
            traces.push((event.position, traced));
        }
    }
    trace::link_all(&batch, traces.iter().map(|(_, traced)| traced));
    let per_trace = traces
        .iter()
        .take(trace::MAX_LINKS)
        .map(|(position, traced)| {
            let span = tracing::info_span!(
                target: trace::TARGET,
                parent: None,
                "relay",
                position,
                batch_events = events.len()
            );
            trace::parent_of(&span, traced);
            span
        })
        .collect();
    (batch, per_trace)
}

/// Appends a batch to the stream `KEYS[1]` only if its newest entry is
/// still `ARGV[1]` (empty: the stream is empty or missing); `ARGV[2]` is the
/// approximate length to trim to, then each entry is its id, its number of
/// fields and the fields. Answers how many entries it added, or -1 (adding
/// none) when the stream ends elsewhere.
const CONDITIONAL_APPEND: &str = r#"
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local ends_at = ''
if #newest > 0 then ends_at = newest[1][1] end
if ends_at ~= ARGV[1] then return -1 end
local i = 3
local added = 0
while i <= #ARGV do
  local fields = tonumber(ARGV[i + 1])
  local command = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[i]}
  for j = i + 2, i + 1 + 2 * fields do command[#command + 1] = ARGV[j] end
  redis.call(unpack(command))
  added = added + 1
  i = i + 2 + 2 * fields
end
return added
"#;

/// Copies the next batch of events after the stream's newest entry; returns
/// the position the stream then ends at and how many entries were added (0,
/// and the position read, when the stream moved meanwhile: another relay
/// wrote, or Redis restarted empty; the next step reads it again).
pub async fn step(store: &EventStore, redis: &Client, config: &RelayConfig) -> Result<(u64, u64), WorkerError> {
    let after = relayed(redis, &config.stream).await?;
    let events = store.read_from(after, config.batch).await?;
    let Some(last) = events.last().map(|e| e.position) else { return Ok((after, 0)) };
    let ends_at = if after == 0 { String::new() } else { format!("{after}-0") };
    let mut args: Vec<String> = Vec::with_capacity(2 + events.len() * 20);
    args.push(ends_at);
    args.push(config.max_len.to_string());
    for event in &events {
        let fields = fields(event);
        args.push(format!("{}-0", event.position));
        args.push(fields.len().to_string());
        for (name, value) in fields {
            args.push(name.to_string());
            args.push(value);
        }
    }
    let (batch, per_trace) = relay_spans(&events);
    let added: i64 = redis.eval(CONDITIONAL_APPEND, vec![config.stream.clone()], args).instrument(batch).await?;
    drop(per_trace);
    match u64::try_from(added) {
        Ok(added) => Ok((last, added)),
        Err(_) => {
            tracing::warn!(stream = %config.stream, read_at = after, "the stream moved while a batch was read; reading it again");
            metrics::counter!("pointstream_relay_batches_moved_total").increment(1);
            Ok((after, 0))
        }
    }
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
                _ = tokio::time::sleep(lease.retry_every()) => {}
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
