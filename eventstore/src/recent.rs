//! The newest events this process committed, kept in memory. Followers of
//! the log (projectors, the share distribution, the relay, subscription
//! tails) mostly ask for what was just committed; they get it from here
//! without a query.
//!
//! Only a contiguous run of positions is held, and only events whose commit
//! succeeded, so an answer from here is exactly what the database would give:
//! positions are commit-ordered, so once `p` is committed every position
//! below it is too. When another process commits between two of this
//! process's batches, the run breaks; it restarts at the new batch and readers
//! of the missing positions go to the database.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::record::RecordedEvent;

/// A contiguous run of the newest committed events, up to a capacity.
pub(crate) struct RecentEvents {
    /// Shared, so that a reader copies them after letting the writer go on.
    events: Mutex<VecDeque<Arc<RecordedEvent>>>,
    capacity: usize,
    /// See [`RecentEvents::noting`].
    noting: tokio::sync::Mutex<()>,
}

impl RecentEvents {
    /// Holds up to `capacity` events.
    pub(crate) fn new(capacity: usize) -> Self {
        RecentEvents { events: Mutex::new(VecDeque::with_capacity(capacity)), capacity, noting: Default::default() }
    }

    /// Held by the group commit from just before a commit until its events
    /// are noted here, and by a reader of the log's head that tells this
    /// process's positions by what is held here: a head read under it
    /// includes no commit of this process that is not noted yet.
    pub(crate) async fn noting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.noting.lock().await
    }

    /// Takes note of events just committed, in position order.
    pub(crate) fn committed(&self, batch: Vec<RecordedEvent>) {
        let Some(first) = batch.first() else { return };
        let mut events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if events.back().is_some_and(|last| last.position + 1 != first.position) {
            events.clear();
        }
        events.extend(batch.into_iter().map(Arc::new));
        let excess = events.len().saturating_sub(self.capacity);
        events.drain(..excess);
    }

    /// The run's last position, if the run holds `after + 1` and goes past it.
    pub(crate) fn end_after(&self, after: u64) -> Option<u64> {
        let events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (first, last) = (events.front()?.position, events.back()?.position);
        (first <= after.checked_add(1)? && after < last).then_some(last)
    }

    /// Up to `limit` events after `after`, if the run holds `after + 1`;
    /// `None` sends the reader to the database.
    pub(crate) fn after(&self, after: u64, limit: u64) -> Option<Vec<RecordedEvent>> {
        let shared: Vec<Arc<RecordedEvent>> = {
            let events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let first = events.front()?.position;
            let skip = usize::try_from(after.checked_add(1)?.checked_sub(first)?).ok()?;
            if skip >= events.len() || limit == 0 {
                return None;
            }
            events.range(skip..).take(usize::try_from(limit).unwrap_or(usize::MAX)).cloned().collect()
        };
        Some(shared.iter().map(|event| RecordedEvent::clone(event)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::RecentEvents;
    use crate::record::RecordedEvent;

    fn events(positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        positions
            .map(|position| RecordedEvent {
                position,
                aggregate_type: "Wallet".into(),
                aggregate_id: "ann".into(),
                sequence: position,
                event_type: "PointsEarned".into(),
                event_version: 1,
                payload: "{}".into(),
                metadata: "{}".into(),
                recorded_at_us: 0,
                hash: String::new(),
            })
            .collect()
    }

    fn positions(found: Option<Vec<RecordedEvent>>) -> Option<Vec<u64>> {
        found.map(|events| events.iter().map(|e| e.position).collect())
    }

    #[test]
    fn answers_only_from_a_contiguous_run_that_holds_the_next_position() {
        let recent = RecentEvents::new(5);
        assert_eq!(positions(recent.after(0, 10)), None, "nothing held");
        recent.committed(events(3..=4));
        recent.committed(events(5..=6));
        assert_eq!(positions(recent.after(2, 10)), Some(vec![3, 4, 5, 6]));
        assert_eq!(positions(recent.after(4, 1)), Some(vec![5]));
        assert_eq!(positions(recent.after(1, 10)), None, "position 2 is not held");
        assert_eq!(positions(recent.after(6, 10)), None, "nothing newer is held");

        // Another process committed 7 and 8: the run restarts at 9.
        recent.committed(events(9..=10));
        assert_eq!(positions(recent.after(6, 10)), None);
        assert_eq!(positions(recent.after(8, 10)), Some(vec![9, 10]));

        // Over capacity, the oldest go.
        recent.committed(events(11..=14));
        assert_eq!(positions(recent.after(9, 10)), Some(vec![10, 11, 12, 13, 14]));
        assert_eq!(positions(recent.after(8, 10)), None, "position 9 was dropped");
    }

    #[test]
    fn the_end_of_the_run_is_named_only_from_inside_it() {
        let recent = RecentEvents::new(5);
        assert_eq!(recent.end_after(0), None, "nothing held");
        recent.committed(events(3..=6));
        assert_eq!(recent.end_after(2), Some(6));
        assert_eq!(recent.end_after(5), Some(6));
        assert_eq!(recent.end_after(1), None, "position 2 is not held");
        assert_eq!(recent.end_after(6), None, "nothing newer is held");
    }
}
