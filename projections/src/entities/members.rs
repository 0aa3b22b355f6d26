//! The `members` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A registered member: profile, unique handle and whether the account is active.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    pub handle: String,
    pub display_name: String,
    pub active: bool,
    pub registered_at_us: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
