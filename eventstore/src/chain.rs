//! Tamper evidence: every event carries
//! `hash = SHA-256(previous hash in its stream || canonical bytes of the event)`.
//!
//! The canonical bytes are each field length-prefixed (so no two different
//! events share bytes), covering everything stored except the global position
//! (which is assigned at commit). [`verify`] recomputes every chain, checks
//! that streams have no gaps, that the global log has no holes, and that each
//! snapshot matches the event it was taken at.

use std::fmt;

use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::Serialize;
use sha2::{Digest, Sha256};

use migrations::tables::{Events, Snapshots};

use crate::error::EventStoreError;
use crate::log::{self, EVENT_COLUMNS};
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

/// Recomputes every stream's hash chain and checks the log for holes.
pub async fn verify(db: &DatabaseConnection) -> Result<ChainReport, EventStoreError> {
    let mut report = ChainReport::default();
    let snapshots = snapshot_hashes(db).await?;
    let mut current: Option<(String, String)> = None;
    let mut previous_hash = String::new();
    let mut expected_sequence = 1;
    let mut after: Option<(String, String, u64)> = None;
    loop {
        let mut select = Query::select();
        select.columns(EVENT_COLUMNS).from(Events::Table);
        if let Some((t, i, s)) = &after {
            select.and_where(
                Expr::tuple([
                    Expr::col(Events::AggregateType),
                    Expr::col(Events::AggregateId),
                    Expr::col(Events::Sequence),
                ])
                .gt(Expr::tuple([Expr::val(t.as_str()), Expr::val(i.as_str()), Expr::val(*s as i64)])),
            );
        }
        select
            .order_by(Events::AggregateType, Order::Asc)
            .order_by(Events::AggregateId, Order::Asc)
            .order_by(Events::Sequence, Order::Asc)
            .limit(PAGE);
        let rows = db.query_all(&select).await?;
        let page_len = rows.len() as u64;
        for row in rows {
            let event = log::event_from_row(&row)?;
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            if current.as_ref() != Some(&key) {
                report.streams += 1;
                current = Some(key.clone());
                previous_hash.clear();
                expected_sequence = 1;
            }
            if event.sequence != expected_sequence {
                report.breaks.push(ChainBreak::SequenceGap {
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    expected: expected_sequence,
                    found: event.sequence,
                });
            }
            if event_hash(&previous_hash, &HashedFields::from(&event)) != event.hash {
                report.breaks.push(ChainBreak::HashMismatch {
                    position: event.position,
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: event.sequence,
                    event_type: event.event_type.clone(),
                });
            }
            // Continue the chain from the stored hash, so one altered event is
            // reported once rather than poisoning the rest of its stream.
            previous_hash.clone_from(&event.hash);
            expected_sequence = event.sequence + 1;
            report.events += 1;
            if let Some((sequence, hash)) = snapshots.get(&key)
                && *sequence == event.sequence
                && *hash != event.hash
            {
                report.breaks.push(ChainBreak::SnapshotMismatch {
                    aggregate_type: key.0,
                    aggregate_id: key.1,
                    sequence: *sequence,
                });
            }
            after = Some((event.aggregate_type, event.aggregate_id, event.sequence));
        }
        if page_len < PAGE {
            break;
        }
    }
    check_positions(db, &mut report).await?;
    Ok(report)
}

/// Every snapshot's (sequence, hash), by stream.
async fn snapshot_hashes(
    db: &DatabaseConnection,
) -> Result<std::collections::HashMap<(String, String), (u64, String)>, EventStoreError> {
    let rows = db
        .query_all(
            Query::select()
                .columns([Snapshots::AggregateType, Snapshots::AggregateId, Snapshots::Sequence, Snapshots::Hash])
                .from(Snapshots::Table),
        )
        .await?;
    let mut map = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let key = (row.try_get("", "aggregate_type")?, row.try_get("", "aggregate_id")?);
        map.insert(key, (row.try_get::<i64>("", "sequence")? as u64, row.try_get("", "hash")?));
    }
    Ok(map)
}

/// Finds holes in the global positions 1..=head.
async fn check_positions(db: &DatabaseConnection, report: &mut ChainReport) -> Result<(), EventStoreError> {
    let head = log::head(db).await?;
    let mut expected = 1u64;
    let mut after = 0u64;
    loop {
        let rows = db
            .query_all(
                Query::select()
                    .column(Events::Position)
                    .from(Events::Table)
                    .and_where(Expr::col(Events::Position).gt(after as i64))
                    .order_by(Events::Position, Order::Asc)
                    .limit(PAGE * 4),
            )
            .await?;
        let page_len = rows.len() as u64;
        for row in rows {
            let position = row.try_get::<i64>("", "position")? as u64;
            if position != expected {
                report
                    .breaks
                    .push(ChainBreak::PositionGap { missing_from: expected, missing_to: position.saturating_sub(1) });
            }
            expected = position + 1;
            after = position;
        }
        if page_len < PAGE * 4 {
            break;
        }
    }
    if expected <= head {
        report.breaks.push(ChainBreak::PositionGap { missing_from: expected, missing_to: head });
    }
    Ok(())
}
