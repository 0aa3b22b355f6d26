//! The one way to open a database: `mysql://...` or `sqlite://...`.

use std::time::Duration;

use migrations::MigratorTrait;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait};

use crate::error::EventStoreError;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://pointstream.db";

/// Opens a pool for `url`. SQLite files are created if missing and run in WAL
/// mode; MySQL pools hold up to `max_connections`.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, EventStoreError> {
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
        options.max_connections(max_connections.max(2)).min_connections(1);
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
