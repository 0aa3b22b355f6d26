//! The projector runtime: reads the global log in batches and applies each
//! batch with its checkpoint in one transaction, so a crash at any point
//! neither skips nor repeats an event.

use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use eventstore::EventStore;
use sea_orm::TransactionTrait;
use tokio::sync::watch;
use tracing::Instrument;

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::lease::Lease;
use crate::projection::{Names, Projection, decode_all};

/// Tuning of the projectors.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Events per batch (and per transaction).
    pub batch_size: u64,
    /// Lease lifetime: a dead projector is taken over after at most this long.
    pub lease_ttl: Duration,
    /// Longest wait for new events before checking the lease again.
    pub idle_wait: Duration,
    /// How long a consumer whose last batch held nothing for it waits before
    /// reading again: fewer reads under load, at most this much added delay.
    pub coalesce_irrelevant: Duration,
    /// For a projection written inline: how soon the stored checkpoint is
    /// moved past events of no concern to it (which appends leave alone), so
    /// that replicas, audits and other processes see it as far as it is.
    pub settle_every: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            lease_ttl: Duration::from_secs(10),
            idle_wait: Duration::from_secs(1),
            coalesce_irrelevant: Duration::from_millis(20),
            settle_every: Duration::from_millis(50),
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stepped {
    /// The checkpoint afterwards.
    pub checkpoint: u64,
    /// Events read past (0: nothing new).
    pub events: u64,
    /// Of those, the events that concerned this consumer.
    pub relevant: u64,
}

/// How far a projector has come.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProjectorStatus {
    /// Projection name.
    pub name: &'static str,
    /// Whether this process holds the lease and is applying events.
    pub active: bool,
    /// Last applied position.
    pub checkpoint: u64,
    /// Head of the log as last seen.
    pub head: u64,
    /// Events applied per second over the last batches.
    pub events_per_second: f64,
}

impl ProjectorStatus {
    /// Events committed but not yet applied.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.checkpoint)
    }
}

/// Applies the next batch (up to `limit` events) of projection `P` to the
/// tables `names`. Returns the checkpoint afterwards and how many events were
/// applied (0: nothing new).
pub async fn step<P: Projection>(
    store: &EventStore,
    names: &Names,
    after: Option<u64>,
    limit: u64,
) -> Result<Stepped, ProjectionError> {
    let db = store.db();
    // A caller's idea of the checkpoint may be stale; both ways of moving it
    // below check the stored value first.
    let mut from = match after {
        Some(after) => after,
        None => checkpoint::read(db, P::NAME, names).await?,
    };
    loop {
        let events = store.read_from(from, limit).await?;
        let Some(first) = events.first() else { return Ok(Stepped { checkpoint: from, ..Stepped::default() }) };
        let last = events.last().map_or(from, |e| e.position);
        let timer = Instant::now();
        let decoded = decode_all::<P>(&events)?;
        if first.position == from + 1 && decoded.is_empty() {
            // Nothing here for this projection (a wallet's events, for the
            // members projection): move the checkpoint in one statement
            // instead of a transaction, unless someone moved it meanwhile.
            if checkpoint::advance(db, P::NAME, names, from, last, eventstore::now_us()).await? {
                return Ok(Stepped { checkpoint: last, events: events.len() as u64, relevant: 0 });
            }
            from = checkpoint::read(db, P::NAME, names).await?;
            continue;
        }
        let txn = db.begin().await?;
        let now = eventstore::now_us();
        // Moving the checkpoint first locks it for the batch (and takes
        // SQLite's write lock up front); it moves only from where this batch
        // starts, so a stale idea of it writes nothing.
        let contiguous = first.position == from + 1;
        if !contiguous || !checkpoint::advance(&txn, P::NAME, names, from, last, now).await? {
            txn.rollback().await?;
            let stored = checkpoint::read(db, P::NAME, names).await?;
            if !contiguous && stored == from {
                // The log itself skips positions: events were deleted.
                return Err(ProjectionError::Gap { after: from, next: first.position });
            }
            // Another projector, or a rebuild swapping tables in, moved the
            // checkpoint since it was read: start again from where it is.
            from = stored;
            continue;
        }
        let span = batch_span(P::NAME, &events);
        async {
            let mut state = P::load(&txn, names, &decoded).await?;
            let loaded = timer.elapsed();
            for (event, view) in &decoded {
                P::apply(&mut state, event, view)?;
            }
            let applied = timer.elapsed();
            P::save(&mut state, &txn, names).await?;
            let saved = timer.elapsed();
            txn.commit().await?;
            tracing::debug!(
                projection = P::NAME,
                events = events.len(),
                last,
                ?loaded,
                ?applied,
                ?saved,
                committed = ?timer.elapsed(),
                "batch applied"
            );
            Ok::<_, ProjectionError>(())
        }
        .instrument(span)
        .await?;
        return Ok(Stepped { checkpoint: last, events: events.len() as u64, relevant: decoded.len() as u64 });
    }
}

