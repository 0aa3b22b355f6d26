//! Queries from read replicas, with read-your-writes.
//!
//! A replica holds what the primary's transactions wrote, in their order, so
//! how far it is can be read off it: the lowest checkpoint of the read models
//! (`projections::checkpoint::applied_by_all`) says every event up to there
//! is in all of them. A task reads that on the primary and on each replica
//! every `poll`, and judges each replica's lag as the time since the primary
//! first stood past where the replica stands now. A replica that lags by more
//! than `max_lag`, or does not answer, leaves the rotation until it is back
//! within it (metrics and `/readyz` say which).
//!
//! A query goes to the next replica in rotation. A client that sends the
//! position of its last write (the `Pointstream-Position` header, or
//! `position` in a WebSocket's `connection_init`) is answered from a replica
//! that has applied it: one that has already, else the chosen one once it
//! has (waiting at most `wait`), else the primary. Mutations, projections and
//! commands always use the primary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_graphql::Context;
use async_graphql::parser::types::OperationType;
use eventstore::EventStore;
use sea_orm::DatabaseConnection;
use tokio::sync::{OnceCell, watch};

/// The header in which a mutation's answer carries the position it wrote,
/// and in which a client sends the last position it saw.
pub const POSITION_HEADER: &str = "pointstream-position";

/// How replicas are used.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaConfig {
    /// A replica further behind than this leaves the rotation.
    pub max_lag: Duration,
    /// How long a query waits for a replica to apply the client's position
    /// before it is answered from the primary.
    pub wait: Duration,
    /// How often the replicas' positions are read.
    pub poll: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self { max_lag: Duration::from_secs(5), wait: Duration::from_secs(1), poll: Duration::from_millis(20) }
    }
}

/// Where queries read: the primary and the replicas, with their health.
/// Cheap to clone.
#[derive(Clone)]
pub struct Reads {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    config: ReplicaConfig,
}

struct Replica {
    /// The URL without its password, for logs, metrics and `/readyz`.
    name: String,
    db: DatabaseConnection,
    /// The lowest checkpoint of its read models, as last read.
    applied: watch::Sender<u64>,
    health: Mutex<Health>,
}

/// A replica as the monitor last found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Whether queries go to it.
    pub in_rotation: bool,
    /// How far behind the primary it was.
    pub lag: Duration,
    /// Why it is out of rotation, if it is.
    pub reason: Option<String>,
}

/// One replica's state, for `/readyz`.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    /// Its URL, without the password.
    pub name: String,
    /// The position its read models have all applied.
    pub applied: u64,
    /// Its health.
    pub health: Health,
}

impl Reads {
    /// Every read from the primary (no replicas).
    pub fn primary(store: &EventStore) -> Self {
        Self::with_replicas(store, Vec::new(), ReplicaConfig::default())
    }

    /// Connects to each replica URL with pools of `max_connections` (no
    /// migrations: a replica takes the primary's schema) and starts
    /// following them; they join the rotation once their position is read.
    pub async fn connect(
        store: &EventStore,
        urls: &[String],
        max_connections: u32,
        config: ReplicaConfig,
    ) -> Result<Self, eventstore::EventStoreError> {
        let mut replicas = Vec::with_capacity(urls.len());
        for url in urls {
            let db = eventstore::connect(url, max_connections).await?;
            replicas.push((redacted(url), db));
        }
        Ok(Self::with_replicas(store, replicas, config))
    }

    fn with_replicas(store: &EventStore, replicas: Vec<(String, DatabaseConnection)>, config: ReplicaConfig) -> Self {
        let replicas: Vec<Replica> = replicas
            .into_iter()
            .map(|(name, db)| Replica {
                name,
                db,
                applied: watch::Sender::new(0),
                health: Mutex::new(Health {
                    in_rotation: false,
                    lag: Duration::ZERO,
                    reason: Some("not read yet".to_string()),
                }),
            })
            .collect();
        let following = !replicas.is_empty();
        let reads =
            Reads { inner: Arc::new(Inner { store: store.clone(), replicas, next: AtomicUsize::new(0), config }) };
        if following {
            tokio::spawn(monitor(Arc::downgrade(&reads.inner)));
        }
        reads
    }

    /// The primary's connection pool.
    pub fn primary_db(&self) -> &DatabaseConnection {
        self.inner.store.db()
    }

    /// Whether there are replicas to read from.
    pub fn has_replicas(&self) -> bool {
        !self.inner.replicas.is_empty()
    }

    /// Each replica's state.
    pub fn report(&self) -> Vec<ReplicaReport> {
        self.inner
            .replicas
            .iter()
            .map(|replica| ReplicaReport {
                name: replica.name.clone(),
                applied: *replica.applied.borrow(),
                health: locked(&replica.health).clone(),
            })
            .collect()
    }

