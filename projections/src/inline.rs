//! A projection written inline: in the append transaction of every group
//! commit of this process (see `eventstore::inline`). Its projector keeps
//! running and catches up whatever the appends leave to it: events other
//! processes appended without the projection, a backlog longer than
//! [`CATCH_UP`], or an event the projection cannot apply.

use std::sync::Mutex;

use async_trait::async_trait;
use eventstore::{EventStore, InlineBatch, InlineProjection, Projected, RecordedEvent, Script, ScriptBatch};
use sea_orm::DbErr;

use crate::checkpoint;
use crate::entities::balances;
use crate::projection::{Names, Projection, decode_all};
use crate::read_models::wallets::Wallets;

/// The longest backlog an append applies before its own events; a longer one
/// is left to the projector, in its batches, rather than held in the append.
pub const CATCH_UP: u64 = 4_096;

/// Rows kept between batches: the checkpoint they were stored at, when
/// (its `updated_at_us`), and the rows.
type Kept<P> = (u64, i64, <P as Projection>::State);

/// What the batch in flight will leave kept if its transaction commits.
struct Pending<P: Projection> {
    /// The checkpoint it stores, and when.
    at: u64,
    written_at: i64,
    /// Its rows, as it saves them.
    rows: P::State,
    /// Whether it started from the kept rows, which then stay kept beside
    /// its own; otherwise they are dropped.
    onto_kept: bool,
}

/// Projection `P`, written inline.
pub struct Inline<P: Projection> {
    /// The longest backlog an append applies.
    catch_up: u64,
    /// Rows as stored when the checkpoint was at the position given
    /// ([`Projection::retain`]): good for the next batch while the checkpoint
    /// is still there, that is while nobody else has written the projection.
    /// A batch copies the rows it needs ([`Projection::kept_for`]): these
    /// stay readable ([`kept_balance`]) until its transaction commits.
    kept: Mutex<Option<Kept<P>>>,
    /// What the batch in flight will leave kept if its transaction commits.
    pending: Mutex<Option<Pending<P>>>,
}

impl<P: Projection> Default for Inline<P> {
    fn default() -> Self {
        Self::with_catch_up(CATCH_UP)
    }
}

