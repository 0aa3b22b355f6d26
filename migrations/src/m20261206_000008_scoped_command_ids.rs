//! Idempotency keys are scoped to their caller: a command id is a digest of
//! the caller's subject and the client's key of up to 255 characters, which
//! is longer than the 160 characters `command_log.command_id` held.
//! (SQLite does not enforce a `VARCHAR`'s length: nothing to do there.)

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000008_scoped_command_ids"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        let sql = "ALTER TABLE `command_log` MODIFY `command_id` VARCHAR(320) CHARACTER SET utf8mb4 \
                   COLLATE utf8mb4_bin NOT NULL";
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Narrowing the column could cut stored ids: not done.
        Ok(())
    }
}
