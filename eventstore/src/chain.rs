//! Tamper evidence: every event carries
//! `hash = SHA-256(previous hash in its stream || canonical bytes of the event)`.
//!
//! The canonical bytes are each field length-prefixed (so no two different
//! events share bytes), covering everything stored except the global position
//! (which is assigned at commit). [`verify`] recomputes every chain, checks
//! that streams have no gaps, that the global log has no holes, and that each
//! snapshot matches the event it was taken at.

use std::collections::HashMap;
use std::fmt;

use sea_orm::sea_query::Query;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use migrations::tables::Snapshots;

use crate::error::EventStoreError;
use crate::log;
use crate::record::RecordedEvent;

/// The fields a hash covers.
pub struct HashedFields<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: u64,
    pub event_type: &'a str,
    pub event_version: u32,
    pub payload: &'a str,
    pub metadata: &'a str,
    pub recorded_at_us: i64,
}

impl<'a> From<&'a RecordedEvent> for HashedFields<'a> {
    fn from(e: &'a RecordedEvent) -> Self {
        HashedFields {
            aggregate_type: &e.aggregate_type,
            aggregate_id: &e.aggregate_id,
            sequence: e.sequence,
            event_type: &e.event_type,
            event_version: e.event_version,
            payload: &e.payload,
            metadata: &e.metadata,
            recorded_at_us: e.recorded_at_us,
        }
    }
}

/// The hash of an event whose stream predecessor has hash `previous` (empty
/// for the first event of a stream).
pub fn event_hash(previous: &str, fields: &HashedFields<'_>) -> String {
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    put(previous.as_bytes());
    put(fields.aggregate_type.as_bytes());
    put(fields.aggregate_id.as_bytes());
    put(&fields.sequence.to_be_bytes());
    put(fields.event_type.as_bytes());
    put(&fields.event_version.to_be_bytes());
    put(fields.payload.as_bytes());
    put(fields.metadata.as_bytes());
    put(&fields.recorded_at_us.to_be_bytes());
    hex::encode(hasher.finalize())
}

/// One thing wrong with the stored log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The stored hash does not match the event's content and predecessor:
    /// this event (or the one before it in its stream) was altered.
    HashMismatch { position: u64, aggregate_type: String, aggregate_id: String, sequence: u64, event_type: String },
    /// A stream skips sequence numbers: events were deleted.
    SequenceGap { aggregate_type: String, aggregate_id: String, expected: u64, found: u64 },
    /// Global positions are missing: events were deleted.
    PositionGap { missing_from: u64, missing_to: u64 },
    /// A snapshot does not match the event it claims to follow.
    SnapshotMismatch { aggregate_type: String, aggregate_id: String, sequence: u64 },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::HashMismatch { position, aggregate_type, aggregate_id, sequence, event_type } => write!(
                f,
                "hash mismatch at position {position}: {aggregate_type}/{aggregate_id} #{sequence} ({event_type}) was altered"
            ),
            ChainBreak::SequenceGap { aggregate_type, aggregate_id, expected, found } => {
                write!(
                    f,
                    "{aggregate_type}/{aggregate_id}: expected sequence {expected}, found {found} (events deleted)"
                )
            }
            ChainBreak::PositionGap { missing_from, missing_to } => {
                write!(f, "global positions {missing_from}..={missing_to} are missing (events deleted)")
            }
            ChainBreak::SnapshotMismatch { aggregate_type, aggregate_id, sequence } => {
                write!(f, "snapshot of {aggregate_type}/{aggregate_id} at #{sequence} does not match the log")
            }
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// Streams checked.
    pub streams: u64,
    /// Everything wrong, in log order.
    pub breaks: Vec<ChainBreak>,
}

impl ChainReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty()
    }
}

const PAGE: u64 = 5_000;

/// Recomputes every stream's hash chain and checks the log for holes, in one
/// pass over the log in position order.
pub async fn verify(db: &DatabaseConnection) -> Result<ChainReport, EventStoreError> {
    let mut check = ChainCheck::start(db).await?;
    let mut after = 0;
    while after < check.head {
        let page = log::read_from(db, after, PAGE.min(check.head - after)).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            check.feed(event);
        }
    }
    Ok(check.finish())
}

