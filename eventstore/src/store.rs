//! [`EventStore`]: the handle every other crate uses. It owns the connection
//! pool, the group-commit task, the aggregate cache and the log follower.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use cqrs_es::Aggregate;
use lru::LruCache;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use tokio::sync::{mpsc, watch};

use migrations::tables::Snapshots;

use crate::chain::{self, ChainReport};
use crate::connection;
use crate::error::EventStoreError;
use crate::inline::{Inline, InlineProjection};
use crate::log::{self, LogFilter};
use crate::recent::RecentEvents;
use crate::record::RecordedEvent;
use crate::writer::{self, AppendRequest, Sink};

/// Tuning of an [`EventStore`].
#[derive(Debug, Clone)]
pub struct EventStoreConfig {
    /// Take a snapshot every this many events of an aggregate.
    pub snapshot_every: u64,
    /// Aggregates kept in memory.
    pub cache_capacity: usize,
    /// Attempts of a command that keeps losing races before it fails with a conflict.
    pub max_attempts: u32,
    /// How often to look for events other processes appended.
    pub follow_interval: Duration,
    /// Database connections in the pool.
    pub max_connections: u32,
    /// On MySQL, send an append's statements as one script when it can
    /// (see `writer`); false: always one statement at a time (for a proxy
    /// in front of MySQL that refuses multi-statement queries, say).
    pub append_scripts: bool,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 100,
            cache_capacity: 100_000,
            max_attempts: 5,
            follow_interval: Duration::from_millis(100),
            max_connections: 16,
            append_scripts: true,
        }
    }
}

/// An aggregate's state with where it stands in its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// Sequence of the last event applied (0: no events).
    pub sequence: u64,
    /// Chain hash of that event (empty: no events).
    pub hash: String,
}

pub(crate) type StreamKey = (String, String);

/// Newest committed events kept in memory for the log's followers: a few
/// batches of every projector.
const RECENT_EVENTS: usize = 8_192;

/// A cached aggregate; the mutex also serialises commands on one aggregate
/// within this process, so they do not race each other.
#[derive(Default)]
pub(crate) struct Slot {
    pub state: Option<Box<dyn Any + Send + Sync>>,
    pub sequence: u64,
    pub hash: String,
}

pub(crate) struct Inner {
    pub db: DatabaseConnection,
    pub config: EventStoreConfig,
    pub appender: mpsc::Sender<AppendRequest>,
    pub head: Arc<watch::Sender<u64>>,
    pub cache: Mutex<LruCache<StreamKey, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Wakes the follower before its interval is up.
    pub nudge: Arc<tokio::sync::Notify>,
    /// The newest events this process committed.
    pub recent: Arc<RecentEvents>,
    /// Projections written in every append transaction.
    pub inline: Arc<RwLock<Vec<Arc<Inline>>>>,
}

/// The event store. Cheap to clone; all clones share one pool, cache and
/// append task.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) inner: Arc<Inner>,
}

impl EventStore {
    /// Connects to `url`, applies migrations and starts the background tasks.
    ///
    /// On MySQL the group commit runs on a thread of its own, with its own
    /// connections: each append is several round trips in series, and on a
    /// runtime busy with requests every one of them would wait its turn.
    pub async fn open(url: &str, config: EventStoreConfig) -> Result<Self, EventStoreError> {
        let db = connection::connect(url, config.max_connections).await?;
        connection::migrate(&db).await?;
        let writer = match db.get_database_backend() {
            DbBackend::MySql => Some(url),
            _ => None,
        };
        Self::start(db, config, writer).await
    }

    /// Uses an open, migrated connection (for the group commit too).
    pub async fn with_connection(db: DatabaseConnection, config: EventStoreConfig) -> Result<Self, EventStoreError> {
        Self::start(db, config, None).await
    }

