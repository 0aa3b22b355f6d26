//! Identifiers compare byte for byte on MySQL too.
//!
//! MySQL's default collations ignore case, so `read_stream('alice')` would
//! also return the stream of `Alice`, and purchase refs differing only in
//! case would collide; SQLite compares bytes. Every table is converted to
//! `utf8mb4_bin` so both backends agree. Nothing to do on SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20261125_000002_read_models::CHECKPOINT_TABLES;

/// Every table of the earlier migrations (and the checkpoint tables).
const TABLES: &[&str] = &[
    "events",
    "log_head",
    "command_log",
    "claims",
    "snapshots",
    "members",
    "social_accounts",
    "stores",
    "balances",
    "ledger",
    "shares",
    "share_recipients",
    "posts",
    "post_photos",
    "post_social",
    "leases",
];

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000003_binary_collation"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        for table in TABLES.iter().chain(CHECKPOINT_TABLES.iter()) {
            let sql = format!("ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Going back to a case-insensitive collation could merge distinct ids: not done.
        Ok(())
    }
}
