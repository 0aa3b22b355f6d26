//! Reading the log: the global order, one stream, the head.

use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};

use migrations::tables::{Events, LogHead};

/// The columns of a [`RecordedEvent`], in the order `event_from_row` reads them.
pub(crate) const EVENT_COLUMNS: [Events; 10] = [
    Events::Position,
    Events::AggregateType,
    Events::AggregateId,
    Events::Sequence,
    Events::EventType,
    Events::EventVersion,
    Events::Payload,
    Events::Metadata,
    Events::RecordedAtUs,
    Events::Hash,
];

use crate::record::RecordedEvent;

pub(crate) fn event_from_row(row: &QueryResult) -> Result<RecordedEvent, DbErr> {
    Ok(RecordedEvent {
        position: row.try_get::<i64>("", "position")? as u64,
        aggregate_type: row.try_get("", "aggregate_type")?,
        aggregate_id: row.try_get("", "aggregate_id")?,
        sequence: row.try_get::<i64>("", "sequence")? as u64,
        event_type: row.try_get("", "event_type")?,
        event_version: row.try_get::<i32>("", "event_version")? as u32,
        payload: row.try_get("", "payload")?,
        metadata: row.try_get("", "metadata")?,
        recorded_at_us: row.try_get("", "recorded_at_us")?,
        hash: row.try_get("", "hash")?,
    })
}

/// The highest committed position (0 for an empty log), as `db` holds it
/// now: for a process that only watches the log, without an [`crate::EventStore`].
pub async fn head(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let row = db
        .query_one(
            Query::select().column(LogHead::Position).from(LogHead::Table).and_where(Expr::col(LogHead::Id).eq(1)),
        )
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("log_head row 1 (run the migrations)".into()))?;
    Ok(row.try_get::<i64>("", "position")? as u64)
}

/// Up to `limit` events with `position > after`, in position order.
pub(crate) async fn read_from(db: &impl ConnectionTrait, after: u64, limit: u64) -> Result<Vec<RecordedEvent>, DbErr> {
    let rows = db
        .query_all(
            Query::select()
                .columns(EVENT_COLUMNS)
                .from(Events::Table)
                .and_where(Expr::col(Events::Position).gt(after as i64))
                .order_by(Events::Position, Order::Asc)
                .limit(limit),
        )
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// Which events of the log a reader wants; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Aggregate type (`Wallet`, ...).
    pub aggregate_type: Option<String>,
    /// Aggregate id (with or without a type).
    pub aggregate_id: Option<String>,
    /// Event name (`PointsEarned`, ...).
    pub event_type: Option<String>,
}

/// Up to `limit` events with `position > after` that match `filter`, in
/// position order.
pub(crate) async fn read_matching(
    db: &impl ConnectionTrait,
    after: u64,
    limit: u64,
    filter: &LogFilter,
) -> Result<Vec<RecordedEvent>, DbErr> {
    let mut query = Query::select();
    query.columns(EVENT_COLUMNS).from(Events::Table).and_where(Expr::col(Events::Position).gt(after as i64));
    if let Some(kind) = &filter.aggregate_type {
        query.and_where(Expr::col(Events::AggregateType).eq(kind.as_str()));
    }
    if let Some(id) = &filter.aggregate_id {
        query.and_where(Expr::col(Events::AggregateId).eq(id.as_str()));
    }
    if let Some(name) = &filter.event_type {
        query.and_where(Expr::col(Events::EventType).eq(name.as_str()));
    }
    let rows = db.query_all(query.order_by(Events::Position, Order::Asc).limit(limit)).await?;
    rows.iter().map(event_from_row).collect()
}

/// The events of one stream with `sequence > after`, in order.
pub(crate) async fn read_stream(
    db: &impl ConnectionTrait,
    aggregate_type: &str,
    aggregate_id: &str,
    after: u64,
) -> Result<Vec<RecordedEvent>, DbErr> {
    let rows = db
        .query_all(
            Query::select()
                .columns(EVENT_COLUMNS)
                .from(Events::Table)
                .and_where(Expr::col(Events::AggregateType).eq(aggregate_type))
                .and_where(Expr::col(Events::AggregateId).eq(aggregate_id))
                .and_where(Expr::col(Events::Sequence).gt(after as i64))
                .order_by(Events::Sequence, Order::Asc),
        )
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// `(aggregate_type, aggregate_id, sequence)` of events after `after`: what a
/// process needs to invalidate its cache after other processes wrote.
pub(crate) async fn stream_heads_after(
    db: &impl ConnectionTrait,
    after: u64,
    limit: u64,
) -> Result<Vec<(u64, String, String, u64)>, DbErr> {
    let rows = db
        .query_all(
            Query::select()
                .columns([Events::Position, Events::AggregateType, Events::AggregateId, Events::Sequence])
                .from(Events::Table)
                .and_where(Expr::col(Events::Position).gt(after as i64))
                .order_by(Events::Position, Order::Asc)
                .limit(limit),
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<i64>("", "position")? as u64,
                row.try_get("", "aggregate_type")?,
                row.try_get("", "aggregate_id")?,
                row.try_get::<i64>("", "sequence")? as u64,
            ))
        })
        .collect()
}