    /// Starts the background tasks; the group commit on a thread of its own
    /// connected to `writer_url`, if given, else as a task on `db`.
    async fn start(
        db: DatabaseConnection,
        config: EventStoreConfig,
        writer_url: Option<&str>,
    ) -> Result<Self, EventStoreError> {
        let initial = log::head(&db).await?;
        let head = Arc::new(watch::Sender::new(initial));
        let (appender, requests) = mpsc::channel(4096);
        let recent = Arc::new(RecentEvents::new(RECENT_EVENTS));
        let inline = Arc::new(RwLock::new(Vec::new()));
        match writer_url {
            Some(url) => {
                let (inline, recent, head) = (inline.clone(), recent.clone(), head.clone());
                writer::spawn_thread(url.to_string(), inline, recent, requests, head, config.append_scripts).await?;
            }
            None => {
                let sink = Sink {
                    db: db.clone(),
                    inline: inline.clone(),
                    recent: recent.clone(),
                    read_committed: false,
                    scripts: false,
                };
                tokio::spawn(writer::run(sink, requests, head.clone()));
            }
        }
        let capacity = NonZeroUsize::new(config.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let nudge = Arc::new(tokio::sync::Notify::new());
        let inner = Arc::new(Inner {
            db,
            config,
            appender,
            head,
            cache: Mutex::new(LruCache::new(capacity)),
            nudge: nudge.clone(),
            recent,
            inline,
        });
        tokio::spawn(follow(Arc::downgrade(&inner), initial, nudge));
        Ok(Self { inner })
    }

    /// Writes `projection` in every append transaction of this process from
    /// now on (see [`InlineProjection`]); registering a name twice keeps the first.
    pub fn project_inline(&self, projection: Arc<dyn InlineProjection>) {
        let mut inline = self.inner.inline.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !inline.iter().any(|registered| registered.name() == projection.name()) {
            inline.push(Arc::new(Inline::new(projection)));
        }
    }

    /// Inline projection `name` as registered here, if this process writes it.
    fn registered(&self, name: &str) -> Option<Arc<Inline>> {
        let inline = self.inner.inline.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        inline.iter().find(|registered| registered.name() == name).cloned()
    }

    /// For a projection written inline by this process: how far its read
    /// model is known to be applied (everything this process appended up to
    /// there is in it), changing as appends commit. `None` for the others.
    pub fn inline_applied(&self, name: &str) -> Option<watch::Receiver<u64>> {
        self.registered(name).map(|registered| registered.subscribe())
    }

    /// Inline projection `name`, if this process writes it.
    pub fn inline_projection(&self, name: &str) -> Option<Arc<dyn InlineProjection>> {
        self.registered(name).map(|registered| registered.projection.clone())
    }

    /// Tells the store that the projector of inline projection `name` has
    /// stored its checkpoint at `position`, everything up to it applied.
    pub fn inline_reached(&self, name: &str, position: u64) {
        if let Some(registered) = self.registered(name) {
            registered.reached(position);
        }
    }

    /// For inline projection `name`: the checkpoint this process last stored
    /// or saw stored (`None`: not written inline here).
    pub fn inline_stored(&self, name: &str) -> Option<u64> {
        self.registered(name).map(|registered| registered.stored())
    }

    /// Tells the store that inline projection `name`'s checkpoint was read as
    /// `position`, below `expected` (what [`inline_stored`](Self::inline_stored)
    /// said before that read): its tables were replaced, and what this
    /// process's appends applied after `position` is not in them. True if
    /// that was news (no append has stored the checkpoint since).
    pub fn inline_rewound(&self, name: &str, position: u64, expected: u64) -> bool {
        self.registered(name).is_some_and(|registered| registered.rewound(position, expected))
    }

    /// The connection pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> DbBackend {
        self.inner.db.get_database_backend()
    }

    /// The highest committed position this process knows of.
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// The committed head as the database has it now, including events other
    /// processes appended that this one has not followed yet.
    pub async fn read_head(&self) -> Result<u64, EventStoreError> {
        Ok(log::head(&self.inner.db).await?)
    }

