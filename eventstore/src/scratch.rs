//! Throwaway databases for tests and benchmarks: each gets its own, so they
//! run in parallel. A MySQL scratch database is `pointstream_test_<random>`
//! on the server named by `POINTSTREAM_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`), dropped when the value is dropped.
//!
//! A missing MariaDB is an error that says how to start it. Locally (never
//! in CI, where `CI` is set) `POINTSTREAM_SKIP_MYSQL=1` skips MySQL instead.

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

/// Where the MySQL test server is.
pub fn mysql_server_url() -> String {
    std::env::var("POINTSTREAM_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string())
}

/// True when MySQL tests were explicitly opted out of (never in CI).
pub fn mysql_skipped() -> bool {
    std::env::var_os("CI").is_none() && std::env::var("POINTSTREAM_SKIP_MYSQL").is_ok_and(|v| v == "1")
}

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// URL to connect to it.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Mysql { server: String, name: String },
    Sqlite { path: PathBuf },
}

impl ScratchDatabase {
    /// A fresh, empty SQLite file in the temp directory.
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("pointstream_test_{}.db", uuid::Uuid::new_v4().simple()));
        Self { url: format!("sqlite://{}", path.display()), cleanup: Cleanup::Sqlite { path } }
    }

    /// A fresh, empty MySQL database; `Ok(None)` only when MySQL was opted out of.
    pub async fn mysql() -> Result<Option<Self>, String> {
        if mysql_skipped() {
            eprintln!("POINTSTREAM_SKIP_MYSQL=1: skipping a MySQL test");
            return Ok(None);
        }
        let server = mysql_server_url();
        let admin = Database::connect(&server).await.map_err(|e| {
            format!(
                "MariaDB is not reachable at {server} ({e}). Start it with \
                 `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`, \
                 or point POINTSTREAM_TEST_MYSQL_URL at a server."
            )
        })?;
        let name = format!("pointstream_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_raw(Statement::from_string(DbBackend::MySql, format!("CREATE DATABASE `{name}`")))
            .await
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        let _ = admin.close().await;
        Ok(Some(Self { url: format!("{server}/{name}"), cleanup: Cleanup::Mysql { server, name } }))
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Mysql { server, name } => {
                let (server, name) = (server.clone(), name.clone());
                // Drop may run inside a runtime: do the async work on a thread of its own.
                let _ = std::thread::spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        return;
                    };
                    runtime.block_on(async {
                        if let Ok(admin) = Database::connect(&server).await {
                            let sql = format!("DROP DATABASE IF EXISTS `{name}`");
                            let _ = admin.execute_raw(Statement::from_string(DbBackend::MySql, sql)).await;
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}
