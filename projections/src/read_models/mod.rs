//! The read models, one projection each: the tables the API reads.

pub mod members;
pub mod posts;
pub mod shares;
pub mod stores;
pub mod wallets;

use std::collections::BTreeSet;

use eventstore::RecordedEvent;
use sea_orm::Value;

/// The distinct ids of the `aggregate_type` streams among `events`.
pub(crate) fn ids_of(events: &[RecordedEvent], aggregate_type: &str) -> BTreeSet<String> {
    events.iter().filter(|e| e.aggregate_type == aggregate_type).map(|e| e.aggregate_id.clone()).collect()
}

/// A one-column primary key.
pub(crate) fn key1(a: &str) -> Vec<Value> {
    vec![a.into()]
}

/// A two-column primary key.
pub(crate) fn key2(a: &str, b: &str) -> Vec<Value> {
    vec![a.into(), b.into()]
}