    /// A receiver that changes whenever the head moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// Waits until the head passes `after` or `timeout` elapses; returns the head.
    /// Events written by this process wake waiters at once, those of other
    /// processes within the follow interval.
    pub async fn wait_for(&self, after: u64, timeout: Duration) -> u64 {
        let mut rx = self.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|head| *head > after)).await;

        *rx.borrow()
    }

    /// Tells the store that another process has committed (the Redis stream
    /// says so, say): it looks for new events now rather than at the next
    /// `follow_interval`.
    pub fn nudge(&self) {
        self.inner.nudge.notify_one();
    }

    /// Up to `limit` events with `position > after`, in position order.
    /// What this process has just committed comes from memory, the rest
    /// from the database.
    pub async fn read_from(&self, after: u64, limit: u64) -> Result<Vec<RecordedEvent>, EventStoreError> {
        self.read_from_on(&self.inner.db, after, limit).await
    }

    /// Like [`read_from`](Self::read_from), but what is not in memory is read
    /// through `db` (a replica of the store's database): it may end before
    /// the head, where the replica does.
    pub async fn read_from_on(
        &self,
        db: &DatabaseConnection,
        after: u64,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        match self.inner.recent.after(after, limit) {
            Some(events) => Ok(events),
            None => Ok(log::read_from(db, after, limit).await?),
        }
    }

    /// Like [`read_from`](Self::read_from), but always as the database holds
    /// the log now: what audits compare against.
    pub async fn read_stored(&self, after: u64, limit: u64) -> Result<Vec<RecordedEvent>, EventStoreError> {
        Ok(log::read_from(&self.inner.db, after, limit).await?)
    }

    /// Up to `limit` events with `position > after` that match `filter`, in
    /// position order (the auditors' view of the log).
    pub async fn read_matching(
        &self,
        after: u64,
        limit: u64,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        Ok(log::read_matching(&self.inner.db, after, limit, filter).await?)
    }

    /// The whole stream of one aggregate, as stored.
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        Ok(log::read_stream(&self.inner.db, aggregate_type, aggregate_id, 0).await?)
    }

    /// Loads an aggregate from its latest snapshot plus the events after it,
    /// bypassing the cache.
    pub async fn load<A: Aggregate + 'static>(&self, id: &str) -> Result<Loaded<A>, EventStoreError> {
        let mut loaded = self.snapshot::<A>(id).await?.unwrap_or_else(|| Loaded {
            state: A::default(),
            sequence: 0,
            hash: String::new(),
        });
        self.apply_stream(id, &mut loaded).await?;
        Ok(loaded)
    }

    /// Rebuilds an aggregate from its first event, ignoring snapshots and cache.
    pub async fn replay<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, EventStoreError> {
        let mut loaded = Loaded { state: A::default(), sequence: 0, hash: String::new() };
        self.apply_stream(id, &mut loaded).await?;
        Ok(loaded)
    }

    /// Recomputes every hash chain and looks for holes (see [`chain::verify`]).
    pub async fn verify(&self) -> Result<ChainReport, EventStoreError> {
        chain::verify(&self.inner.db).await
    }

    async fn apply_stream<A: Aggregate>(&self, id: &str, loaded: &mut Loaded<A>) -> Result<(), EventStoreError> {
        for event in log::read_stream(&self.inner.db, A::TYPE, id, loaded.sequence).await? {
            loaded.state.apply(event.decode::<A>()?);
            loaded.sequence = event.sequence;
            loaded.hash = event.hash;
        }
        Ok(())
    }

    async fn snapshot<A: Aggregate>(&self, id: &str) -> Result<Option<Loaded<A>>, EventStoreError> {
        let row = self
            .inner
            .db
            .query_one(
                Query::select()
                    .columns([Snapshots::Sequence, Snapshots::State, Snapshots::Hash])
                    .from(Snapshots::Table)
                    .and_where(Expr::col(Snapshots::AggregateType).eq(A::TYPE))
                    .and_where(Expr::col(Snapshots::AggregateId).eq(id)),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("", "state")?;
        match serde_json::from_str::<A>(&state) {
            Ok(state) => Ok(Some(Loaded {
                state,
                sequence: row.try_get::<i64>("", "sequence")? as u64,
                hash: row.try_get("", "hash")?,
            })),
            Err(err) => {
                // A snapshot written by an older build: the log is the truth.
                tracing::warn!(aggregate = A::TYPE, id, %err, "ignoring unreadable snapshot");
                Ok(None)
            }
        }
    }

    /// The cache slot of one aggregate (created empty if absent).
    pub(crate) fn slot(&self, aggregate_type: &'static str, id: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = (aggregate_type.to_string(), id.to_string());
        if let Some(slot) = cache.get(&key) {
            return slot.clone();
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        cache.put(key, slot.clone());
        slot
    }

    /// Fills `slot` from storage if it holds no state of type `A`; whether it read storage.
    pub(crate) async fn fill<A: Aggregate + Clone + 'static>(
        &self,
        id: &str,
        slot: &mut Slot,
    ) -> Result<bool, EventStoreError> {
        if slot.state.as_ref().is_some_and(|s| s.is::<A>()) {
            return Ok(false);
        }
        let loaded = self.load::<A>(id).await?;
        slot.state = Some(Box::new(loaded.state));
        slot.sequence = loaded.sequence;
        slot.hash = loaded.hash;
        Ok(true)
    }

    /// Applies to `slot`'s cached state the events stored after it (another
    /// process's); whether there were any. On an error the slot is left empty.
    pub(crate) async fn catch_up<A: Aggregate + Clone + 'static>(
        &self,
        id: &str,
        slot: &mut Slot,
    ) -> Result<bool, EventStoreError> {
        let Some(state) = slot.state.take().and_then(|s| s.downcast::<A>().ok()) else { return Ok(false) };
        let mut loaded = Loaded { state: *state, sequence: slot.sequence, hash: std::mem::take(&mut slot.hash) };
        self.apply_stream(id, &mut loaded).await?;
        let moved = loaded.sequence > slot.sequence;
        *slot = Slot { state: Some(Box::new(loaded.state)), sequence: loaded.sequence, hash: loaded.hash };
        Ok(moved)
    }

    /// The current state of an aggregate, from the cache when warm.
    pub async fn current<A: Aggregate + Clone + 'static>(&self, id: &str) -> Result<Loaded<A>, EventStoreError> {
        let slot = self.slot(A::TYPE, id);
        let mut slot = slot.lock().await;
        self.fill::<A>(id, &mut slot).await?;
        let state = slot.state.as_ref().and_then(|s| s.downcast_ref::<A>()).cloned().unwrap_or_default();
        Ok(Loaded { state, sequence: slot.sequence, hash: slot.hash.clone() })
    }
}

