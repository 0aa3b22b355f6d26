//! Inline projections: read models written in the append transaction itself,
//! so that a command's effect is in them when the command is acknowledged
//! (Marten calls these inline projections; EventStoreDB users build them on
//! a transactional sink).
//!
//! The store knows only the hook ([`InlineProjection`]); what a projection
//! does with a batch lives with the projection. For each group commit the
//! writer hands every registered projection the batch's events, with their
//! positions, inside the transaction that holds the log head: no other
//! append, in any process, can commit between them and the projection's
//! checkpoint. A projection that cannot apply a batch (it is too far behind,
//! or an event does not apply) leaves it to its projector, which catches up
//! as it would without the hook, and the append commits; a database error
//! in a projection's statements fails the append like any other.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sea_orm::{DatabaseTransaction, DbErr};
use tokio::sync::watch;

use crate::log;
use crate::recent::RecentEvents;
use crate::record::RecordedEvent;
use crate::script::Script;

/// A projection kept up to date inside every append transaction of this process.
#[async_trait]
pub trait InlineProjection: Send + Sync + 'static {
    /// The projection's name (that of its checkpoint).
    fn name(&self) -> &'static str;

    /// Brings the projection up to the last event of `batch`, in `batch`'s
    /// transaction. Writes nothing unless it answers [`Projected::Written`].
    async fn project(&self, batch: &InlineBatch<'_>) -> Result<Projected, DbErr>;

    /// What [`project`](Self::project) would write for `batch`, as a script
    /// that needs no answer (see [`crate::script`]), if the projection can
    /// tell without reading anything: its rows are in memory (or do not
    /// exist yet) and its checkpoint is where it left it. The script fails, and the append with
    /// it, if the checkpoint is not there after all. `None`: the append
    /// runs statement by statement and calls [`project`](Self::project)
    /// (the default).
    fn script(&self, batch: &ScriptBatch<'_>) -> Option<(Projected, Script)> {
        let _ = batch;
        None
    }

    /// The transaction of the last batch [`project`](Self::project)ed
    /// committed (it is not called when it did not).
    fn committed(&self, _projected: Projected) {}

    /// Its tables were replaced behind this process (a rebuild's swap):
    /// forget whatever rows it keeps between batches.
    fn reset(&self) {}

    /// The projection as `Any`, for those who know its type.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What an inline projection did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// Its rows and its checkpoint now stand at the batch's last position.
    Written,
    /// Nothing in the batch concerns it; nothing was written.
    Irrelevant,
    /// It did not apply the batch (too far behind, or an event it cannot
    /// apply); its projector will.
    Left,
}

/// One group commit as an inline projection sees it.
pub struct InlineBatch<'a> {
    /// The append transaction (it holds the log head until commit).
    pub txn: &'a DatabaseTransaction,
    /// The batch's events, positions assigned, in order.
    pub events: &'a [RecordedEvent],
    /// The lowest stored checkpoint from which everything up to the batch is
    /// known to be applied or of no concern to the projection.
    pub settled_from: u64,
    recent: &'a RecentEvents,
}

impl InlineBatch<'_> {
    /// Position just before the batch.
    pub fn before(&self) -> u64 {
        self.events.first().map_or(0, |e| e.position - 1)
    }

    /// Position of the batch's last event.
    pub fn last(&self) -> u64 {
        self.events.last().map_or(0, |e| e.position)
    }

    /// The committed events between `after` and the batch, in order: from
    /// memory when this process committed them, else read in the transaction.
    /// `None` if the log does not hold every one of those positions.
    pub async fn earlier(&self, after: u64) -> Result<Option<Vec<RecordedEvent>>, DbErr> {
        let count = self.before().saturating_sub(after);
        if count == 0 {
            return Ok(Some(Vec::new()));
        }
        let events = match self.recent.after(after, count) {
            Some(events) if events.len() as u64 == count => events,
            _ => log::read_from(self.txn, after, count).await?,
        };
        let whole = events.len() as u64 == count && events.last().map(|e| e.position) == Some(self.before());
        Ok(whole.then_some(events))
    }
}

