//! Read-your-writes without a query per waiter: while anyone waits for a
//! projection, one task per projection watches its checkpoint and wakes every
//! waiter whose position it has reached.
//!
//! A projection this process writes inline needs none of this for the
//! appends of this process: it is applied when they commit, and the store
//! says so (`EventStore::inline_applied`).
//!
//! When the projector runs in this process and holds its lease, the task
//! follows the status it publishes after each commit: a waiter wakes as soon
//! as the batch holding its position is committed, and the database is not
//! asked. Otherwise (the projectors run elsewhere, or another process holds
//! the lease) it polls the checkpoint row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstore::EventStore;
use projections::{Names, ProjectorStatus, checkpoint};
use tokio::sync::{Notify, watch};

/// How often a watched checkpoint is read while someone waits for it and no
/// projector of this process is applying it.
const POLL: Duration = Duration::from_millis(2);

/// The projections' checkpoints as this process last saw them.
#[derive(Clone)]
pub struct Checkpoints {
    store: EventStore,
    /// Status of the projectors running in this process, by projection.
    local: Arc<HashMap<&'static str, watch::Receiver<ProjectorStatus>>>,
    watched: Arc<Mutex<HashMap<String, Arc<Watched>>>>,
}

struct Watched {
    at: watch::Sender<u64>,
    /// Wakes the watcher when a waiter arrives.
    wake: Notify,
}

impl Watched {
    /// Raises the published checkpoint to `now` (it never goes back).
    fn reached(&self, now: u64) {
        self.at.send_if_modified(|at| {
            let moved = now > *at;
            *at = (*at).max(now);
            moved
        });
    }
}

impl Checkpoints {
    /// Checkpoints of `store`'s projections; `local` are the statuses of the
    /// projectors running in this process (none: the checkpoints are polled).
    pub fn new(store: EventStore, local: &[watch::Receiver<ProjectorStatus>]) -> Self {
        let local = local.iter().map(|status| (status.borrow().name, status.clone())).collect();
        Checkpoints { store, local: Arc::new(local), watched: Arc::default() }
    }

    /// Waits until projection `name` has applied `position`: the checkpoint
    /// seen then (at least `position`), or after `timeout` the lower one it
    /// had reached instead.
    pub async fn wait(&self, name: &str, position: u64, timeout: Duration) -> Result<u64, u64> {
        // A projection this process writes inline holds what its appends
        // committed: no watching needed for those.
        if let Some(applied) = self.store.inline_applied(name) {
            let applied = *applied.borrow();
            if applied >= position {
                return Ok(applied);
            }
        }
        let watched = self.watched(name);
        let mut at = watched.at.subscribe();
        let now = *at.borrow_and_update();
        if now >= position {
            return Ok(now);
        }
        watched.wake.notify_one();
        let reached = matches!(tokio::time::timeout(timeout, at.wait_for(|at| *at >= position)).await, Ok(Ok(_)));
        let now = *at.borrow();
        if reached { Ok(now) } else { Err(now) }
    }

    fn watched(&self, name: &str) -> Arc<Watched> {
        let mut watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        watched
            .entry(name.to_string())
            .or_insert_with(|| {
                let new = Arc::new(Watched { at: watch::Sender::new(0), wake: Notify::new() });
                let local = self.local.get(name).cloned();
                tokio::spawn(watch_checkpoint(self.store.clone(), name.to_string(), new.clone(), local));
                new
            })
            .clone()
    }
}

/// Publishes the checkpoint while anyone waits for it: from the local
/// projector's status while it is active, else read every [`POLL`]; sleeps
/// while nobody waits.
async fn watch_checkpoint(
    store: EventStore,
    name: String,
    watched: Arc<Watched>,
    mut local: Option<watch::Receiver<ProjectorStatus>>,
) {
    loop {
        if watched.at.receiver_count() == 0 {
            watched.wake.notified().await;
            continue;
        }
        if let Some(status) = local.as_mut() {
            let (active, checkpoint) = {
                let now = status.borrow_and_update();
                (now.active, now.checkpoint)
            };
            if active {
                watched.reached(checkpoint);
                // The next commit, or a new waiter to look at (it may have
                // arrived after the status was read, with nothing left to wait for).
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { local = None },
                    _ = watched.wake.notified() => {}
                }
                continue;
            }
        }
        match checkpoint::read(store.db(), &name, &Names::LIVE).await {
            Ok(now) => watched.reached(now),
            Err(error) => tracing::warn!(%error, projection = %name, "cannot read a checkpoint; retrying"),
        }
        tokio::time::sleep(POLL).await;
    }
}
