//! Where the streams stand: length, the relayed position, each consumer
//! group's pending entries and lag, the dead letters. Published as gauges
//! (for `/metrics`) and printed by `pointstream status`.

use std::collections::HashMap;

use fred::prelude::*;
use serde::Serialize;

use crate::WorkerError;
use crate::relay::{self, RelayConfig};
use crate::social::SocialConfig;

/// The streams at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// The events stream.
    pub stream: String,
    /// Entries it holds (after trimming).
    pub length: u64,
    /// The position of its newest entry.
    pub relayed: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupStatus>,
    /// Entries in the social dead letters.
    pub dead_letters: u64,
}

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Its name.
    pub name: String,
    /// Consumers it has seen.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to it (when Redis can tell).
    pub lag: Option<u64>,
}

fn number(group: &HashMap<String, Value>, key: &str) -> Option<u64> {
    group.get(key).and_then(|v| v.as_u64())
}

/// Reads the status of the streams.
pub async fn read(redis: &Client, relay: &RelayConfig, social: &SocialConfig) -> Result<StreamStatus, WorkerError> {
    let length: u64 = redis.xlen(&relay.stream).await?;
    let relayed = relay::relayed(redis, &relay.stream).await?;
    let groups: Vec<HashMap<String, Value>> = if length > 0 || relayed > 0 {
        redis.xinfo_groups(&relay.stream).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let groups = groups
        .iter()
        .map(|group| GroupStatus {
            name: group.get("name").and_then(|v| v.as_string()).unwrap_or_default(),
            consumers: number(group, "consumers").unwrap_or(0),
            pending: number(group, "pending").unwrap_or(0),
            lag: number(group, "lag"),
        })
        .collect();
    let dead_letters: u64 = redis.xlen(&social.dead).await?;
    Ok(StreamStatus { stream: relay.stream.clone(), length, relayed, groups, dead_letters })
}

/// Sets the streams' gauges for `/metrics`.
pub fn publish(status: &StreamStatus) {
    metrics::gauge!("pointstream_stream_length").set(status.length as f64);
    metrics::gauge!("pointstream_stream_relayed_position").set(status.relayed as f64);
    metrics::gauge!("pointstream_dead_letters").set(status.dead_letters as f64);
    for group in &status.groups {
        metrics::gauge!("pointstream_group_pending", "group" => group.name.clone()).set(group.pending as f64);
        if let Some(lag) = group.lag {
            metrics::gauge!("pointstream_group_lag", "group" => group.name.clone()).set(lag as f64);
        }
    }
}

/// Cross-posting by network and status, from the posts read model: how many
/// (post, network) pairs stand where, and the attempts they took.
#[derive(Debug, Clone, Serialize)]
pub struct SocialTally {
    /// `facebook` or `twitter`.
    pub provider: String,
    /// `pending`, `published` or `failed`.
    pub status: String,
    /// Posts (or later photos) in that state.
    pub posts: i64,
    /// Attempts they took in all.
    pub attempts: i64,
}

/// Whose cross-posting a tally counts.
#[derive(Debug, Clone, Copy)]
pub enum Tallied {
    /// Posts (`post_social`).
    Posts,
    /// Photos added to posts later (`post_photo_social`).
    LaterPhotos,
}

/// The tally of every post's (or later photo's) cross-posting.
pub async fn social_tally(db: &impl sea_orm::ConnectionTrait, of: Tallied) -> Result<Vec<SocialTally>, sea_orm::DbErr> {
    use sea_orm::sea_query::{Alias, Expr, Func, Order, Query};
    let table = match of {
        Tallied::Posts => "post_social",
        Tallied::LaterPhotos => "post_photo_social",
    };
    let column = |name: &str| Alias::new(name);
    // SUM is a decimal on MySQL: cast it back to an integer on either backend.
    let integer = if db.get_database_backend() == sea_orm::DbBackend::MySql { "SIGNED" } else { "INTEGER" };
    let query = Query::select()
        .column(column("provider"))
        .column(column("status"))
        .expr_as(Func::count(Expr::col(column("post_id"))), Alias::new("posts"))
        .expr_as(Expr::cust(format!("CAST(SUM(attempts) AS {integer})")), Alias::new("attempts"))
        .from(Alias::new(table))
        .group_by_col(column("provider"))
        .group_by_col(column("status"))
        .order_by(column("provider"), Order::Asc)
        .order_by(column("status"), Order::Asc)
        .to_owned();
    let rows = db.query_all(&query).await?;
    rows.iter()
        .map(|row| {
            Ok(SocialTally {
                provider: row.try_get("", "provider")?,
                status: row.try_get("", "status")?,
                posts: row.try_get("", "posts")?,
                attempts: row.try_get("", "attempts")?,
            })
        })
        .collect()
}
