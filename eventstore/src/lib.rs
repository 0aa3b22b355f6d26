//! The pointstream event store, on MySQL/MariaDB or SQLite (sea-orm).
//!
//! * [`EventStore::execute`] runs a domain command: the aggregate comes from
//!   an in-memory cache (or its latest snapshot plus later events), decides,
//!   and its events are appended with optimistic concurrency on
//!   `(aggregate_type, aggregate_id, sequence)`, retried on conflict, and made
//!   idempotent by command id.
//! * Appends are group-committed ([`writer`]): one transaction for many
//!   commands, each still getting its own verdict.
//! * Every event gets a dense, gap-free, commit-ordered global position;
//!   [`EventStore::read_from`] and [`EventStore::wait_for`] let readers tail
//!   the log.
//! * Every stream is a SHA-256 hash chain ([`chain`]); old event shapes are read
//!   through [`upcast`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pointstream_eventstore::{CommandContext, EventStore, EventStoreConfig};
//! use domain::{Member, MemberCommand, values::*};
//!
//! let store = EventStore::open("sqlite://pointstream.db", EventStoreConfig::default()).await?;
//! let command = MemberCommand::Register {
//!     member: MemberId::parse("ann")?,
//!     handle: Handle::parse("ann")?,
//!     display_name: DisplayName::parse("Ann")?,
//! };
//! let outcome = store.execute::<Member>("ann", command, CommandContext::default()).await?;
//! let events = store.read_from(0, 100).await?;
//! assert_eq!(events.last().map(|e| e.position), Some(outcome.last_position));
//! # Ok(()) }
//! ```

pub mod chain;
mod clock;
pub mod connection;
mod directory;
pub mod error;
mod execute;
pub mod inline;
mod log;
pub mod merkle;
mod outcome;
mod recent;
pub mod record;
pub mod scratch;
pub mod script;
mod store;
mod tagged;
pub mod trace;
pub mod upcast;
pub mod writer;

pub use chain::{ChainBreak, ChainCheck, ChainReport};
pub use clock::now_us;
pub use connection::{DEFAULT_DATABASE_URL, Shapes, connect, migrate, padded_chunks};
pub use directory::StoreDirectory;
pub use error::{CommandError, EventAddress, EventStoreError};
pub use execute::{CommandContext, Model};
pub use inline::{InlineBatch, InlineProjection, Projected, ScriptBatch};
pub use log::{LogFilter, head as read_head};
pub use outcome::CommandOutcome;
pub use record::{Metadata, RecordedEvent};
pub use script::{InsertInto, Ran, Script, Unscriptable};
pub use store::{EventStore, EventStoreConfig, Loaded};