/// One group commit as a scripted inline projection sees it (no transaction
/// to read in: the script runs later, in one round trip).
pub struct ScriptBatch<'a> {
    /// The batch's events, positions assigned, in order.
    pub events: &'a [RecordedEvent],
    /// As [`InlineBatch::settled_from`].
    pub settled_from: u64,
}

impl ScriptBatch<'_> {
    /// Position of the batch's last event.
    pub fn last(&self) -> u64 {
        self.events.last().map_or(0, |e| e.position)
    }
}

/// A registered inline projection and what this process knows of it.
pub(crate) struct Inline {
    pub projection: Arc<dyn InlineProjection>,
    known: Mutex<Known>,
    /// `Known::applied`, for those who wait on it.
    applied: watch::Sender<u64>,
}

/// Where an inline projection stands, as far as this process knows.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    /// The checkpoint this process last saw stored.
    stored: u64,
    /// Everything up to here is in the read model; nothing after `stored`
    /// up to here concerns the projection. Goes back only when the tables
    /// are found replaced ([`Inline::rewound`]).
    applied: u64,
}

impl Inline {
    pub(crate) fn new(projection: Arc<dyn InlineProjection>) -> Self {
        Inline { projection, known: Mutex::new(Known::default()), applied: watch::Sender::new(0) }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.projection.name()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The batch `events`, with what is known to be settled before it.
    pub(crate) fn batch<'a>(
        &self,
        txn: &'a DatabaseTransaction,
        events: &'a [RecordedEvent],
        recent: &'a RecentEvents,
    ) -> InlineBatch<'a> {
        InlineBatch { txn, events, settled_from: self.settled_from(events), recent }
    }

    /// The projection's script for `events`, if it can write one.
    pub(crate) fn script(&self, events: &[RecordedEvent]) -> Option<(Projected, Script)> {
        self.projection.script(&ScriptBatch { events, settled_from: self.settled_from(events) })
    }

    fn settled_from(&self, events: &[RecordedEvent]) -> u64 {
        let before = events.first().map_or(0, |e| e.position - 1);
        let known = *self.known();
        if known.applied == before { known.stored.min(before) } else { before }
    }

    /// The batch `(before, last]` committed after `projected`.
    pub(crate) fn committed(&self, before: u64, last: u64, projected: Projected) {
        self.projection.committed(projected);
        let mut known = self.known();
        match projected {
            Projected::Written => *known = Known { stored: last, applied: last.max(known.applied) },
            // Only a run of batches with nothing between them stays settled.
            Projected::Irrelevant if known.applied == before => known.applied = last,
            Projected::Irrelevant | Projected::Left => {}
        }
        self.publish(known.applied);
    }

    /// The projection's projector stored checkpoint `position`, having
    /// applied everything up to it.
    pub(crate) fn reached(&self, position: u64) {
        let mut known = self.known();
        // What was settled after the old stored checkpoint stays settled
        // after a later one.
        known.stored = known.stored.max(position);
        known.applied = known.applied.max(position);
        self.publish(known.applied);
    }

    /// The checkpoint this process last stored or saw stored.
    pub(crate) fn stored(&self) -> u64 {
        self.known().stored
    }

    /// The stored checkpoint was read as `position`, below `expected`, what
    /// this process knew stored before that read: the tables were replaced
    /// (a rebuild swapped them in). Unless an append has stored it again
    /// since, everything after `position` counts as not applied. Whether it
    /// was reset.
    pub(crate) fn rewound(&self, position: u64, expected: u64) -> bool {
        let mut known = self.known();
        if position >= expected || known.stored != expected {
            return false;
        }
        *known = Known { stored: position, applied: position };
        self.projection.reset();
        self.applied.send_replace(position);
        true
    }

    fn publish(&self, applied: u64) {
        self.applied.send_if_modified(|published| {
            let moved = applied > *published;
            *published = (*published).max(applied);
            moved
        });
    }
}
