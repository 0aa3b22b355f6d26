//! The `stores` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A store: owner, whether it is open, and its current earning policy (rate
/// in basis points, optional per-purchase cap, minimum purchase).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "stores")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub store_id: String,
    pub name: String,
    pub owner_id: String,
    pub open: bool,
    pub rate_basis_points: i64,
    pub cap: Option<i64>,
    pub min_purchase: i64,
    pub policy_version: i64,
    pub registered_at_us: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
