//! What a command did, as returned to the caller and kept in the command log.

use serde::{Deserialize, Serialize};

/// The result of a command that was carried out (or found carried out before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The command's id.
    pub command_id: String,
    /// The aggregate it addressed.
    pub aggregate_type: String,
    /// Its id.
    pub aggregate_id: String,
    /// The aggregate's sequence after the command.
    pub sequence: u64,
    /// Global position of the first event written (0 if none).
    pub first_position: u64,
    /// Global position of the last event written (0 if none): wait for a
    /// projection to reach it to read your own write.
    pub last_position: u64,
    /// True when this is the recorded outcome of an earlier execution with
    /// the same idempotency key; nothing was written this time.
    #[serde(default, skip_serializing)]
    pub replayed: bool,
}
