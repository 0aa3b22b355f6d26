//! Social access tokens, encrypted (AEAD), in a table of their own: never in
//! events, read models, logs or GraphQL output. And the checkpoint of the
//! embedded social worker, which follows the log itself when there is no Redis.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::m20261125_000002_read_models::create_checkpoint;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000005_social_tokens"
    }
}

/// Columns of `SocialTokens`.
#[derive(Iden, Clone, Copy)]
pub enum SocialTokens {
    Table,
    MemberId,
    Provider,
    /// Hex of the AEAD nonce.
    Nonce,
    /// Hex of the ciphertext (with its tag).
    Ciphertext,
    UpdatedAtUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SocialTokens::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(SocialTokens::MemberId).string_len(64).not_null())
                    .col(ColumnDef::new(SocialTokens::Provider).string_len(16).not_null())
                    .col(ColumnDef::new(SocialTokens::Nonce).string_len(64).not_null())
                    .col(ColumnDef::new(SocialTokens::Ciphertext).text().not_null())
                    .col(ColumnDef::new(SocialTokens::UpdatedAtUs).big_integer().not_null())
                    .primary_key(Index::create().col(SocialTokens::MemberId).col(SocialTokens::Provider))
                    .to_owned(),
            )
            .await?;
        create_checkpoint(manager, "social_checkpoint").await?;
        // Identifiers compare byte for byte, as everywhere (migration 3).
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::MySql {
            db.execute_unprepared("ALTER TABLE social_tokens CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Alias::new("social_checkpoint")).to_owned()).await?;
        manager.drop_table(Table::drop().table(SocialTokens::Table).to_owned()).await
    }
}
