//! Errors of projections, the share distribution and audits.

use eventstore::{CommandError, EventAddress, EventStoreError};
use sea_orm::DbErr;

/// Why a projection could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    /// The event store failed, or a stored event could not be read.
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// An event refers to a row that earlier events should have created.
    #[error("{at}: {what} does not exist in the read model")]
    Missing {
        /// The event.
        at: EventAddress,
        /// What is missing.
        what: String,
    },
    /// A command the share distribution issued failed for a reason other than the recipient.
    #[error("share distribution: {0}")]
    Command(#[from] CommandError),
    /// The log has a hole: the event after `after` is missing.
    #[error("the log skips from position {after} to {next}: events were deleted (run `pointstream audit verify`)")]
    Gap {
        /// Last position present before the hole.
        after: u64,
        /// First position after it.
        next: u64,
    },
    /// Another rebuild of the projection moved its shadow checkpoint.
    #[error("another rebuild of {0} is running")]
    Concurrent(&'static str),
    /// A task reading the log (of an audit or a rebuild) stopped before it finished (it panicked).
    #[error("a log reader stopped: {0}")]
    Task(String),
    /// A name that is not a projection.
    #[error("unknown projection {0:?}; known: members, stores, wallets, shares, posts")]
    UnknownProjection(String),
}
