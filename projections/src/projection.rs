//! What a projection is: a named set of read-model tables, folded from the
//! log one batch at a time.

use std::future::Future;

use eventstore::RecordedEvent;
use sea_orm::{DatabaseTransaction, DbErr};

use crate::error::ProjectionError;
use crate::table::{Difference, Writes};

/// Which copy of a projection's tables to use: the live ones, or the shadow
/// copies a rebuild fills before they are swapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    suffix: &'static str,
}

/// Suffix of the shadow tables of a rebuild.
pub(crate) const SHADOW_SUFFIX: &str = "__rebuild";
/// Suffix the replaced tables carry for the moment of the swap.
pub(crate) const RETIRED_SUFFIX: &str = "__retired";

impl Names {
    /// The live tables.
    pub const LIVE: Names = Names { suffix: "" };
    /// The shadow tables of a rebuild.
    pub const SHADOW: Names = Names { suffix: SHADOW_SUFFIX };

    /// The actual name of table `base`.
    pub fn table(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }
}

/// A projection: its tables (plus `<name>_checkpoint`) and how events change them.
///
/// A batch is applied as: [`Projection::decode`] the events it reads,
/// [`Projection::load`] the rows they touch,
/// [`Projection::apply`] each event to them in memory, [`Projection::save`]
/// what changed, all in the transaction that also moves the checkpoint. The
/// audit folds the whole log with the same `apply` into an empty state and
/// compares it with [`Projection::dump`].
pub trait Projection: Send + Sync + 'static {
    /// Name (also of its checkpoint table, `<NAME>_checkpoint`, and of its lease).
    const NAME: &'static str;
    /// Its read-model tables.
    const TABLES: &'static [&'static str];
    /// The rows in memory.
    type State: Default + Send;
    /// An event as this projection reads it, decoded once per batch.
    type Event: Send + Sync;

    /// Decodes `event` if this projection reads it (`None`: it does not).
    fn decode(event: &RecordedEvent) -> Result<Option<Self::Event>, ProjectionError>;

    /// Loads the rows the decoded `events` will read or change.
    fn load(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, Self::Event)],
    ) -> impl Future<Output = Result<Self::State, DbErr>> + Send;

    /// What a projection written inline keeps in memory once a batch has
    /// committed: the rows it had `kept`, if they are still as stored, with
    /// the `batch`'s rows, just saved, laid over them. Rows exactly as
    /// stored (default: nothing).
    fn retain(kept: Option<Self::State>, batch: Self::State) -> Option<Self::State> {
        drop((kept, batch));
        None
    }

    /// A copy of the rows of `kept` (see [`Projection::retain`]) that the
    /// decoded `events` will read or change: the kept rows stay readable
    /// while the batch runs (default: none).
    fn kept_for(kept: &Self::State, events: &[(&RecordedEvent, Self::Event)]) -> Self::State {
        let _ = (kept, events);
        Self::State::default()
    }

    /// Like [`Projection::load`], starting from rows `kept` by
    /// [`Projection::kept_for`], which are as stored: reads only what they
    /// lack (default: everything, as `load`).
    fn load_after(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, Self::Event)],
        kept: Self::State,
    ) -> impl Future<Output = Result<Self::State, DbErr>> + Send {
        drop(kept);
        Self::load(txn, names, events)
    }

    /// The rows the decoded `events` will read or change, if they can be had
    /// without reading the tables: from `kept` (see [`Projection::retain`]),
    /// given when it is still as stored, or known not to exist yet. `None`:
    /// they must be read (the default).
    fn without_reading(kept: Option<&Self::State>, events: &[(&RecordedEvent, Self::Event)]) -> Option<Self::State> {
        let _ = (kept, events);
        None
    }

    /// Applies one decoded event to the rows in memory.
    fn apply(state: &mut Self::State, event: &RecordedEvent, decoded: &Self::Event) -> Result<(), ProjectionError>;

    /// The statements that write the changed rows, to run one by one
    /// ([`Projection::save`]) or in a script; the changes are then forgotten.
    fn writes(state: &mut Self::State, names: &Names) -> Result<Writes, DbErr>;

    /// Writes the changed rows.
    fn save(
        state: &mut Self::State,
        txn: &DatabaseTransaction,
        names: &Names,
    ) -> impl Future<Output = Result<(), DbErr>> + Send {
        async move { Self::writes(state, names)?.run(txn).await }
    }

    /// Every stored row.
    fn dump(txn: &DatabaseTransaction, names: &Names) -> impl Future<Output = Result<Self::State, DbErr>> + Send;

    /// Every difference between a replayed and a stored state.
    fn diff(expected: &Self::State, found: &Self::State) -> Vec<Difference>;
}

/// The events of `events` that `P` reads, each with its decoded form, in order.
pub(crate) fn decode_all<P: Projection>(
    events: &[RecordedEvent],
) -> Result<Vec<(&RecordedEvent, P::Event)>, ProjectionError> {
    let mut decoded = Vec::with_capacity(events.len());
    for event in events {
        if let Some(view) = P::decode(event)? {
            decoded.push((event, view));
        }
    }
    Ok(decoded)
}
