//! The one way to open a database: `mysql://...` or `sqlite://...`.

use std::time::Duration;

use migrations::MigratorTrait;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait};

use crate::error::EventStoreError;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://pointstream.db";

/// Prepared statements each MySQL connection keeps. Statement shapes are
/// bounded (see [`statement_chunks`]) so that they fit: an evicted statement
/// costs a `COM_STMT_CLOSE`, and sqlx 0.9 connections run without
/// `TCP_NODELAY`, where a close followed by the next request waits out the
/// peer's delayed ACK (about 40 ms).
const STATEMENT_CACHE: usize = 256;

/// Rows a multi-row statement may hold in any number: up to here every
/// length has its own shape, so that the few rows of a typical group commit
/// go in one statement.
pub const EXACT_ROWS: usize = 16;

/// Splits `items` into chunks whose sizes are powers of two up to `max` (a
/// power of two), largest first, and a last chunk of at most [`EXACT_ROWS`]
/// of any length: multi-row statements then come in a bounded set of shapes
/// that stay prepared, instead of one new statement per length.
pub fn statement_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let max = max.next_power_of_two();
    let mut chunks = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let size = if rest.len() >= max {
            max
        } else if rest.len() <= EXACT_ROWS {
            rest.len()
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Like [`statement_chunks`], for statements where a repeated item is
/// harmless (IN lists, upserts, deletes by key): chunks of `max` items, and
/// the rest in one chunk padded to the next power of two by repeating its last
/// item. The same few shapes, in one statement per `max` items instead of one
/// per set bit of the length.
pub fn padded_chunks<T>(items: &[T], max: usize) -> Vec<Vec<&T>> {
    let max = max.next_power_of_two();
    items
        .chunks(max)
        .map(|chunk| {
            let mut padded: Vec<&T> = chunk.iter().collect();
            if let Some(last) = chunk.last() {
                padded.resize(chunk.len().next_power_of_two(), last);
            }
            padded
        })
        .collect()
}

/// How multi-row statements are cut into statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shapes {
    /// Sent as prepared statements: a few fixed lengths ([`statement_chunks`],
    /// [`padded_chunks`]), which stay in the statement cache.
    Prepared,
    /// Written into a [`crate::Script`], which is never prepared: any length,
    /// as few statements as `max` rows allow, and no row repeated (a repeated
    /// row of an upsert is one more duplicate-key update for the server).
    Script,
}

impl Shapes {
    /// `items` cut for statements that must not repeat one (inserts).
    pub fn chunks<T>(self, items: &[T], max: usize) -> Vec<&[T]> {
        match self {
            Shapes::Prepared => statement_chunks(items, max),
            Shapes::Script => items.chunks(max.max(1)).collect(),
        }
    }

    /// `items` cut for statements where a repeated item is harmless (upserts,
    /// deletes by key): prepared ones padded as [`padded_chunks`] does.
    pub fn padded<T>(self, items: &[T], max: usize) -> Vec<Vec<&T>> {
        match self {
            Shapes::Prepared => padded_chunks(items, max),
            Shapes::Script => items.chunks(max.max(1)).map(|chunk| chunk.iter().collect()).collect(),
        }
    }
}

/// Prepared statements each of the group commit's own MySQL connections
/// keeps: it runs the log's inserts and every inline projection's statements.
const WRITER_STATEMENT_CACHE: usize = 1024;

/// The session of the group commit's own MySQL connections.
///
/// READ COMMITTED: inline projections read their rows after locking their
/// checkpoints, one projection after another in one transaction; under
/// REPEATABLE READ the first read would fix a snapshot older than a later lock.
///
/// Strict mode for every table: a script's checks fail their statement by
/// assigning NULL to a `NOT NULL` column (`crate::script::fails_unless`),
/// which outside strict mode would store a zero instead.
const WRITER_SESSION: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                              SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')";

/// Opens a pool for `url`. SQLite files are created if missing and run in WAL
/// mode; MySQL pools hold up to `max_connections`.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, EventStoreError> {
    connect_with(url, max_connections, false).await
}

/// The group commit's own pool on MySQL: READ COMMITTED, a larger statement cache.
pub(crate) async fn connect_writer(url: &str, max_connections: u32) -> Result<DatabaseConnection, EventStoreError> {
    connect_with(url, max_connections, true).await
}

