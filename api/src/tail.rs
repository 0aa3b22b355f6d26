//! Live tails for subscriptions: one task per process reads what is new and
//! broadcasts it, however many clients subscribe; each subscription filters
//! what it wants.
//!
//! Two sources: the event log itself (auditors' `eventLog`, a post's social
//! status) and the ledger read model once the wallets projection has applied
//! it (`walletUpdates`, `storeActivity`). Every item has a position, unique
//! and increasing. A [`Cursor`] that starts behind the tail, or falls behind
//! the broadcast buffer, reads from the database until it reaches what the
//! tail has published, then follows the broadcast, skipping what it has seen:
//! every item once, in order, with no gap at the seam.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstore::{EventStore, RecordedEvent};
use projections::entities::ledger;
use projections::{Names, checkpoint};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::{OnceCell, broadcast};

use crate::checkpoints::Checkpoints;

/// Items read per database round trip.
const PAGE: u64 = 1_000;
/// Items a slow subscriber may fall behind before it catches up from the database.
const BUFFER: usize = 4_096;
/// Longest wait of the ledger tail for the wallets projection before it
/// looks at the log's head again.
const LEDGER_WAIT: Duration = Duration::from_millis(500);

/// What a read of a source found.
pub struct Batch<T> {
    /// Items in position order.
    items: Vec<T>,
    /// Everything up to here has been read (at least the last item's position).
    upto: u64,
    /// When to read again.
    next: Next,
}

/// When a tail reads its source again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// At once: the page was full, or the source waits by itself.
    Now,
    /// When the log moves.
    OnNewEvents,
}

/// Something with positions to follow.
pub trait Source: Send + Sync + 'static {
    /// What is published.
    type Item: Clone + Send + Sync + 'static;
    /// The item's position.
    fn position(item: &Self::Item) -> u64;
    /// Where a tail starting now begins (it publishes what comes after).
    fn start(&self) -> impl Future<Output = Result<u64, String>> + Send;
    /// Up to `limit` items after `after` that are ready to be seen.
    fn read(&self, after: u64, limit: u64) -> impl Future<Output = Result<Batch<Self::Item>, String>> + Send;
    /// How far everything the log holds now is ready to be seen (waiting a
    /// while for it, as [`Source::read`] does): where a tail nobody follows
    /// moves on to without reading.
    fn ready(&self) -> impl Future<Output = u64> + Send;
}

/// The event log.
pub struct LogSource(pub EventStore);

impl Source for LogSource {
    type Item = Arc<RecordedEvent>;

    fn position(item: &Self::Item) -> u64 {
        item.position
    }

    async fn start(&self) -> Result<u64, String> {
        self.0.read_head().await.map_err(|e| e.to_string())
    }

    async fn read(&self, after: u64, limit: u64) -> Result<Batch<Self::Item>, String> {
        let events = self.0.read_from(after, limit).await.map_err(|e| e.to_string())?;
        let upto = events.last().map_or(after, |e| e.position);
        let next = if events.len() as u64 == limit { Next::Now } else { Next::OnNewEvents };
        Ok(Batch { items: events.into_iter().map(Arc::new).collect(), upto, next })
    }

    async fn ready(&self) -> u64 {
        self.0.head()
    }
}

/// The ledger read model, as far as the wallets projection has applied the log.
pub struct LedgerSource {
    store: EventStore,
    /// Where the wallets projection is: a read waits on it rather than polling.
    checkpoints: Checkpoints,
}

impl Source for LedgerSource {
    type Item = Arc<ledger::Model>;

    fn position(item: &Self::Item) -> u64 {
        item.position as u64
    }

    async fn start(&self) -> Result<u64, String> {
        checkpoint::read(self.store.db(), "wallets", &Names::LIVE).await.map_err(|e| e.to_string())
    }

    async fn read(&self, after: u64, limit: u64) -> Result<Batch<Self::Item>, String> {
        if after >= self.store.head() {
            return Ok(Batch { items: Vec::new(), upto: after, next: Next::OnNewEvents });
        }
        // Committed events wait to be applied: until the projection applies
        // the next one (or a while passes, to look at the head again).
        let applied = self.applied(after + 1).await;
        if applied <= after {
            return Ok(Batch { items: Vec::new(), upto: after, next: Next::Now });
        }
        let rows = ledger::Entity::find()
            .filter(ledger::Column::Position.gt(after as i64))
            .filter(ledger::Column::Position.lte(applied as i64))
            .order_by_asc(ledger::Column::Position)
            .limit(limit)
            .all(self.store.db())
            .await
            .map_err(|e| e.to_string())?;
        let full = rows.len() as u64 == limit;
        let upto = if full { rows.last().map_or(after, |r| r.position as u64) } else { applied };
        Ok(Batch { items: rows.into_iter().map(Arc::new).collect(), upto, next: Next::Now })
    }

    async fn ready(&self) -> u64 {
        self.applied(self.store.head()).await
    }
}

impl LedgerSource {
    /// How far the wallets projection has applied the log once it reaches
    /// `position`, or [`LEDGER_WAIT`] passes.
    async fn applied(&self, position: u64) -> u64 {
        match self.checkpoints.wait("wallets", position, LEDGER_WAIT).await {
            Ok(at) | Err(at) => at,
        }
    }
}

/// A source being followed: the broadcast and how far it has published.
pub struct Tail<S: Source> {
    source: Arc<S>,
    sender: broadcast::Sender<S::Item>,
    /// Sends happen under this lock, so a new receiver and this position agree.
    published: Arc<Mutex<u64>>,
}

