//! Social accounts that keep working: where an account lives (a Mastodon
//! instance, a Bluesky PDS) and whether it needs linking again, on
//! `social_accounts`; the OAuth flows in progress (`social_link_flows`); and
//! pointstream's registration with each Mastodon instance (`social_apps`).
//! Secrets in both new tables are sealed, as in `social_tokens`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000010_social_links"
    }
}

/// The new columns of `social_accounts`.
#[derive(Iden, Clone, Copy)]
enum SocialAccounts {
    Table,
    Instance,
    Status,
    Reason,
}

/// Columns of `SocialLinkFlows`: one OAuth flow, from `startSocialLink` to
/// its callback (and, for Facebook, to the member's choice of Page).
#[derive(Iden, Clone, Copy)]
pub enum SocialLinkFlows {
    Table,
    /// Hex SHA-256 of the flow's secret (the OAuth `state`, or the Page
    /// choice's id): the secret itself is never stored.
    Id,
    MemberId,
    Provider,
    /// `authorize` (waiting for the callback) or `choose_page`.
    Stage,
    /// Hex of the AEAD nonce.
    Nonce,
    /// The sealed rest (PKCE verifier, instance; the Pages and their tokens).
    Ciphertext,
    ExpiresAtUs,
}

/// Columns of `SocialApps`: pointstream as an app registered at one server
/// of a network with many (a Mastodon instance).
#[derive(Iden, Clone, Copy)]
pub enum SocialApps {
    Table,
    Provider,
    /// The instance's base URL.
    Instance,
    ClientId,
    Nonce,
    /// The sealed client secret.
    Ciphertext,
    CreatedAtUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            ColumnDef::new(SocialAccounts::Instance).string_len(255).null().to_owned(),
            ColumnDef::new(SocialAccounts::Status).string_len(16).not_null().default("linked").to_owned(),
            ColumnDef::new(SocialAccounts::Reason).string_len(255).null().to_owned(),
        ];
        for mut column in columns {
            if !manager.has_column("social_accounts", &column.get_column_name()).await? {
                manager
                    .alter_table(Table::alter().table(SocialAccounts::Table).add_column(&mut column).to_owned())
                    .await?;
            }
        }
        manager
            .create_table(
                Table::create()
                    .table(SocialLinkFlows::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(SocialLinkFlows::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(SocialLinkFlows::MemberId).string_len(64).not_null())
                    .col(ColumnDef::new(SocialLinkFlows::Provider).string_len(16).not_null())
                    .col(ColumnDef::new(SocialLinkFlows::Stage).string_len(16).not_null())
                    .col(ColumnDef::new(SocialLinkFlows::Nonce).string_len(64).not_null())
                    .col(ColumnDef::new(SocialLinkFlows::Ciphertext).text().not_null())
                    .col(ColumnDef::new(SocialLinkFlows::ExpiresAtUs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SocialApps::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(SocialApps::Provider).string_len(16).not_null())
                    .col(ColumnDef::new(SocialApps::Instance).string_len(255).not_null())
                    .col(ColumnDef::new(SocialApps::ClientId).string_len(255).not_null())
                    .col(ColumnDef::new(SocialApps::Nonce).string_len(64).not_null())
                    .col(ColumnDef::new(SocialApps::Ciphertext).text().not_null())
                    .col(ColumnDef::new(SocialApps::CreatedAtUs).big_integer().not_null())
                    .primary_key(Index::create().col(SocialApps::Provider).col(SocialApps::Instance))
                    .to_owned(),
            )
            .await?;
        // Identifiers compare byte for byte, as everywhere (migration 3).
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::MySql {
            for table in ["social_link_flows", "social_apps"] {
                db.execute_unprepared(&format!(
                    "ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                ))
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(SocialApps::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SocialLinkFlows::Table).to_owned()).await?;
        for column in [SocialAccounts::Reason, SocialAccounts::Status, SocialAccounts::Instance] {
            manager.alter_table(Table::alter().table(SocialAccounts::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