impl<P: Projection> Inline<P> {
    /// Applies a backlog of at most `catch_up` events in an append (default [`CATCH_UP`]).
    pub fn with_catch_up(catch_up: u64) -> Self {
        Inline { catch_up, kept: Mutex::new(None), pending: Mutex::new(None) }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl<P: Projection> InlineProjection for Inline<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    async fn project(&self, batch: &InlineBatch<'_>) -> Result<Projected, DbErr> {
        // Left by a batch whose transaction did not commit.
        locked(&self.pending).take();
        let mut decoded = match decode::<P>(batch.events) {
            Some(decoded) if !decoded.is_empty() => decoded,
            Some(_) => return Ok(Projected::Irrelevant),
            None => {
                locked(&self.kept).take();
                return Ok(Projected::Left);
            }
        };
        let kept_at = locked(&self.kept).as_ref().map(|(at, written_at, _)| (*at, *written_at));
        let (txn, names, before, last) = (batch.txn, &Names::LIVE, batch.before(), batch.last());
        let now = eventstore::now_us();
        let mut backlog = Vec::new();
        // The usual case, one statement: the checkpoint stands where
        // everything up to the batch is settled (right before it, or where
        // batches of no concern to the projection left it), and moving it
        // from there locks it for the rest of the transaction. Kept rows
        // stored there name the time they were stored: a swap to the same
        // position fails the move.
        let settled = batch.settled_from;
        let written_at = kept_at.filter(|(at, _)| *at == settled).map(|(_, written_at)| written_at);
        let fast = checkpoint::advance_written_at(txn, P::NAME, names, (settled, written_at), last, now).await?;
        let (stored, stored_at) = if fast {
            (settled, written_at)
        } else {
            let (stored, stored_at) = checkpoint::read_locked(txn, P::NAME, names).await?;
            if stored > before {
                tracing::error!(
                    projection = P::NAME,
                    stored,
                    before,
                    "checkpoint ahead of the log; left to the projector"
                );
                return Ok(Projected::Left);
            }
            if stored < batch.settled_from {
                if before - stored > self.catch_up {
                    return Ok(Projected::Left);
                }
                let Some(earlier) = batch.earlier(stored).await? else { return Ok(Projected::Left) };
                backlog = earlier;
            }
            let Some(mut earlier) = decode::<P>(&backlog) else { return Ok(Projected::Left) };
            earlier.append(&mut decoded);
            decoded = earlier;
            checkpoint::set(txn, P::NAME, names, last, now).await?;
            (stored, Some(stored_at))
        };
        // Kept rows serve if the checkpoint is where and when they were
        // stored (no one else has written since) and nothing from others is
        // applied first.
        let serve = |(at, written_at, _): &Kept<P>| (*at, Some(*written_at)) == (stored, stored_at);
        let from_kept = match locked(&self.kept).as_ref() {
            Some(kept) if serve(kept) && backlog.is_empty() => Some(P::kept_for(&kept.2, &decoded)),
            _ => None,
        };
        let onto_kept = from_kept.is_some();
        let mut state = match from_kept {
            Some(rows) => P::load_after(txn, names, &decoded, rows).await?,
            None => P::load(txn, names, &decoded).await?,
        };
        for (event, view) in &decoded {
            if let Err(error) = P::apply(&mut state, event, view) {
                // Nothing but the checkpoint is written yet: put it back.
                tracing::error!(projection = P::NAME, %error, "an event does not apply; left to the projector");
                checkpoint::set(txn, P::NAME, names, stored, now).await?;
                return Ok(Projected::Left);
            }
        }
        P::save(&mut state, txn, names).await?;
        *locked(&self.pending) = Some(Pending { at: last, written_at: now, rows: state, onto_kept });
        tracing::debug!(
            projection = P::NAME,
            events = decoded.len(),
            backlog = backlog.len(),
            from = stored,
            to = last,
            "applied in the append"
        );
        Ok(Projected::Written)
    }

    fn script(&self, batch: &ScriptBatch<'_>) -> Option<(Projected, Script)> {
        // Left by a batch whose transaction did not commit.
        locked(&self.pending).take();
        // An event that does not decode or apply is left to `project`, which says so.
        let decoded = decode_all::<P>(batch.events).ok()?;
        if decoded.is_empty() {
            return Some((Projected::Irrelevant, Script::new()));
        }
        // The fast path of `project` with nothing to read: the checkpoint
        // stands where everything before the batch is settled, and the rows
        // the batch touches are kept (if the kept rows stand there too) or
        // do not exist yet.
        let (settled, last, now) = (batch.settled_from, batch.last(), eventstore::now_us());
        let (mut state, written_at) = {
            let kept = locked(&self.kept);
            let served = kept.as_ref().filter(|(at, _, _)| *at == settled);
            (
                P::without_reading(served.map(|(_, _, rows)| rows), &decoded)?,
                served.map(|(_, written_at, _)| *written_at),
            )
        };
        for (event, view) in &decoded {
            P::apply(&mut state, event, view).ok()?;
        }
        let mut script = Script::new();
        checkpoint::advance_in(&mut script, P::NAME, &Names::LIVE, (settled, written_at), last, now).ok()?;
        P::writes(&mut state, &Names::LIVE).ok()?.script(&mut script).ok()?;
        *locked(&self.pending) =
            Some(Pending { at: last, written_at: now, rows: state, onto_kept: written_at.is_some() });
        Some((Projected::Written, script))
    }

    fn committed(&self, projected: Projected) {
        if projected != Projected::Written {
            return;
        }
        // Nothing pending: the tables were reset behind the batch.
        let Some(batch) = locked(&self.pending).take() else { return };
        let mut kept = locked(&self.kept);
        let earlier = kept.take().filter(|_| batch.onto_kept).map(|(_, _, rows)| rows);
        *kept = P::retain(earlier, batch.rows).map(|rows| (batch.at, batch.written_at, rows));
    }

    fn reset(&self) {
        locked(&self.kept).take();
        locked(&self.pending).take();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A member's balance row at a store as this process's appends last stored
/// it, if the wallets projection is written inline here, the row is kept in
/// memory, and it has applied `position` or later: what a read of the table
/// could answer, without the read. A batch in flight does not hide it.
pub fn kept_balance(store: &EventStore, member: &str, at: &str, position: u64) -> Option<balances::Model> {
    let projection = store.inline_projection(Wallets::NAME)?;
    let wallets = projection.as_any().downcast_ref::<Inline<Wallets>>()?;
    let kept = locked(&wallets.kept);
    let (_, _, state) = kept.as_ref()?;
    let row = state.balances.get(&(member.to_string(), at.to_string()))?;
    (position > 0 && row.last_position as u64 >= position).then(|| row.clone())
}

/// The events of `events` that `P` reads, decoded; `None` if one cannot be.
fn decode<P: Projection>(events: &[RecordedEvent]) -> Option<Vec<(&RecordedEvent, P::Event)>> {
    decode_all::<P>(events)
        .inspect_err(
            |error| tracing::error!(projection = P::NAME, %error, "an event does not decode; left to the projector"),
        )
        .ok()
}