/// The chain check fed one event at a time in position order, so a reader
/// of the whole log (the audit) checks the chains in the same pass as it
/// does everything else. Within a stream, positions grow with sequences, so
/// each stream's chain is recomputed in order; the check keeps each stream's
/// last sequence and hash (about 150 bytes per stream).
pub struct ChainCheck {
    head: u64,
    snapshots: HashMap<(String, String), (u64, String)>,
    streams: HashMap<(String, String), (u64, String)>,
    next_position: u64,
    report: ChainReport,
}

impl ChainCheck {
    /// A check of the log up to its head as of now (events appended later
    /// are not checked, and their absence is not a hole).
    pub async fn start(db: &DatabaseConnection) -> Result<Self, EventStoreError> {
        let head = log::head(db).await?;
        let snapshots = snapshot_hashes(db).await?;
        Ok(ChainCheck { head, snapshots, streams: HashMap::new(), next_position: 1, report: ChainReport::default() })
    }

    /// The head of the log the check covers.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Checks the next event of the log (positions in increasing order);
    /// events past the head are ignored.
    pub fn feed(&mut self, event: &RecordedEvent) {
        if event.position > self.head {
            return;
        }
        if event.position != self.next_position {
            self.report.breaks.push(ChainBreak::PositionGap {
                missing_from: self.next_position,
                missing_to: event.position.saturating_sub(1),
            });
        }
        self.next_position = event.position + 1;
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let (expected_sequence, previous_hash) = match self.streams.get(&key) {
            Some((sequence, hash)) => (sequence + 1, hash.as_str()),
            None => (1, ""),
        };
        if event.sequence != expected_sequence {
            self.report.breaks.push(ChainBreak::SequenceGap {
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                expected: expected_sequence,
                found: event.sequence,
            });
        }
        if event_hash(previous_hash, &HashedFields::from(event)) != event.hash {
            self.report.breaks.push(ChainBreak::HashMismatch {
                position: event.position,
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence,
                event_type: event.event_type.clone(),
            });
        }
        if let Some((sequence, hash)) = self.snapshots.get(&key)
            && *sequence == event.sequence
            && *hash != event.hash
        {
            self.report.breaks.push(ChainBreak::SnapshotMismatch {
                aggregate_type: key.0.clone(),
                aggregate_id: key.1.clone(),
                sequence: *sequence,
            });
        }
        // Continue the chain from the stored hash, so one altered event is
        // reported once rather than poisoning the rest of its stream.
        match self.streams.get_mut(&key) {
            Some(stream) => {
                stream.0 = event.sequence;
                stream.1.clone_from(&event.hash);
            }
            None => {
                self.streams.insert(key, (event.sequence, event.hash.clone()));
            }
        }
        self.report.events += 1;
    }

    /// What the check found, holes at the end of the log included.
    pub fn finish(mut self) -> ChainReport {
        if self.next_position <= self.head {
            self.report
                .breaks
                .push(ChainBreak::PositionGap { missing_from: self.next_position, missing_to: self.head });
        }
        self.report.streams = self.streams.len() as u64;
        self.report
    }
}

/// Every snapshot's (sequence, hash), by stream.
async fn snapshot_hashes(db: &DatabaseConnection) -> Result<HashMap<(String, String), (u64, String)>, EventStoreError> {
    let rows = db
        .query_all(
            Query::select()
                .columns([Snapshots::AggregateType, Snapshots::AggregateId, Snapshots::Sequence, Snapshots::Hash])
                .from(Snapshots::Table),
        )
        .await?;
    let mut map = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = (row.try_get("", "aggregate_type")?, row.try_get("", "aggregate_id")?);
        map.insert(key, (row.try_get::<i64>("", "sequence")? as u64, row.try_get("", "hash")?));
    }
    Ok(map)
}