    /// Where a query reads that must see everything up to `after` (the
    /// client's last write), if given: a replica in rotation that has
    /// applied it (waiting up to `wait` for one), else the primary.
    pub async fn choose(&self, after: Option<u64>) -> DatabaseConnection {
        let inner = &self.inner;
        let in_rotation: Vec<&Replica> =
            inner.replicas.iter().filter(|replica| locked(&replica.health).in_rotation).collect();
        if in_rotation.is_empty() {
            return self.primary_for("no replica in rotation");
        }
        let first = inner.next.fetch_add(1, Ordering::Relaxed) % in_rotation.len();
        let turn = || in_rotation.iter().cycle().skip(first).take(in_rotation.len());
        let Some(after) = after else {
            return from_replica(in_rotation[first]);
        };
        // Nothing is committed past what the primary holds: a position ahead
        // of this process waits for it (bounded), and is held to it.
        let after = if after > inner.store.head() {
            inner.store.wait_for(after - 1, inner.config.wait).await.min(after)
        } else {
            after
        };
        if let Some(ready) = turn().find(|replica| *replica.applied.borrow() >= after) {
            return from_replica(ready);
        }
        let mut applied = in_rotation[first].applied.subscribe();
        match tokio::time::timeout(inner.config.wait, applied.wait_for(|at| *at >= after)).await {
            Ok(Ok(_)) => from_replica(in_rotation[first]),
            _ => self.primary_for("replica behind the client's position"),
        }
    }

    fn primary_for(&self, why: &'static str) -> DatabaseConnection {
        if self.has_replicas() {
            metrics::counter!("pointstream_replica_fallbacks_total", "reason" => why).increment(1);
        }
        self.inner.store.db().clone()
    }
}

fn from_replica(replica: &Replica) -> DatabaseConnection {
    metrics::counter!("pointstream_replica_reads_total", "replica" => replica.name.clone()).increment(1);
    replica.db.clone()
}

