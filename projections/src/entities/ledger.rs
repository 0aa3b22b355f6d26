//! The `ledger` read model table.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One points movement of a wallet, keyed by the log position of the event
/// that caused it, with the balance after it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "ledger")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i64,
    pub member_id: String,
    pub store_id: String,
    pub kind: String,
    pub delta: i64,
    pub balance_after: i64,
    pub purchase_ref: Option<String>,
    pub amount_paid: Option<i64>,
    pub counterparty_id: Option<String>,
    pub share_id: Option<String>,
    pub reason: Option<String>,
    pub recorded_at_us: i64,
}

/// No relations: read models are denormalised and joined by id in queries.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
