//! The `share_recipients` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One recipient of a share: the points due to them and whether they have been credited.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "share_recipients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub share_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    pub points: i64,
    pub status: String,
    pub settled_at_us: Option<i64>,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
