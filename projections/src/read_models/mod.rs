//! The read models, one projection each: the tables the API reads.

pub mod members;
pub mod posts;
pub mod shares;
pub mod stores;
pub mod wallets;

use std::collections::BTreeSet;

use cqrs_es::Aggregate;
use eventstore::RecordedEvent;
use sea_orm::Value;

use crate::error::ProjectionError;

/// The distinct stream ids among decoded `events`.
pub(crate) fn ids_of<E>(events: &[(&RecordedEvent, E)]) -> BTreeSet<String> {
    events.iter().map(|(e, _)| e.aggregate_id.clone()).collect()
}

/// A one-column primary key.
pub(crate) fn key1(a: &str) -> Vec<Value> {
    vec![a.into()]
}

/// A two-column primary key.
pub(crate) fn key2(a: &str, b: &str) -> Vec<Value> {
    vec![a.into(), b.into()]
}

/// `event` decoded as an event of aggregate `A`, or `None` if it belongs to
/// another aggregate type.
pub(crate) fn decode_as<A: Aggregate>(event: &RecordedEvent) -> Result<Option<A::Event>, ProjectionError> {
    if event.aggregate_type != A::TYPE {
        return Ok(None);
    }
    Ok(Some(event.decode::<A>()?))
}
