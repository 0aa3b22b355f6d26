//! The `social_accounts` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A social network account linked to a member, one per provider.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "social_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    pub external_id: String,
    pub linked_at_us: i64,
    /// The account's server (a Mastodon instance, a Bluesky PDS).
    pub instance: Option<String>,
    /// `linked`, or `needs_relink` once the network refused its tokens for good.
    pub status: String,
    /// Why it needs relinking.
    pub reason: Option<String>,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