/// The span of a projector's batch, when traces are on: a root linked to
/// the traces of the events it applies (a batch serves many traces).
fn batch_span(projection: &'static str, events: &[eventstore::RecordedEvent]) -> tracing::Span {
    if !eventstore::trace::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: eventstore::trace::TARGET,
        parent: None,
        "projector_batch",
        otel.name = %format_args!("project {projection}"),
        projection,
        events = events.len(),
        last = events.last().map_or(0, |e| e.position),
    );
    let traced: Vec<_> = events.iter().filter_map(|e| eventstore::trace::stored_in(&e.metadata)).collect();
    eventstore::trace::link_all(&span, &traced);
    span
}

/// Something that follows the log with a checkpoint: a projection, or the
/// share distribution.
pub trait Consumer: Send + Sync + 'static {
    /// Name (of its checkpoint table and its lease).
    const NAME: &'static str;

    /// Handles the next batch of up to `limit` events after `after` (the
    /// stored checkpoint when `None`, or when `after` turns out stale);
    /// returns the checkpoint afterwards and how many events were handled.
    fn step(
        store: &EventStore,
        after: Option<u64>,
        limit: u64,
    ) -> impl Future<Output = Result<Stepped, ProjectionError>> + Send;
}

/// Projection `P` applied to its live tables.
pub struct Projector<P>(PhantomData<P>);

impl<P: Projection> Consumer for Projector<P> {
    const NAME: &'static str = P::NAME;

    async fn step(store: &EventStore, after: Option<u64>, limit: u64) -> Result<Stepped, ProjectionError> {
        step::<P>(store, &Names::LIVE, after, limit).await
    }
}

