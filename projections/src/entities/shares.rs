//! The `shares` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A share: points a sender splits among recipients at one store, with how
/// many recipients have been settled so far.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "shares")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub share_id: String,
    pub sender_id: String,
    pub store_id: String,
    pub total: i64,
    pub message: String,
    pub recipients: i64,
    pub settled: i64,
    pub status: String,
    pub created_at_us: i64,
    pub position: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
