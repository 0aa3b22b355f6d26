//! DataLoaders: rows looked up by key are batched, so a page of 100 posts
//! with their authors, stores, photos and social status costs one query per
//! table, not one per post.
//!
//! Each HTTP request gets its own loaders with a cache (built when a field
//! first asks for them), which pages prime
//! with one `load_many` per table for the relations the query selects; the
//! fields then read from the cache. Batching by timing alone (the loader
//! waits 1 ms for keys) would split a page into several batches whenever
//! resolving it takes longer than that. The schema also holds uncached
//! loaders for requests without their own (WebSocket operations).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use eventstore::EventStore;
use projections::entities::{balances, members, post_photo_social, post_photos, post_social, social_accounts, stores};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};
use tokio::sync::{mpsc, oneshot};

use crate::replicas::ReadRoute;

/// Most keys in one query's IN list (`eventstore::padded_chunks` pads shorter lists to a power of two).
const KEYS_PER_QUERY: usize = 256;

/// Rows of `E` whose `column` is one of the keys, grouped by that key and
/// kept in `order`; every key gets an entry (empty when no row has it), so a
/// cache knows about the misses too.
pub struct RowsBy<E: EntityTrait> {
    db: ReadConn,
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
        let mut grouped: HashMap<String, Vec<E::Model>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        let db = self.db.get().await;
        // IN lists padded to a few lengths, so the statements stay prepared;
        // each key's rows come from one query, in `order`.
        for chunk in eventstore::padded_chunks(keys, KEYS_PER_QUERY) {
            let rows = E::find()
                .filter(self.column.is_in(chunk.into_iter().cloned()))
                .order_by_asc(self.order)
                .all(&db)
                .await
                .map_err(Arc::new)?;
            for row in rows {
                grouped.entry((self.key)(&row)).or_default().push(row);
            }
        }
        Ok(grouped)
    }
}

/// Where a loader reads.
#[derive(Clone)]
pub enum ReadConn {
    /// Always this pool (the primary's, say).
    Fixed(DatabaseConnection),
    /// Where its request's route leads (a replica, or the primary).
    Routed(Arc<ReadRoute>),
}

impl ReadConn {
    async fn get(&self) -> DatabaseConnection {
        match self {
            ReadConn::Fixed(db) => db.clone(),
            ReadConn::Routed(route) => route.db().await,
        }
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
/// the way appends are group-committed: a read goes out at once, and those
/// arriving while it runs go together in the next. Many mutations finishing
/// together cost one query, and a lone one waits for nothing.
pub struct BalanceReads {
    store: EventStore,
    requests: mpsc::Sender<BalanceRead>,
}

/// One balance wanted: (member, store) and where the answer goes.
type BalanceRead = (String, String, oneshot::Sender<Result<Option<balances::Model>, Arc<DbErr>>>);

/// Most reads answered by one batch.
const BALANCE_READS_PER_BATCH: usize = 256;

impl BalanceReads {
    /// Reads through `store`'s pool, from a task that ends with the last handle.
    pub fn new(store: &EventStore) -> Self {
        let (requests, mut pending) = mpsc::channel::<BalanceRead>(4 * BALANCE_READS_PER_BATCH);
        let by_member = RowsBy::<balances::Entity> {
            db: ReadConn::Fixed(store.db().clone()),
            column: balances::Column::MemberId,
            order: balances::Column::StoreId,
            key: |b| b.member_id.clone(),
        };
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BALANCE_READS_PER_BATCH);
            while pending.recv_many(&mut batch, BALANCE_READS_PER_BATCH).await > 0 {
                let members: Vec<String> =
                    batch.iter().map(|(member, _, _)| member.clone()).collect::<BTreeSet<_>>().into_iter().collect();
                let found = by_member.load(&members).await;
                for (member, store, reply) in batch.drain(..) {
                    let answer = found.as_ref().map_err(Arc::clone).map(|rows| {
                        rows.get(&member).and_then(|rows| rows.iter().find(|row| row.store_id == store)).cloned()
                    });
                    let _ = reply.send(answer);
                }
            }
        });
        BalanceReads { store: store.clone(), requests }
    }

    /// A member's balance row at a store once it has applied `position`: the
    /// row this process's appends just stored when it is kept in memory
    /// (wallets written inline), else as stored now.
    pub async fn get(&self, member: &str, store: &str, position: u64) -> Result<Option<balances::Model>, Arc<DbErr>> {
        if let Some(row) = projections::inline::kept_balance(&self.store, member, store, position) {
            return Ok(Some(row));
        }
        let closed = || Arc::new(DbErr::Custom("the balance reader has stopped".into()));
        let (reply, answer) = oneshot::channel();
        self.requests.send((member.to_string(), store.to_string(), reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// One HTTP request's own caching loaders, built when a field first asks for
/// them: most requests (mutations, for one) never do. A mutation's read the
/// primary; a query's where its route leads.
pub struct RequestLoaders {
    primary: DatabaseConnection,
    route: Arc<ReadRoute>,
    built: OnceLock<Loaders>,
}

impl RequestLoaders {
    /// Loaders to read through `route`, or `primary` for a mutation, once needed.
    pub fn new(primary: &DatabaseConnection, route: Arc<ReadRoute>) -> Self {
        Self { primary: primary.clone(), route, built: OnceLock::new() }
    }

    /// The loaders, built on the first call (for a mutation if `mutation`).
    pub fn get(&self, mutation: bool) -> &Loaders {
        self.built.get_or_init(|| {
            let db =
                if mutation { ReadConn::Fixed(self.primary.clone()) } else { ReadConn::Routed(self.route.clone()) };
            Loaders::new(db, true)
        })
    }
}

impl Loaders {
    /// Loaders reading through `db`: caching for one request, or not (shared by all).
    pub fn new(db: ReadConn, cache: bool) -> Self {
        let db = &db;
        fn loader<E: EntityTrait>(
            db: &ReadConn,
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
