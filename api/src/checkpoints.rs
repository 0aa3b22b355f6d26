//! Read-your-writes without a query per waiter: while anyone waits for a
//! projection, one task per projection polls its checkpoint and wakes every
//! waiter whose position it has reached.
//!
//! The API may run in a process without the projectors, so it watches the
//! checkpoint rows rather than in-process status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstore::EventStore;
use projections::{Names, checkpoint};
use tokio::sync::{Notify, watch};

/// How often a watched checkpoint is read while someone waits for it.
const POLL: Duration = Duration::from_millis(2);

/// The projections' checkpoints as this process last read them.
#[derive(Clone)]
pub struct Checkpoints {
    store: EventStore,
    watched: Arc<Mutex<HashMap<String, Arc<Watched>>>>,
}

struct Watched {
    at: watch::Sender<u64>,
    /// Wakes the poller when a waiter arrives.
    wake: Notify,
}

impl Checkpoints {
    /// Checkpoints of `store`'s projections.
    pub fn new(store: EventStore) -> Self {
        Checkpoints { store, watched: Arc::default() }
    }

    /// Waits until projection `name` has applied `position`; after `timeout`,
    /// the position it had reached instead.
    pub async fn wait(&self, name: &str, position: u64, timeout: Duration) -> Result<(), u64> {
        let watched = self.watched(name);
        let mut at = watched.at.subscribe();
        if *at.borrow_and_update() >= position {
            return Ok(());
        }
        watched.wake.notify_one();
        let reached = matches!(tokio::time::timeout(timeout, at.wait_for(|at| *at >= position)).await, Ok(Ok(_)));
        if reached { Ok(()) } else { Err(*at.borrow()) }
    }

    fn watched(&self, name: &str) -> Arc<Watched> {
        let mut watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        watched
            .entry(name.to_string())
            .or_insert_with(|| {
                let new = Arc::new(Watched { at: watch::Sender::new(0), wake: Notify::new() });
                tokio::spawn(poll(self.store.clone(), name.to_string(), new.clone()));
                new
            })
            .clone()
    }
}

/// Reads the checkpoint every [`POLL`] while anyone waits; sleeps otherwise.
async fn poll(store: EventStore, name: String, watched: Arc<Watched>) {
    loop {
        if watched.at.receiver_count() == 0 {
            watched.wake.notified().await;
            continue;
        }
        match checkpoint::read(store.db(), &name, &Names::LIVE).await {
            Ok(now) => {
                watched.at.send_if_modified(|at| {
                    let moved = now > *at;
                    *at = (*at).max(now);
                    moved
                });
            }
            Err(error) => tracing::warn!(%error, projection = %name, "cannot read a checkpoint; retrying"),
        }
        tokio::time::sleep(POLL).await;
    }
}