async fn connect_with(url: &str, max_connections: u32, writer: bool) -> Result<DatabaseConnection, EventStoreError> {
    let mut options = ConnectOptions::new(url.to_string());
    options.sqlx_logging(false).acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        options.max_connections(max_connections.clamp(1, 8)).map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
        });
    } else if url.starts_with("mysql:") {
        let cache = if writer { WRITER_STATEMENT_CACHE } else { STATEMENT_CACHE };
        options
            .max_connections(max_connections.max(2))
            .min_connections(1)
            .map_sqlx_mysql_opts(move |o| o.statement_cache_capacity(cache));
        if writer {
            // sqlx pings a connection before handing it out and again when it
            // comes back. The group commit's connections are in constant
            // use and checked on every return: the ping before each append
            // would be one more round trip inside it.
            options.map_sqlx_mysql_pool_opts(|pool| {
                pool.test_before_acquire(false).after_connect(|connection, _| {
                    Box::pin(
                        async move { sea_orm::sqlx::Executor::execute(connection, WRITER_SESSION).await.map(|_| ()) },
                    )
                })
            });
        }
    } else {
        return Err(EventStoreError::UnsupportedUrl(url.to_string()));
    }
    Ok(Database::connect(options).await?)
}

/// Applies every pending migration. On MySQL a named lock keeps processes
/// starting together from migrating at the same time.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), EventStoreError> {
    if db.get_database_backend() != DbBackend::MySql {
        migrations::Migrator::up(db, None).await?;
        return Ok(());
    }
    let lock = db.begin().await?;
    lock.execute_raw(Statement::from_string(DbBackend::MySql, "SELECT GET_LOCK('pointstream_migrate', 60)")).await?;
    let result = migrations::Migrator::up(db, None).await;
    lock.execute_raw(Statement::from_string(DbBackend::MySql, "SELECT RELEASE_LOCK('pointstream_migrate')")).await?;
    lock.commit().await?;
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::{Shapes, padded_chunks, statement_chunks};

    #[test]
    fn statement_chunks_are_powers_of_two_then_a_short_rest_covering_everything_in_order() {
        let items: Vec<u32> = (0..1_100).collect();
        let sizes = |n: usize| statement_chunks(&items[..n], 256).iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(1_000), vec![256, 256, 256, 128, 64, 32, 8]);
        assert_eq!(sizes(1_003), vec![256, 256, 256, 128, 64, 32, 11]);
        assert_eq!(sizes(300), vec![256, 32, 12]);
        assert_eq!(statement_chunks(&items, 256).concat(), items);
        assert_eq!(statement_chunks(&items[..1_003], 256).concat(), &items[..1_003]);
        assert!(statement_chunks::<u32>(&[], 256).is_empty());
        assert_eq!(sizes(3), vec![3]);
        assert_eq!(sizes(16), vec![16]);
        assert_eq!(sizes(17), vec![16, 1]);
    }

    #[test]
    fn padded_chunks_repeat_the_last_item_up_to_a_power_of_two() {
        let items: Vec<u32> = (0..1_000).collect();
        let chunks = padded_chunks(&items, 256);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 256, 256, 256]);
        let last = &chunks[3];
        assert_eq!(*last[231], 999);
        assert!(last[232..].iter().all(|item| **item == 999));
        let covered: Vec<u32> = chunks.concat().into_iter().copied().take(1_000).collect();
        assert_eq!(covered, items);
        assert!(padded_chunks::<u32>(&[], 256).is_empty());
        assert_eq!(padded_chunks(&[1, 2, 3], 256), vec![vec![&1, &2, &3, &3]]);
    }

    #[test]
    fn a_script_cuts_rows_only_at_the_limit_and_repeats_none() {
        let items: Vec<u32> = (0..1_003).collect();
        let sizes: Vec<usize> = Shapes::Script.chunks(&items, 256).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![256, 256, 256, 235]);
        assert_eq!(Shapes::Script.chunks(&items, 256).concat(), items);
        assert_eq!(Shapes::Script.padded(&[1, 2, 3], 256), vec![vec![&1, &2, &3]]);
        assert_eq!(Shapes::Prepared.padded(&[1, 2, 3], 256), padded_chunks(&[1, 2, 3], 256));
        assert_eq!(Shapes::Prepared.chunks(&items, 256), statement_chunks(&items, 256));
        assert!(Shapes::Script.padded::<u32>(&[], 256).is_empty());
    }
}