/// Follows the log for events written by other processes: moves the head
/// (waking waiters) and drops cached aggregates they changed.
async fn follow(inner: Weak<Inner>, mut seen: u64, nudge: Arc<tokio::sync::Notify>) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => inner.config.follow_interval,
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = nudge.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        // Read while no commit of this process is between the database and
        // `recent`: what `recent` does not hold up to this head is others'.
        let head = {
            let _noting = inner.recent.noting().await;
            log::head(&inner.db).await
        };
        let head = match head {
            Ok(head) => head,
            Err(err) => {
                tracing::warn!(%err, "log follower cannot read the head");
                continue;
            }
        };
        while seen < head {
            // This process's own commits, which `recent` holds, left its
            // cache current: only what others appended needs reading.
            if let Some(end) = inner.recent.end_after(seen) {
                seen = Ord::min(end, head);
                continue;
            }
            let changed = match log::stream_heads_after(&inner.db, seen, 10_000).await {
                Ok(changed) if !changed.is_empty() => changed,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(%err, "log follower cannot read the log");
                    break;
                }
            };
            let mut cache = inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (position, aggregate_type, aggregate_id, sequence) in changed {
                seen = position;
                let key = (aggregate_type, aggregate_id);
                let stale =
                    cache.peek(&key).is_some_and(|slot| slot.try_lock().map_or(true, |s| s.sequence < sequence));
                if stale {
                    cache.pop(&key);
                }
            }
        }
        inner.head.send_if_modified(|h| {
            let newer = head > *h;
            if newer {
                *h = head;
            }
            newer
        });
    }
}
