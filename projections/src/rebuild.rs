//! Rebuilding a projection from position 0 while queries keep being answered.
//!
//! The rebuild fills shadow copies of the projection's tables (and of its
//! checkpoint) from the log, then swaps them in at once: one `RENAME TABLE`
//! on MySQL, one transaction on SQLite. Until then queries read the old
//! tables, which the live projector keeps up to date. Because the checkpoint
//! is swapped with the rows, the live projector simply continues from the
//! rebuilt checkpoint.

use std::time::{Duration, Instant};

use eventstore::{EventStore, RecordedEvent};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use tokio::sync::{mpsc, watch};

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::projection::{Names, Projection, RETIRED_SUFFIX, SHADOW_SUFFIX, decode_all};
use crate::table::Writes;

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RebuildReport {
    /// The projection.
    pub name: &'static str,
    /// Events applied.
    pub events: u64,
    /// Position the new tables were built up to when swapped in.
    pub position: u64,
    /// How long it took.
    pub took: Duration,
}

impl RebuildReport {
    /// Events applied per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

fn tables<P: Projection>() -> Vec<String> {
    let mut tables: Vec<String> = P::TABLES.iter().map(|t| t.to_string()).collect();
    tables.push(checkpoint::table(P::NAME, &Names::LIVE));
    tables
}

fn quote(backend: DbBackend, name: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

async fn run(db: &impl ConnectionTrait, sql: String) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql)).await.map(|_| ())
}

/// Rebuilds projection `P` from position 0 and swaps it in; `progress` is
/// called after every batch with (position reached, head of the log).
///
/// The log is read as stored (not from the store's memory of recent
/// commits): a rebuild is what repairs a read model from the database.
/// Three tasks overlap: one reads the log ahead, a page at a time; this one
/// applies a page in memory; one writes the page before (its rows and the
/// shadow checkpoint, in one transaction). Only the rebuild writes the shadow
/// tables, so the rows a page saved stay good for the next
/// ([`Projection::retain`]): a page reads only rows it has not seen yet, and
/// then only once the pages before it are written.
pub async fn rebuild<P: Projection>(
    store: &EventStore,
    batch_size: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, ProjectionError> {
    let started = Instant::now();
    let db = store.db();
    let indexes = create_shadow::<P>(db).await?;
    let (pages_tx, mut pages) = mpsc::channel::<(Vec<RecordedEvent>, u64)>(2);
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut after = 0;
        loop {
            let page = reader_store.read_stored(after, batch_size).await?;
            let head = reader_store.read_head().await?;
            let (empty, caught_up) = (page.is_empty(), page.is_empty() && after >= head);
            after = page.last().map_or(after, |e| e.position);
            if pages_tx.send((page, head)).await.is_err() || caught_up {
                return Ok::<_, ProjectionError>(());
            }
            if empty {
                // The head is ahead of what can be read yet: wait for it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    // The pages' writes go to a task of their own, in order, each in one
    // transaction with the checkpoint, while this one applies the next page.
    let (writes_tx, mut writes) = mpsc::channel::<(u64, u64, Writes)>(2);
    let (committed_tx, mut committed) = watch::channel(0u64);
    let writer_db = db.clone();
    let writer = tokio::spawn(async move {
        while let Some((from, to, page_writes)) = writes.recv().await {
            let txn = writer_db.begin().await?;
            if !checkpoint::advance(&txn, P::NAME, &Names::SHADOW, from, to, eventstore::now_us()).await? {
                return Err(ProjectionError::Concurrent(P::NAME));
            }
            page_writes.run(&txn).await?;
            txn.commit().await?;
            committed_tx.send_replace(to);
        }
        Ok::<_, ProjectionError>(())
    });
    let (mut position, mut events) = (0, 0);
    let mut kept: Option<P::State> = None;
    while let Some((page, head)) = pages.recv().await {
        if page.is_empty() {
            progress(position, head);
            continue;
        }
        // A hole anywhere in the page (a deleted event) stops the rebuild
        // rather than swapping in a model without it.
        for (expected, event) in (position + 1..).zip(&page) {
            if event.position != expected {
                return Err(ProjectionError::Gap { after: expected - 1, next: event.position });
            }
        }
        let last = page.last().map_or(position, |e| e.position);
        let decoded = decode_all::<P>(&page)?;
        let mut page_writes = Writes::default();
        if !decoded.is_empty() {
            let mut state = match P::without_reading(kept.as_ref(), &decoded) {
                Some(state) => state,
                None => {
                    // Rows to read: what the pages before wrote must be in first.
                    while *committed.borrow_and_update() < position {
                        if committed.changed().await.is_err() {
                            break;
                        }
                    }
                    let rows = kept.as_ref().map(|kept| P::kept_for(kept, &decoded)).unwrap_or_default();
                    let txn = db.begin().await?;
                    let state = P::load_after(&txn, &Names::SHADOW, &decoded, rows).await?;
                    txn.commit().await?;
                    state
                }
            };
            for (event, view) in &decoded {
                P::apply(&mut state, event, view)?;
            }
            page_writes = P::writes(&mut state, &Names::SHADOW)?;
            kept = P::retain(kept.take(), state);
        }
        if writes_tx.send((position, last, page_writes)).await.is_err() {
            // The writer stopped: its error says why.
            break;
        }
        (position, events) = (last, events + page.len() as u64);
        progress(position, head);
    }
    drop(writes_tx);
    writer.await.map_err(|err| ProjectionError::Task(err.to_string()))??;
    reader.await.map_err(|err| ProjectionError::Task(err.to_string()))??;
    // Secondary indexes are built once, sorted, rather than row by row.
    for statement in &indexes {
        run(db, statement.clone()).await?;
    }
    swap::<P>(db).await?;
    Ok(RebuildReport { name: P::NAME, events, position, took: started.elapsed() })
}

/// Empty shadow copies of every table of `P`, its checkpoint at 0, without
/// their secondary indexes; returns the statements that add those.
async fn create_shadow<P: Projection>(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let backend = db.get_database_backend();
    let mut indexes = Vec::new();
    for table in tables::<P>() {
        let shadow = format!("{table}{SHADOW_SUFFIX}");
        run(db, format!("DROP TABLE IF EXISTS {}", quote(backend, &shadow))).await?;
        if backend == DbBackend::MySql {
            run(db, format!("CREATE TABLE `{shadow}` LIKE `{table}`")).await?;
            let (drop, add) = mysql_secondary_indexes(db, &shadow).await?;
            if !drop.is_empty() {
                run(db, format!("ALTER TABLE `{shadow}` {}", drop.join(", "))).await?;
                indexes.push(format!("ALTER TABLE `{shadow}` {}", add.join(", ")));
            }
            continue;
        }
        // SQLite: the stored DDL, renamed; index names are global, so the
        // shadow's indexes take the other of the two names an index can have.
        let objects = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC",
                [table.as_str().into()],
            ))
            .await?;
        for object in objects {
            let (kind, name, sql): (String, String, String) =
                (object.try_get("", "type")?, object.try_get("", "name")?, object.try_get("", "sql")?);
            let sql = if kind == "table" {
                sql.replacen(&format!("\"{table}\""), &format!("\"{shadow}\""), 1)
            } else {
                let renamed = match name.strip_suffix(SHADOW_SUFFIX) {
                    Some(base) => base.to_string(),
                    None => format!("{name}{SHADOW_SUFFIX}"),
                };
                run(db, format!("DROP INDEX IF EXISTS \"{renamed}\"")).await?;
                indexes.push(sql.replacen(&format!("\"{name}\""), &format!("\"{renamed}\""), 1).replacen(
                    &format!("ON \"{table}\""),
                    &format!("ON \"{shadow}\""),
                    1,
                ));
                continue;
            };
            run(db, sql).await?;
        }
    }
    let seed = format!(
        "INSERT INTO {} (id, position, updated_at_us) VALUES (1, 0, 0)",
        quote(backend, &checkpoint::table(P::NAME, &Names::SHADOW))
    );
    run(db, seed).await?;
    Ok(indexes)
}

/// The secondary indexes of a MySQL table: clauses that drop them and clauses
/// that add them back.
async fn mysql_secondary_indexes(db: &DatabaseConnection, table: &str) -> Result<(Vec<String>, Vec<String>), DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT INDEX_NAME AS name, NON_UNIQUE AS non_unique, COLUMN_NAME AS col FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME <> 'PRIMARY' \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            [table.into()],
        ))
        .await?;
    let mut indexes: Vec<(String, bool, Vec<String>)> = Vec::new();
    for row in rows {
        let (name, non_unique, column): (String, i64, String) =
            (row.try_get("", "name")?, row.try_get("", "non_unique")?, row.try_get("", "col")?);
        match indexes.last_mut() {
            Some((last, _, columns)) if *last == name => columns.push(format!("`{column}`")),
            _ => indexes.push((name, non_unique == 0, vec![format!("`{column}`")])),
        }
    }
    let drop = indexes.iter().map(|(name, _, _)| format!("DROP INDEX `{name}`")).collect();
    let add = indexes
        .iter()
        .map(|(name, unique, columns)| {
            format!("ADD {}INDEX `{name}` ({})", if *unique { "UNIQUE " } else { "" }, columns.join(", "))
        })
        .collect();
    Ok((drop, add))
}

