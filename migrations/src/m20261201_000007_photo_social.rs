//! `post_photo_social`: how each photo added after its post was created is
//! cross-posted, per provider (the post's first photos go out with the post,
//! whose status is `post_social`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000007_photo_social"
    }
}

/// Columns of `PostPhotoSocial`: those of `post_social` and the photo's key.
#[derive(Iden, Clone, Copy)]
pub enum PostPhotoSocial {
    Table,
    PostId,
    PhotoKey,
    Provider,
    Status,
    ExternalId,
    Url,
    Reason,
    Attempts,
    UpdatedAtUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use PostPhotoSocial as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(C::PostId).string_len(64).not_null())
                    .col(ColumnDef::new(C::PhotoKey).string_len(255).not_null())
                    .col(ColumnDef::new(C::Provider).string_len(16).not_null())
                    .col(ColumnDef::new(C::Status).string_len(16).not_null())
                    .col(ColumnDef::new(C::ExternalId).string_len(255).null())
                    .col(ColumnDef::new(C::Url).string_len(1024).null())
                    .col(ColumnDef::new(C::Reason).string_len(255).null())
                    .col(ColumnDef::new(C::Attempts).big_integer().not_null())
                    .col(ColumnDef::new(C::UpdatedAtUs).big_integer().not_null())
                    .primary_key(Index::create().col(C::PostId).col(C::PhotoKey).col(C::Provider))
                    .to_owned(),
            )
            .await?;
        // Identifiers compare byte for byte, as everywhere (migration 3).
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::MySql {
            db.execute_unprepared("ALTER TABLE post_photo_social CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(PostPhotoSocial::Table).to_owned()).await
    }
}