/// Runs consumer `C` until `shutdown` turns true: takes the lease (or waits
/// for it), handles batches as events arrive, and publishes its status. When
/// this process writes `C` inline, it only catches up what the appends leave.
pub async fn run<C: Consumer>(
    store: EventStore,
    config: ProjectorConfig,
    status: watch::Sender<ProjectorStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let lease = Lease::new(&format!("projector:{}", C::NAME), config.lease_ttl);
    let db = store.db().clone();
    let inline = store.inline_applied(C::NAME);
    status.send_replace(ProjectorStatus { name: C::NAME, ..ProjectorStatus::default() });
    while !*shutdown.borrow() {
        let acquired = match lease.acquire(&db).await {
            Ok(acquired) => acquired,
            Err(err) => {
                // The database is away: keep trying rather than end the task.
                tracing::error!(projection = C::NAME, %err, "cannot take the lease; retrying");
                false
            }
        };
        if !acquired {
            status.send_modify(|s| s.active = false);
            tokio::select! {
                _ = tokio::time::sleep(lease.retry_every()) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        tracing::info!(projection = C::NAME, "projector active");
        let mut renewed = Instant::now();
        let mut verified = Instant::now();
        let mut settled = Instant::now();
        let mut rate = Rate::default();
        // Where this holder left the checkpoint, so each batch need not read it first.
        let mut at: Option<u64> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if renewed.elapsed() >= lease.renew_every() {
                match lease.acquire(&db).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(projection = C::NAME, "lease lost to another process");
                        break;
                    }
                    Err(err) => {
                        tracing::error!(projection = C::NAME, %err, "cannot renew the lease; pausing");
                        break;
                    }
                }
            }
            if let Some(applied) = &inline {
                // A rebuild may have swapped in tables behind what this
                // process's appends applied: look at the stored checkpoint
                // now and then, and start from it if it went back.
                if verified.elapsed() >= config.idle_wait {
                    verified = Instant::now();
                    let expected = store.inline_stored(C::NAME).unwrap_or(0);
                    match checkpoint::read(&db, C::NAME, &Names::LIVE).await {
                        Ok(stored) if store.inline_rewound(C::NAME, stored, expected) => {
                            tracing::info!(projection = C::NAME, stored, expected, "tables replaced; catching up");
                            at = None;
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(projection = C::NAME, %err, "cannot read the checkpoint"),
                    }
                }
                let unsettled = store.inline_stored(C::NAME).is_some_and(|stored| stored < *applied.borrow());
                if unsettled && settled.elapsed() >= config.settle_every {
                    settled = Instant::now();
                    let applied = *applied.borrow();
                    settle(&store, C::NAME, applied).await;
                }
                // This process's appends write the projection: there is
                // something to catch up only when the log is ahead of them
                // (another process appended, or an append left it a batch).
                let known = at.unwrap_or(0).max(*applied.borrow());
                let head = store.head();
                if known >= head {
                    status.send_modify(|s| {
                        s.active = true;
                        s.checkpoint = known;
                        s.head = head;
                    });
                    // Still to settle: come back when it is due.
                    let settling = store.inline_stored(C::NAME).is_some_and(|stored| stored < known);
                    let due =
                        if settling { config.settle_every.saturating_sub(settled.elapsed()) } else { config.idle_wait };
                    let idle = due.min(lease.renew_every());
                    tokio::select! {
                        _ = store.wait_for(known, idle) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                // The appends move the checkpoint: start from the stored one.
                at = None;
            }
            let started = Instant::now();
            let Stepped { checkpoint, events, relevant } = match C::step(&store, at, config.batch_size).await {
                Ok(result) => result,
                Err(err) => {
                    at = None;
                    // A database hiccup or a poison event: report, back off, retry.
                    tracing::error!(projection = C::NAME, %err, "batch failed; retrying");
                    tokio::time::sleep(config.idle_wait).await;
                    continue;
                }
            };
            at = Some(checkpoint);
            if inline.is_some() {
                store.inline_reached(C::NAME, checkpoint);
            }
            let per_second = rate.record(events, started.elapsed());
            status.send_modify(|s| {
                s.active = true;
                s.checkpoint = checkpoint;
                s.head = store.head().max(checkpoint);
                s.events_per_second = per_second;
            });
            if events > 0 && relevant == 0 {
                // Nothing here concerned this consumer (a wallet's events for
                // the members projection): let more accumulate rather than
                // read the log at every commit.
                tokio::select! {
                    _ = tokio::time::sleep(config.coalesce_irrelevant) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if events < config.batch_size {
                // A short batch read everything committed: wait for the log to
                // move (at once if it already has) rather than read again.
                // Never sleep past a renewal: an idle holder must keep its lease.
                let idle = config.idle_wait.min(lease.renew_every());
                tokio::select! {
                    _ = store.wait_for(checkpoint, idle) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        status.send_modify(|s| s.active = false);
    }
    if let Err(err) = lease.release(&db).await {
        tracing::warn!(projection = C::NAME, %err, "cannot release the lease; it will expire");
    }
    Ok(())
}

/// Appends leave an inline projection's stored checkpoint where their last
/// batch for it was; what they appended since, of no concern to it, is only
/// known in memory. Stores that, so that other processes, audits and lag
/// figures see the projection as far as it is (one statement, only if nobody
/// moved the checkpoint meanwhile).
async fn settle(store: &EventStore, name: &'static str, applied: u64) {
    let Some(stored) = store.inline_stored(name) else { return };
    if stored >= applied {
        return;
    }
    match checkpoint::advance(store.db(), name, &Names::LIVE, stored, applied, eventstore::now_us()).await {
        Ok(true) => store.inline_reached(name, applied),
        // Moved since this process last saw it: by another process, or by an
        // earlier move of this one that committed though its answer was lost
        // (the database went away). Ahead, it is where the next move starts;
        // behind, the tables were swapped in, which the projector checks.
        Ok(false) => match checkpoint::read(store.db(), name, &Names::LIVE).await {
            Ok(moved) if moved > stored => store.inline_reached(name, moved),
            Ok(_) => {}
            Err(err) => tracing::warn!(projection = name, %err, "cannot read the checkpoint"),
        },
        Err(err) => tracing::warn!(projection = name, %err, "cannot move the checkpoint"),
    }
}

/// Events per second, smoothed over recent batches.
#[derive(Debug, Default)]
struct Rate {
    per_second: f64,
}

impl Rate {
    fn record(&mut self, events: u64, took: Duration) -> f64 {
        if events > 0 {
            let now = events as f64 / took.as_secs_f64().max(1e-6);
            self.per_second = if self.per_second == 0.0 { now } else { 0.8 * self.per_second + 0.2 * now };
        }
        self.per_second
    }
}
