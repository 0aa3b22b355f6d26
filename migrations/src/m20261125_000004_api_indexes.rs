//! Indexes the API's reads need: the feed (every post, newest first) and a
//! store's activity (its ledger by position). The auditors' log filtered by
//! event name scans by position instead: an index on `events` would cost
//! every append.
//!
//! Read-model rebuilds copy a table's secondary indexes from the live table,
//! so these survive `pointstream replay`.

use sea_orm_migration::prelude::*;

use crate::m20261125_000002_read_models::{Ledger, Posts, index};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000004_api_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        index(manager, "posts_feed", Posts::Table, &[Posts::Position], false).await?;
        index(manager, "ledger_store", Ledger::Table, &[Ledger::StoreId, Ledger::Position], false).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [("posts_feed", "posts"), ("ledger_store", "ledger")] {
            manager.drop_index(Index::drop().name(name).table(Alias::new(table)).to_owned()).await?;
        }
        Ok(())
    }
}
