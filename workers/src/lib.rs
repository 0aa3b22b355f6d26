//! Fan-out and background work over Redis streams (fred).
//!
//! * [`redis`]: connecting, with reconnection;
//! * [`relay`]: the global log copied into the stream `{prefix}:events`, each
//!   entry's id the event's position, so the stream holds every event once, in
//!   log order, whatever restarts;
//! * [`social`]: the social worker (consumer group, retries, dead letters);
//!   [`providers`]: the networks behind one trait; [`tokens`]: access tokens
//!   sealed at rest; [`oauth`]: linking and refreshing with the networks.

pub mod dlq;
pub mod oauth;
pub mod providers;
pub mod redis;
pub mod relay;
pub mod social;
pub mod status;
pub mod tokens;

/// Why a worker could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] eventstore::EventStoreError),
    /// A command was refused or failed.
    #[error(transparent)]
    Command(#[from] eventstore::CommandError),
    /// A stored social token could not be read.
    #[error(transparent)]
    Token(#[from] tokens::TokenError),
    /// A read model the work depends on has not caught up in time.
    #[error("the {read_model} read model has not reached position {position} yet")]
    Behind {
        /// Which.
        read_model: &'static str,
        /// The position it must reach.
        position: u64,
    },
    /// A Redis operation without Redis (the embedded worker has none).
    #[error("this worker runs without Redis")]
    NoRedis,
    /// A stream entry is not what the relay writes.
    #[error("stream entry {id}: {what}")]
    Malformed {
        /// The entry's id.
        id: String,
        /// What is wrong with it.
        what: String,
    },
}
