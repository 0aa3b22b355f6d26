//! Live tails for subscriptions: one task per process reads what is new and
//! hands each item to the subscriptions that want it, however many clients
//! subscribe.
//!
//! Two sources: the event log itself (auditors' `eventLog`, a post's social
//! status) and the ledger read model once the wallets projection has applied
//! it (`walletUpdates`, `storeActivity`). Every item has a position, unique
//! and increasing, and keys (a member and a store; an aggregate). A
//! subscription follows everything or one key; the tail finds an item's
//! followers by its keys in a map, so an item costs work for the
//! subscriptions that want it only, not for every subscription of the
//! process (at 1,000 updates a second over 50,000 subscriptions, waking every
//! subscription for every item was 50 million wake-ups a second). Each
//! follower has an inbox of its own. A [`Cursor`] that starts behind the tail,
//! or falls more than [`BUFFER`] items behind, reads from the database until it
//! reaches what the tail has published, then follows its inbox, skipping what
//! it has seen: every item once, in order, with no gap at the seam.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use eventstore::{EventStore, RecordedEvent};
use projections::entities::ledger;
use projections::{Names, checkpoint};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::OnceCell;

use crate::checkpoints::Checkpoints;
use crate::replicas::Reads;

/// Items read per database round trip.
const PAGE: u64 = 1_000;
/// Items a slow subscriber may fall behind before it catches up from the database.
pub const BUFFER: usize = 4_096;
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
    /// What a subscription may follow of it.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// The item's position.
    fn position(item: &Self::Item) -> u64;
    /// The keys the item is found by.
    fn keys(item: &Self::Item) -> Vec<Self::Key>;
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
pub struct LogSource {
    store: EventStore,
    /// Where a subscriber behind the tail catches up: a replica when there are any.
    reads: Reads,
}

/// An aggregate of the log: the key of its events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateKey {
    /// `Post`, `Wallet`, ...
    pub aggregate_type: String,
    /// Its id.
    pub aggregate_id: String,
}

impl Source for LogSource {
    type Item = Arc<RecordedEvent>;
    type Key = AggregateKey;

    fn position(item: &Self::Item) -> u64 {
        item.position
    }

    fn keys(item: &Self::Item) -> Vec<AggregateKey> {
        vec![AggregateKey { aggregate_type: item.aggregate_type.clone(), aggregate_id: item.aggregate_id.clone() }]
    }

    async fn start(&self) -> Result<u64, String> {
        self.store.read_head().await.map_err(|e| e.to_string())
    }

    async fn read(&self, after: u64, limit: u64) -> Result<Batch<Self::Item>, String> {
        let mut events = Vec::new();
        if self.reads.has_replicas() {
            let replica = self.reads.choose(None).await;
            events = self.store.read_from_on(&replica, after, limit).await.map_err(|e| e.to_string())?;
        }
        if events.is_empty() {
            // No replica, or it has nothing past `after` yet: the primary has.
            events = self.store.read_from(after, limit).await.map_err(|e| e.to_string())?;
        }
        let upto = events.last().map_or(after, |e| e.position);
        let next = if events.len() as u64 == limit { Next::Now } else { Next::OnNewEvents };
        Ok(Batch { items: events.into_iter().map(Arc::new).collect(), upto, next })
    }

    async fn ready(&self) -> u64 {
        self.store.head()
    }
}

/// The ledger read model, as far as the wallets projection has applied the log.
pub struct LedgerSource {
    store: EventStore,
    /// Where the wallets projection is: a read waits on it rather than polling.
    checkpoints: Checkpoints,
}

/// What a ledger entry is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LedgerKey {
    /// The member whose points moved.
    Member(String),
    /// The store they moved at.
    Store(String),
}

impl Source for LedgerSource {
    type Item = Arc<ledger::Model>;
    type Key = LedgerKey;

    fn position(item: &Self::Item) -> u64 {
        item.position as u64
    }

    fn keys(item: &Self::Item) -> Vec<LedgerKey> {
        vec![LedgerKey::Member(item.member_id.clone()), LedgerKey::Store(item.store_id.clone())]
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

/// What a subscription follows of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest<K> {
    /// Every item.
    All,
    /// The items found by this key.
    Key(K),
}

impl<K: PartialEq> Interest<K> {
    fn wants<S: Source<Key = K>>(&self, item: &S::Item) -> bool {
        match self {
            Interest::All => true,
            Interest::Key(key) => S::keys(item).contains(key),
        }
    }
}

/// One follower's items on their way from the tail to its cursor.
struct Inbox<T> {
    queue: Mutex<Queue<T>>,
}

struct Queue<T> {
    items: VecDeque<T>,
    /// The cursor waiting for the next item.
    waker: Option<Waker>,
    /// More than [`BUFFER`] items were waiting: the rest were not kept.
    lagged: bool,
    /// The tail has stopped.
    closed: bool,
}

/// What a cursor finds in its inbox.
enum Delivery<T> {
    Item(T),
    Lagged,
    Closed,
}

impl<T> Inbox<T> {
    fn new(closed: bool) -> Self {
        Inbox { queue: Mutex::new(Queue { items: VecDeque::new(), waker: None, lagged: false, closed }) }
    }

    fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, item: T) {
        let waker = {
            let mut queue = self.queue();
            if queue.lagged || queue.closed {
                return;
            }
            if queue.items.len() >= BUFFER {
                // The cursor reads what it missed from the database; the
                // memory goes now rather than when it catches up.
                queue.lagged = true;
                queue.items = VecDeque::new();
            } else {
                queue.items.push_back(item);
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut queue = self.queue();
            queue.closed = true;
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Delivery<T>> {
        let mut queue = self.queue();
        if let Some(item) = queue.items.pop_front() {
            if queue.items.is_empty() && queue.items.capacity() > 16 {
                // An idle follower keeps no burst's worth of room.
                queue.items = VecDeque::new();
            }
            return Poll::Ready(Delivery::Item(item));
        }
        if queue.lagged {
            return Poll::Ready(Delivery::Lagged);
        }
        if queue.closed {
            return Poll::Ready(Delivery::Closed);
        }
        match &mut queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Followers' inboxes by their ids.
type Inboxes<T> = HashMap<u64, Arc<Inbox<T>>>;

/// Who follows a tail, and how far it has published.
struct Followers<S: Source> {
    /// Everything up to here has been handed out: a follower joining now
    /// gets what comes after.
    published: u64,
    next_id: u64,
    everything: Inboxes<S::Item>,
    by_key: HashMap<S::Key, Inboxes<S::Item>>,
    /// The tail has stopped: a follower joining now finds its inbox closed.
    stopped: bool,
}

impl<S: Source> Followers<S> {
    fn is_empty(&self) -> bool {
        self.everything.is_empty() && self.by_key.is_empty()
    }

    /// Hands `item` to the followers that want it.
    fn publish(&self, item: &S::Item) {
        for inbox in self.everything.values() {
            inbox.push(item.clone());
        }
        if self.by_key.is_empty() {
            return;
        }
        for key in S::keys(item) {
            for inbox in self.by_key.get(&key).into_iter().flat_map(HashMap::values) {
                inbox.push(item.clone());
            }
        }
    }

    fn join(&mut self, interest: &Interest<S::Key>) -> Membership<S::Item> {
        let id = self.next_id;
        self.next_id += 1;
        let inbox = Arc::new(Inbox::new(self.stopped));
        match interest {
            Interest::All => self.everything.insert(id, inbox.clone()),
            Interest::Key(key) => self.by_key.entry(key.clone()).or_default().insert(id, inbox.clone()),
        };
        Membership { id, inbox }
    }

    fn leave(&mut self, id: u64, interest: &Interest<S::Key>) {
        match interest {
            Interest::All => {
                self.everything.remove(&id);
            }
            Interest::Key(key) => {
                if let Some(inboxes) = self.by_key.get_mut(key) {
                    inboxes.remove(&id);
                    if inboxes.is_empty() {
                        self.by_key.remove(key);
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        for inbox in self.everything.values().chain(self.by_key.values().flat_map(HashMap::values)) {
            inbox.close();
        }
    }
}

/// A cursor's place among the followers.
struct Membership<T> {
    id: u64,
    inbox: Arc<Inbox<T>>,
}

/// A source being followed: who follows it and how far it has published.
pub struct Tail<S: Source> {
    source: Arc<S>,
    /// Items are handed out under this lock, so a new follower and the
    /// published position agree.
    followers: Arc<Mutex<Followers<S>>>,
}

impl<S: Source> Tail<S> {
    /// Starts following `source`; the task ends when `store` shuts down.
    async fn start(source: S, store: &EventStore) -> Result<Self, String> {
        let source = Arc::new(source);
        let start = source.start().await?;
        let followers = Arc::new(Mutex::new(Followers {
            published: start,
            next_id: 0,
            everything: HashMap::new(),
            by_key: HashMap::new(),
            stopped: false,
        }));
        let tail = Tail { source: source.clone(), followers: followers.clone() };
        let heads = store.subscribe();
        tokio::spawn(async move {
            follow(&*source, &followers, heads, start).await;
            lock(&followers).stop();
        });
        Ok(tail)
    }

    fn followers(&self) -> MutexGuard<'_, Followers<S>> {
        lock(&self.followers)
    }

    /// How far it has published: a subscriber joining now is followed from here.
    fn published(&self) -> u64 {
        self.followers().published
    }
}

fn lock<S: Source>(followers: &Mutex<Followers<S>>) -> MutexGuard<'_, Followers<S>> {
    followers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tail's task: reads `source` after `after` as the log moves and hands
/// out what it reads, until the log's watch ends.
async fn follow<S: Source>(
    source: &S,
    followers: &Mutex<Followers<S>>,
    mut heads: tokio::sync::watch::Receiver<u64>,
    mut after: u64,
) {
    loop {
        heads.borrow_and_update();
        if lock(followers).is_empty() {
            // Nobody follows: nothing to read. The position moves on
            // under the lock subscribers take, so one that joins
            // meanwhile is followed from where it joined.
            let ready = source.ready().await;
            let idle = {
                let mut followers = lock(followers);
                let idle = followers.is_empty();
                if idle {
                    followers.published = followers.published.max(ready);
                    after = followers.published;
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
            let mut followers = lock(followers);
            for item in &batch.items {
                followers.publish(item);
            }
            followers.published = batch.upto;
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
}

/// One subscriber's place in a tail: the items after `after` it is interested in.
pub struct Cursor<S: Source> {
    tail: Arc<Tail<S>>,
    interest: Interest<S::Key>,
    after: u64,
    /// Following the tail (`None`: catching up from the database).
    live: Option<Membership<S::Item>>,
    ready: VecDeque<S::Item>,
}

impl<S: Source> Cursor<S> {
    /// The next item it is interested in; `None` when the tail has stopped.
    pub async fn next(&mut self) -> Option<S::Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let Some(live) = &self.live else {
                // Boxed: the database read makes this future several times
                // larger than following the inbox, and every subscription's
                // stream keeps room for it while it lives.
                Box::pin(self.catch_up()).await;
                continue;
            };
            let inbox = live.inbox.clone();
            match std::future::poll_fn(|cx| inbox.poll_next(cx)).await {
                Delivery::Item(item) => {
                    let position = S::position(&item);
                    if position <= self.after {
                        continue;
                    }
                    self.after = position;
                    return Some(item);
                }
                Delivery::Lagged => self.leave(),
                Delivery::Closed => return None,
            }
        }
    }

    /// Joins the followers if nothing published is missing; otherwise reads
    /// the next page from the database.
    async fn catch_up(&mut self) {
        {
            let mut followers = self.tail.followers();
            if self.after >= followers.published {
                self.live = Some(followers.join(&self.interest));
                return;
            }
        }
        match self.tail.source.read(self.after, PAGE).await {
            Ok(batch) => {
                let interest = &self.interest;
                self.ready.extend(batch.items.into_iter().filter(|item| interest.wants::<S>(item)));
                self.after = self.after.max(batch.upto);
            }
            Err(error) => {
                tracing::warn!(%error, "a subscription could not catch up; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn leave(&mut self) {
        if let Some(live) = self.live.take() {
            self.tail.followers().leave(live.id, &self.interest);
        }
    }
}

impl<S: Source> Drop for Cursor<S> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The tails of one process, started by the first subscription that needs each.
pub struct Tails {
    store: EventStore,
    reads: Reads,
    checkpoints: Checkpoints,
    log: OnceCell<Arc<Tail<LogSource>>>,
    ledger: OnceCell<Arc<Tail<LedgerSource>>>,
}

impl Tails {
    /// Tails over `store`'s log and read models; `checkpoints` tells how far
    /// the read models are, `reads` where subscribers behind the log catch up.
    pub fn new(store: EventStore, reads: Reads, checkpoints: Checkpoints) -> Self {
        Tails { store, reads, checkpoints, log: OnceCell::new(), ledger: OnceCell::new() }
    }

    /// Log events after `after` (from now when `None`) of `interest`.
    pub async fn log(&self, after: Option<u64>, interest: Interest<AggregateKey>) -> Result<Cursor<LogSource>, String> {
        let tail = self
            .log
            // Boxed, as below: started once, but a subscription's resolver
            // (and so its stream) would otherwise keep room for the start.
            .get_or_try_init(|| {
                Box::pin(async {
                    let source = LogSource { store: self.store.clone(), reads: self.reads.clone() };
                    Tail::start(source, &self.store).await.map(Arc::new)
                })
            })
            .await?;
        Ok(cursor(tail, after, interest))
    }

    /// Ledger entries of `interest` applied from now on.
    pub async fn ledger(&self, interest: Interest<LedgerKey>) -> Result<Cursor<LedgerSource>, String> {
        let tail = self
            .ledger
            .get_or_try_init(|| {
                Box::pin(async {
                    let source = LedgerSource { store: self.store.clone(), checkpoints: self.checkpoints.clone() };
                    Tail::start(source, &self.store).await.map(Arc::new)
                })
            })
            .await?;
        Ok(cursor(tail, None, interest))
    }
}

impl Tails {
    /// How far the ledger tail has published, if it was started: a
    /// subscriber joining now gets what is applied after this position.
    pub fn ledger_published(&self) -> Option<u64> {
        self.ledger.get().map(|tail| tail.published())
    }
}

fn cursor<S: Source>(tail: &Arc<Tail<S>>, after: Option<u64>, interest: Interest<S::Key>) -> Cursor<S> {
    let (after, live) = {
        let mut followers = tail.followers();
        let after = after.unwrap_or(followers.published);
        // Starting behind the tail: catch up from the database first.
        let live = (after >= followers.published).then(|| followers.join(&interest));
        (after, live)
    };
    Cursor { tail: tail.clone(), interest, after, live, ready: VecDeque::new() }
}
