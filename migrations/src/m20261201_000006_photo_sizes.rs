//! Photos record their size, and posts count their photos (so a photo added
//! later gets the next display index).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

use crate::m20261125_000002_read_models::{PostPhotos, Posts};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000006_photo_sizes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(PostPhotos::Table)
                    .add_column(ColumnDef::new(Alias::new("size")).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Posts::Table)
                    .add_column(ColumnDef::new(Alias::new("photo_count")).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE posts SET photo_count = (SELECT COUNT(*) FROM post_photos WHERE post_photos.post_id = posts.post_id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Posts::Table).drop_column(Alias::new("photo_count")).to_owned())
            .await?;
        manager.alter_table(Table::alter().table(PostPhotos::Table).drop_column(Alias::new("size")).to_owned()).await
    }
}
