//! Read-model queries for the API: balances, time travel, the ledger.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entities::{balances, ledger};

/// A member's balance at a store now (0 if they never had points there).
pub async fn balance(db: &impl ConnectionTrait, member: &str, store: &str) -> Result<i64, DbErr> {
    Ok(balances::Entity::find_by_id((member.to_string(), store.to_string())).one(db).await?.map_or(0, |b| b.balance))
}

/// A member's balance at a store as it was at `at_us` (microseconds since the
/// epoch), from the ledger.
pub async fn balance_at(db: &impl ConnectionTrait, member: &str, store: &str, at_us: i64) -> Result<i64, DbErr> {
    let last = ledger::Entity::find()
        .filter(ledger::Column::MemberId.eq(member))
        .filter(ledger::Column::StoreId.eq(store))
        .filter(ledger::Column::RecordedAtUs.lte(at_us))
        .order_by_desc(ledger::Column::Position)
        .one(db)
        .await?;
    Ok(last.map_or(0, |row| row.balance_after))
}

/// One page of a member's ledger, newest first: at most `limit` movements
/// before position `before` (all when `None`), at one store or all.
pub async fn ledger_page(
    db: &impl ConnectionTrait,
    member: &str,
    store: Option<&str>,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<ledger::Model>, DbErr> {
    let mut query = ledger::Entity::find().filter(ledger::Column::MemberId.eq(member));
    if let Some(store) = store {
        query = query.filter(ledger::Column::StoreId.eq(store));
    }
    if let Some(before) = before {
        query = query.filter(ledger::Column::Position.lt(before));
    }
    query.order_by_desc(ledger::Column::Position).limit(limit).all(db).await
}