/// Puts the shadow tables of `P` in place of the live ones, all at once.
async fn swap<P: Projection>(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let tables = tables::<P>();
    if backend == DbBackend::MySql {
        let pairs: Vec<String> = tables
            .iter()
            .flat_map(|t| [format!("`{t}` TO `{t}{RETIRED_SUFFIX}`"), format!("`{t}{SHADOW_SUFFIX}` TO `{t}`")])
            .collect();
        // Left over by a rebuild that died between its rename and its drop.
        let leftovers: Vec<String> = tables.iter().map(|t| format!("`{t}{RETIRED_SUFFIX}`")).collect();
        run(db, format!("DROP TABLE IF EXISTS {}", leftovers.join(", "))).await?;
        run(db, format!("RENAME TABLE {}", pairs.join(", "))).await?;
        let retired: Vec<String> = tables.iter().map(|t| format!("`{t}{RETIRED_SUFFIX}`")).collect();
        return run(db, format!("DROP TABLE {}", retired.join(", "))).await;
    }
    let txn = db.begin().await?;
    for t in &tables {
        run(&txn, format!("ALTER TABLE \"{t}\" RENAME TO \"{t}{RETIRED_SUFFIX}\"")).await?;
        run(&txn, format!("ALTER TABLE \"{t}{SHADOW_SUFFIX}\" RENAME TO \"{t}\"")).await?;
        run(&txn, format!("DROP TABLE \"{t}{RETIRED_SUFFIX}\"")).await?;
    }
    txn.commit().await
}
