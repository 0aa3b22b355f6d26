//! Read models and the processes that follow the event log.
//!
//! * [`read_models`]: members, stores, balances and the ledger, shares, posts;
//!   each a [`Projection`] of the log into MySQL/SQLite tables
//!   ([`entities`] are their sea-orm entities, for queries).
//! * [`projector`]: applies the log to a projection batch by batch, each batch
//!   with its checkpoint in one transaction; one active projector per
//!   projection across processes ([`lease`]).
//! * [`share_distribution`]: credits the recipients of every share, refunds
//!   the parts that cannot be delivered.
//! * [`inline`]: a projection written in the append transaction itself, so
//!   that a command's effect is in the read model when it is acknowledged.
//! * [`rebuild`]: rebuilds a projection from position 0 into shadow tables
//!   and swaps them in atomically.
//! * [`audit`]: replays the log in memory and compares it with the read
//!   models; [`queries`]: balances, time travel and ledger pages.

pub mod audit;
pub mod checkpoint;
pub mod entities;
pub mod error;
pub mod inline;
pub mod lease;
pub mod notary;
pub mod projection;
pub mod projector;
pub mod queries;
pub mod read_models;
pub mod rebuild;
pub mod share_distribution;
pub mod table;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use audit::{AuditReport, audit};
pub use error::ProjectionError;
pub use projection::{Names, Projection};
pub use projector::{Consumer, Projector, ProjectorConfig, ProjectorStatus, Stepped};
pub use read_models::{members::Members, posts::Posts, shares::Shares, stores::Stores, wallets::Wallets};
pub use share_distribution::ShareDistribution;

use eventstore::EventStore;

/// Names of the projections, for `--projection`.
pub const PROJECTIONS: [&str; 5] = ["members", "stores", "wallets", "shares", "posts"];

/// Every projection, as `--inline-projections` takes them: its default.
pub const ALL_INLINE: &str = "members,stores,wallets,shares,posts";

/// Writes the named projections inline: in every append transaction of this
/// process (see [`inline`]). Their projectors, when running, then only catch
/// up what the appends leave to them. `none` (or an empty name) names none.
pub fn write_inline(store: &EventStore, names: &[impl AsRef<str>]) -> Result<(), ProjectionError> {
    use std::sync::Arc;
    for name in names {
        let projection: Arc<dyn eventstore::InlineProjection> = match name.as_ref() {
            "" | "none" => continue,
            "members" => Arc::new(inline::Inline::<Members>::default()),
            "stores" => Arc::new(inline::Inline::<Stores>::default()),
            "wallets" => Arc::new(inline::Inline::<Wallets>::default()),
            "shares" => Arc::new(inline::Inline::<Shares>::default()),
            "posts" => Arc::new(inline::Inline::<Posts>::default()),
            other => return Err(ProjectionError::UnknownProjection(other.to_string())),
        };
        store.project_inline(projection);
    }
    Ok(())
}

/// The running consumers of one process: their status and their tasks.
#[derive(Default)]
pub struct Running {
    /// One status receiver per consumer.
    pub statuses: Vec<watch::Receiver<ProjectorStatus>>,
    /// The tasks; each ends when `shutdown` turns true.
    pub tasks: Vec<JoinHandle<Result<(), ProjectionError>>>,
}

impl Running {
    fn start<C: Consumer>(&mut self, store: &EventStore, config: &ProjectorConfig, shutdown: &watch::Receiver<bool>) {
        let (status, receiver) = watch::channel(ProjectorStatus { name: C::NAME, ..ProjectorStatus::default() });
        self.statuses.push(receiver);
        self.tasks.push(tokio::spawn(projector::run::<C>(store.clone(), config.clone(), status, shutdown.clone())));
    }
}

/// Starts every projector and the share distribution as tasks; they stop
/// when `shutdown` turns true.
pub fn spawn_all(store: &EventStore, config: &ProjectorConfig, shutdown: &watch::Receiver<bool>) -> Running {
    let mut running = Running::default();
    running.start::<Projector<Members>>(store, config, shutdown);
    running.start::<Projector<Stores>>(store, config, shutdown);
    running.start::<Projector<Wallets>>(store, config, shutdown);
    running.start::<Projector<Shares>>(store, config, shutdown);
    running.start::<Projector<Posts>>(store, config, shutdown);
    running.start::<ShareDistribution>(store, config, shutdown);
    running
}

/// Runs every consumer in this task until none has anything left to do
/// (the share distribution's commands can give the projections more work).
/// For tests and one-shot catch-up; ignores leases.
pub async fn catch_up(store: &EventStore, batch_size: u64) -> Result<(), ProjectionError> {
    loop {
        let mut handled = 0;
        handled += ShareDistribution::step(store, None, batch_size).await?.events;
        handled += Projector::<Members>::step(store, None, batch_size).await?.events;
        handled += Projector::<Stores>::step(store, None, batch_size).await?.events;
        handled += Projector::<Wallets>::step(store, None, batch_size).await?.events;
        handled += Projector::<Shares>::step(store, None, batch_size).await?.events;
        handled += Projector::<Posts>::step(store, None, batch_size).await?.events;
        if handled == 0 {
            return Ok(());
        }
    }
}
