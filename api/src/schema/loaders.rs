//! DataLoaders: rows looked up by key are batched, so a page of 100 posts
//! with their authors, stores, photos and social status costs one query per
//! table, not one per post.
//!
//! Each HTTP request gets its own loaders with a cache, which pages prime
//! with one `load_many` per table for the relations the query selects; the
//! fields then read from the cache. Batching by timing alone (the loader
//! waits 1 ms for keys) would split a page into several batches whenever
//! resolving it takes longer than that. The schema also holds uncached
//! loaders for requests without their own (WebSocket operations).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use projections::entities::{balances, members, post_photo_social, post_photos, post_social, social_accounts, stores};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

/// Rows of `E` whose `column` is one of the keys, grouped by that key and
/// kept in `order`; every key gets an entry (empty when no row has it), so a
/// cache knows about the misses too.
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
        let mut grouped: HashMap<String, Vec<E::Model>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for row in rows {
            grouped.entry((self.key)(&row)).or_default().push(row);
        }
        Ok(grouped)
    }
}

/// A loader of rows of `E` by key.
pub type RowLoader<E> = DataLoader<RowsBy<E>, HashMapCache>;

/// Every loader the schema uses.
pub struct Loaders {
    /// Whether they cache (one request's own loaders do).
    pub cached: bool,
    /// Members by id.
    pub members: RowLoader<members::Entity>,
    /// Stores by id.
    pub stores: RowLoader<stores::Entity>,
    /// A post's photos by post id.
    pub photos: RowLoader<post_photos::Entity>,
    /// A post's social status by post id.
    pub social: RowLoader<post_social::Entity>,
    /// The social status of a post's later photos by post id.
    pub photo_social: RowLoader<post_photo_social::Entity>,
    /// A member's social accounts by member id.
    pub accounts: RowLoader<social_accounts::Entity>,
}

/// Balance reads after wallet mutations, batched across concurrent requests
/// (shared by all, never cached): many mutations finishing together cost one
/// query.
pub struct BalanceReads(RowLoader<balances::Entity>);

impl BalanceReads {
    /// Reads through `db`.
    pub fn new(db: &DatabaseConnection) -> Self {
        let by_member = |b: &balances::Model| b.member_id.clone();
        let loader = DataLoader::with_cache(
            RowsBy {
                db: db.clone(),
                column: balances::Column::MemberId,
                order: balances::Column::StoreId,
                key: by_member,
            },
            tokio::spawn,
            HashMapCache::new(),
        );
        loader.enable_all_cache(false);
        BalanceReads(loader)
    }

    /// A member's balance row at a store, as stored now.
    pub async fn get(&self, member: &str, store: &str) -> Result<Option<balances::Model>, Arc<DbErr>> {
        let rows = self.0.load_one(member.to_string()).await?.unwrap_or_default();
        Ok(rows.into_iter().find(|row| row.store_id == store))
    }
}

impl Loaders {
    /// Loaders reading through `db`: caching for one request, or not (shared by all).
    pub fn new(db: &DatabaseConnection, cache: bool) -> Self {
        fn loader<E: EntityTrait>(
            db: &DatabaseConnection,
            cache: bool,
            column: E::Column,
            order: E::Column,
            key: fn(&E::Model) -> String,
        ) -> RowLoader<E>
        where
            E::Model: Sync,
        {
            let loader = DataLoader::with_cache(
                RowsBy { db: db.clone(), column, order, key },
                tokio::spawn,
                HashMapCache::new(),
            );
            loader.enable_all_cache(cache);
            loader
        }
        Loaders {
            cached: cache,
            members: loader::<members::Entity>(db, cache, members::Column::MemberId, members::Column::MemberId, |m| {
                m.member_id.clone()
            }),
            stores: loader::<stores::Entity>(db, cache, stores::Column::StoreId, stores::Column::StoreId, |s| {
                s.store_id.clone()
            }),
            photos: loader::<post_photos::Entity>(
                db,
                cache,
                post_photos::Column::PostId,
                post_photos::Column::Idx,
                |p| p.post_id.clone(),
            ),
            social: loader::<post_social::Entity>(
                db,
                cache,
                post_social::Column::PostId,
                post_social::Column::Provider,
                |s| s.post_id.clone(),
            ),
            photo_social: loader::<post_photo_social::Entity>(
                db,
                cache,
                post_photo_social::Column::PostId,
                post_photo_social::Column::Provider,
                |s| s.post_id.clone(),
            ),
            accounts: loader::<social_accounts::Entity>(
                db,
                cache,
                social_accounts::Column::MemberId,
                social_accounts::Column::Provider,
                |a| a.member_id.clone(),
            ),
        }
    }
}
