//! DataLoaders: rows looked up by key are batched, so a page of 100 posts
//! with their authors, stores, photos and social status costs one query per
//! table, not one per post.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use projections::entities::{members, post_photos, post_social, social_accounts, stores};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

/// Rows of `E` whose `column` is one of the keys, grouped by that key and
/// kept in `order`.
pub struct RowsBy<E: EntityTrait> {
    db: DatabaseConnection,
    column: E::Column,
    order: E::Column,
    key: fn(&E::Model) -> String,
}

impl<E: EntityTrait> Loader<String> for RowsBy<E>
where
    E::Model: Sync,
{
    type Value = Vec<E::Model>;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = E::find()
            .filter(self.column.is_in(keys.iter().cloned()))
            .order_by_asc(self.order)
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        let mut grouped: HashMap<String, Vec<E::Model>> = HashMap::new();
        for row in rows {
            grouped.entry((self.key)(&row)).or_default().push(row);
        }
        Ok(grouped)
    }
}

/// Every loader the schema uses, shared by all requests (batching without a
/// cache, so nothing is served stale).
pub struct Loaders {
    /// Members by id.
    pub members: DataLoader<RowsBy<members::Entity>>,
    /// Stores by id.
    pub stores: DataLoader<RowsBy<stores::Entity>>,
    /// A post's photos by post id.
    pub photos: DataLoader<RowsBy<post_photos::Entity>>,
    /// A post's social status by post id.
    pub social: DataLoader<RowsBy<post_social::Entity>>,
    /// A member's social accounts by member id.
    pub accounts: DataLoader<RowsBy<social_accounts::Entity>>,
}

impl Loaders {
    /// Loaders reading through `db`.
    pub fn new(db: &DatabaseConnection) -> Self {
        fn loader<E: EntityTrait>(
            db: &DatabaseConnection,
            column: E::Column,
            order: E::Column,
            key: fn(&E::Model) -> String,
        ) -> DataLoader<RowsBy<E>>
        where
            E::Model: Sync,
        {
            DataLoader::new(RowsBy { db: db.clone(), column, order, key }, tokio::spawn)
        }
        Loaders {
            members: loader::<members::Entity>(db, members::Column::MemberId, members::Column::MemberId, |m| {
                m.member_id.clone()
            }),
            stores: loader::<stores::Entity>(db, stores::Column::StoreId, stores::Column::StoreId, |s| {
                s.store_id.clone()
            }),
            photos: loader::<post_photos::Entity>(db, post_photos::Column::PostId, post_photos::Column::Idx, |p| {
                p.post_id.clone()
            }),
            social: loader::<post_social::Entity>(
                db,
                post_social::Column::PostId,
                post_social::Column::Provider,
                |s| s.post_id.clone(),
            ),
            accounts: loader::<social_accounts::Entity>(
                db,
                social_accounts::Column::MemberId,
                social_accounts::Column::Provider,
                |a| a.member_id.clone(),
            ),
        }
    }
}
