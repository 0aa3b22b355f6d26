//! The `balances` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// The points wallet of one member at one store: current balance, running
/// totals per kind of movement, and the log position of the last event
/// applied.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "balances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub store_id: String,
    pub balance: i64,
    pub earned: i64,
    pub redeemed: i64,
    pub shared_out: i64,
    pub received: i64,
    pub refunded: i64,
    pub adjusted: i64,
    pub expired: i64,
    pub last_position: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