fn locked(health: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `url` without its password.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    match authority[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The primary's position over the last `max_lag` and more, oldest first:
/// a replica's lag is the age of the oldest sample past it.
struct Samples {
    kept: std::collections::VecDeque<(Instant, u64)>,
    span: Duration,
}

impl Samples {
    fn record(&mut self, now: Instant, position: u64) {
        if self.kept.back().is_none_or(|(_, last)| *last != position) {
            self.kept.push_back((now, position));
        }
        // Keep one sample older than the span, so a lag of the span shows.
        while self.kept.len() > 1 && self.kept.get(1).is_some_and(|(at, _)| now.duration_since(*at) > self.span) {
            self.kept.pop_front();
        }
    }

    /// How long the primary has stood past `applied`.
    fn lag(&self, now: Instant, applied: u64) -> Duration {
        self.kept
            .iter()
            .find(|(_, position)| *position > applied)
            .map_or(Duration::ZERO, |(at, _)| now.duration_since(*at))
    }
}

/// Reads the primary's and every replica's position each `poll`, and puts
/// replicas in and out of rotation; ends with the last handle.
async fn monitor(inner: Weak<Inner>) {
    let Some(config) = inner.upgrade().map(|inner| inner.config) else { return };
    let mut samples = Samples { kept: Default::default(), span: config.max_lag + config.poll };
    let mut ticks = tokio::time::interval(config.poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let within = config.max_lag.max(Duration::from_millis(100));
        match tokio::time::timeout(within, projections::checkpoint::applied_by_all(inner.store.db())).await {
            Ok(Ok(position)) => samples.record(Instant::now(), position),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the primary's checkpoints"),
            Err(_) => tracing::warn!("the primary's checkpoints did not come within the lag bound"),
        }
        let reads = inner.replicas.iter().map(|replica| async move {
            let read = tokio::time::timeout(within, projections::checkpoint::applied_by_all(&replica.db)).await;
            (replica, read)
        });
        for (replica, read) in futures_util::future::join_all(reads).await {
            let now = Instant::now();
            let health = match read {
                Ok(Ok(applied)) => {
                    replica.applied.send_if_modified(|at| {
                        let moved = applied > *at;
                        *at = (*at).max(applied);
                        moved
                    });
                    let lag = samples.lag(now, applied);
                    let in_rotation = lag <= config.max_lag;
                    let reason = (!in_rotation)
                        .then(|| format!("{} ms behind (bound {} ms)", lag.as_millis(), config.max_lag.as_millis()));
                    Health { in_rotation, lag, reason }
                }
                Ok(Err(error)) => Health { in_rotation: false, lag: Duration::ZERO, reason: Some(error.to_string()) },
                Err(_) => Health {
                    in_rotation: false,
                    lag: Duration::ZERO,
                    reason: Some(format!("no answer within {} ms", within.as_millis())),
                },
            };
            let name = replica.name.clone();
            metrics::gauge!("pointstream_replica_lag_seconds", "replica" => name.clone()).set(health.lag.as_secs_f64());
            metrics::gauge!("pointstream_replica_applied_position", "replica" => name.clone())
                .set(*replica.applied.borrow() as f64);
            metrics::gauge!("pointstream_replica_in_rotation", "replica" => name.clone()).set(if health.in_rotation {
                1.0
            } else {
                0.0
            });
            let mut current = locked(&replica.health);
            if current.in_rotation != health.in_rotation {
                match &health.reason {
                    Some(reason) => tracing::warn!(replica = %name, %reason, "replica out of rotation"),
                    None => tracing::info!(replica = %name, "replica in rotation"),
                }
            }
            *current = health;
        }
    }
}

/// The position a client says it has seen (`Pointstream-Position`, or
/// `position` in a WebSocket's `connection_init`): its queries see at least that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAfter(pub u64);

/// One HTTP request's choice of where to read, made when a query first
/// reads, and kept for the rest of it (its reads see one database).
pub struct ReadRoute {
    reads: Reads,
    after: Option<u64>,
    chosen: OnceCell<DatabaseConnection>,
}

impl ReadRoute {
    /// A route for a request that has seen `after`.
    pub fn new(reads: Reads, after: Option<u64>) -> Self {
        ReadRoute { reads, after, chosen: OnceCell::new() }
    }

    /// Where this request reads.
    pub async fn db(&self) -> DatabaseConnection {
        self.chosen.get_or_init(|| self.reads.choose(self.after)).await.clone()
    }
}

/// Where the operation running in `ctx` reads: the primary for a mutation
/// (and everything it returns), else its request's route, else (a WebSocket
/// operation) a choice by the connection's position.
pub(crate) async fn read_db(ctx: &Context<'_>) -> async_graphql::Result<DatabaseConnection> {
    let state = ctx.data::<crate::schema::ApiState>()?;
    if ctx.query_env.operation.node.ty == OperationType::Mutation || !state.reads.has_replicas() {
        return Ok(state.store.db().clone());
    }
    if let Some(route) = ctx.data_opt::<Arc<ReadRoute>>() {
        return Ok(route.db().await);
    }
    Ok(state.reads.choose(ctx.data_opt::<ReadAfter>().map(|after| after.0)).await)
}

/// Parses a client's position (`Pointstream-Position`): a non-negative integer.
pub fn parse_position(text: &str) -> Result<u64, String> {
    text.trim().parse::<u64>().map_err(|_| format!("a position is a non-negative integer, not {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_first_sample_past_the_replica() {
        let start = Instant::now();
        let mut samples = Samples { kept: Default::default(), span: Duration::from_secs(5) };
        samples.record(start, 10);
        samples.record(start + Duration::from_secs(1), 20);
        samples.record(start + Duration::from_secs(2), 30);
        let now = start + Duration::from_secs(3);
        assert_eq!(samples.lag(now, 30), Duration::ZERO);
        assert_eq!(samples.lag(now, 25), Duration::from_secs(1));
        assert_eq!(samples.lag(now, 10), Duration::from_secs(2));
        assert_eq!(samples.lag(now, 5), Duration::from_secs(3));
    }

    #[test]
    fn old_samples_go_but_one_older_than_the_span_stays() {
        let start = Instant::now();
        let mut samples = Samples { kept: Default::default(), span: Duration::from_secs(5) };
        for second in 0..20 {
            samples.record(start + Duration::from_secs(second), second * 10);
        }
        let now = start + Duration::from_secs(19);
        assert!(samples.kept.len() <= 7, "{} samples kept", samples.kept.len());
        // A replica stuck long ago shows at least the span.
        assert!(samples.lag(now, 0) > Duration::from_secs(5));
    }

    #[test]
    fn positions_are_non_negative_integers() {
        assert_eq!(parse_position(" 42 "), Ok(42));
        assert!(parse_position("-1").is_err());
        assert!(parse_position("4x").is_err());
        assert!(parse_position("").is_err());
    }

    #[test]
    fn passwords_stay_out_of_names() {
        assert_eq!(redacted("mysql://root:secret@db:3306/app"), "mysql://root:***@db:3306/app");
        assert_eq!(redacted("mysql://root@db:3306/app"), "mysql://root@db:3306/app");
    }
}
