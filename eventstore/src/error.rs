//! Errors of the event store and of command execution.

use domain::DomainError;
use sea_orm::DbErr;

/// Where in the log a stored event sits; used to name a bad event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAddress {
    /// Global position.
    pub position: u64,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Sequence in its stream.
    pub sequence: u64,
}

impl std::fmt::Display for EventAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} #{} (position {})", self.aggregate_type, self.aggregate_id, self.sequence, self.position)
    }
}

/// A failure of the store itself (as opposed to a refused command).
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    /// A stored event has a type this build does not know.
    #[error("unknown event type {event_type} v{event_version} at {at}")]
    UnknownEventType {
        /// Which event.
        at: EventAddress,
        /// Its stored type.
        event_type: String,
        /// Its stored version.
        event_version: u32,
    },
    /// A stored event cannot be read as its type.
    #[error("malformed {event_type} v{event_version} at {at}: {reason}")]
    MalformedEvent {
        /// Which event.
        at: EventAddress,
        /// Its stored type.
        event_type: String,
        /// Its stored version.
        event_version: u32,
        /// What is wrong.
        reason: String,
    },
    /// A value could not be serialized for storage.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The database URL is not one pointstream can use.
    #[error("unsupported database URL {0:?}: use mysql://... or sqlite://...")]
    UnsupportedUrl(String),
    /// The append task is gone (the store is shutting down).
    #[error("the event store is shutting down")]
    Closed,
}

/// Why a command was not carried out. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// Other writers kept changing the aggregate; the command was retried and gave up.
    #[error("{aggregate_type}/{aggregate_id} changed concurrently {attempts} times; try again")]
    Conflict {
        /// Aggregate type.
        aggregate_type: &'static str,
        /// Aggregate id.
        aggregate_id: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The idempotency key was used before for a different command.
    #[error("idempotency key {command_id} was already used for a different command")]
    IdempotencyKeyReused {
        /// The key.
        command_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] EventStoreError),
}

impl From<DbErr> for CommandError {
    fn from(err: DbErr) -> Self {
        CommandError::Store(EventStoreError::Database(err))
    }
}