impl<S: Source> Tail<S> {
    /// Starts following `source`; the task ends when `store` shuts down.
    async fn start(source: S, store: &EventStore) -> Result<Self, String> {
        let source = Arc::new(source);
        let start = source.start().await?;
        let (sender, _) = broadcast::channel(BUFFER);
        let tail = Tail { source: source.clone(), sender: sender.clone(), published: Arc::new(Mutex::new(start)) };
        let published = tail.published.clone();
        let mut heads = store.subscribe();
        tokio::spawn(async move {
            let mut after = start;
            loop {
                heads.borrow_and_update();
                if sender.receiver_count() == 0 {
                    // Nobody follows: nothing to read. The position moves on
                    // under the lock subscribers take, so one that joins
                    // meanwhile is followed from where it joined.
                    let ready = source.ready().await;
                    let idle = {
                        let mut published = published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        let idle = sender.receiver_count() == 0;
                        if idle {
                            *published = (*published).max(ready);
                            after = *published;
                        }
                        idle
                    };
                    if idle {
                        // Behind the log (its projection is still applying
                        // it): look again, else wait for the log to move.
                        if after < *heads.borrow() {
                            continue;
                        }
                        if heads.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                let batch = match source.read(after, PAGE).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::warn!(%error, "a subscription tail could not read; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                {
                    let mut published = published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for item in batch.items {
                        // No receivers is not an error: nobody is subscribed right now.
                        let _ = sender.send(item);
                    }
                    *published = batch.upto;
                }
                after = batch.upto;
                match batch.next {
                    Next::Now => {}
                    Next::OnNewEvents => {
                        if heads.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(tail)
    }

    /// How far it has published: a subscriber joining now is followed from here.
    fn published(&self) -> u64 {
        *self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver of everything published after the returned position.
    fn subscribe(&self) -> (broadcast::Receiver<S::Item>, u64) {
        let published = self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (self.sender.subscribe(), *published)
    }
}

/// What a subscriber wants of a tail's items.
type Keep<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// One subscriber's place in a tail: items after `after` that pass `keep`.
pub struct Cursor<S: Source> {
    tail: Arc<Tail<S>>,
    after: u64,
    keep: Keep<S::Item>,
    live: Option<broadcast::Receiver<S::Item>>,
    ready: std::collections::VecDeque<S::Item>,
}

impl<S: Source> Cursor<S> {
    /// The next item that passes the filter; `None` when the tail has stopped.
    pub async fn next(&mut self) -> Option<S::Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let Some(live) = self.live.as_mut() else {
                self.catch_up().await;
                continue;
            };
            match live.recv().await {
                Ok(item) => {
                    let position = S::position(&item);
                    if position <= self.after {
                        continue;
                    }
                    self.after = position;
                    if (self.keep)(&item) {
                        return Some(item);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.live = None,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Joins the broadcast if nothing published is missing; otherwise reads
    /// the next page from the database.
    async fn catch_up(&mut self) {
        let (receiver, published) = self.tail.subscribe();
        if self.after >= published {
            self.live = Some(receiver);
            return;
        }
        drop(receiver);
        match self.tail.source.read(self.after, PAGE).await {
            Ok(batch) => {
                self.ready.extend(batch.items.into_iter().filter(|item| (self.keep)(item)));
                self.after = self.after.max(batch.upto);
            }
            Err(error) => {
                tracing::warn!(%error, "a subscription could not catch up; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The tails of one process, started by the first subscription that needs each.
pub struct Tails {
    store: EventStore,
    checkpoints: Checkpoints,
    log: OnceCell<Arc<Tail<LogSource>>>,
    ledger: OnceCell<Arc<Tail<LedgerSource>>>,
}

impl Tails {
    /// Tails over `store`'s log and read models; `checkpoints` tells how far
    /// the read models are.
    pub fn new(store: EventStore, checkpoints: Checkpoints) -> Self {
        Tails { store, checkpoints, log: OnceCell::new(), ledger: OnceCell::new() }
    }

    /// Log events after `after` (from now when `None`) that pass `keep`.
    pub async fn log(
        &self,
        after: Option<u64>,
        keep: impl Fn(&Arc<RecordedEvent>) -> bool + Send + Sync + 'static,
    ) -> Result<Cursor<LogSource>, String> {
        let tail = self
            .log
            .get_or_try_init(|| async { Tail::start(LogSource(self.store.clone()), &self.store).await.map(Arc::new) })
            .await?;
        Ok(cursor(tail, after, keep))
    }

    /// Ledger entries applied from now on that pass `keep`.
    pub async fn ledger(
        &self,
        keep: impl Fn(&Arc<ledger::Model>) -> bool + Send + Sync + 'static,
    ) -> Result<Cursor<LedgerSource>, String> {
        let tail = self
            .ledger
            .get_or_try_init(|| async {
                let source = LedgerSource { store: self.store.clone(), checkpoints: self.checkpoints.clone() };
                Tail::start(source, &self.store).await.map(Arc::new)
            })
            .await?;
        Ok(cursor(tail, None, keep))
    }
}

impl Tails {
    /// How far the ledger tail has published, if it was started: a
    /// subscriber joining now gets what is applied after this position.
    pub fn ledger_published(&self) -> Option<u64> {
        self.ledger.get().map(|tail| tail.published())
    }
}

fn cursor<S: Source>(
    tail: &Arc<Tail<S>>,
    after: Option<u64>,
    keep: impl Fn(&S::Item) -> bool + Send + Sync + 'static,
) -> Cursor<S> {
    let (receiver, published) = tail.subscribe();
    let after = after.unwrap_or(published);
    // Starting behind the tail: catch up from the database first.
    let live = (after >= published).then_some(receiver);
    Cursor { tail: tail.clone(), after, keep: Box::new(keep), live, ready: Default::default() }
}
