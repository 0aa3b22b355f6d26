//! Checkpoints: one single-row table per projection, `<name>_checkpoint`,
//! written in the same transaction as the projection's rows. Because it is a
//! table of the projection, a rebuild swaps it in together with the rows it
//! describes.

use eventstore::script::fails_unless;
use eventstore::{Script, Unscriptable};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, LockType, Query, UpdateStatement};
use sea_orm::{ConnectionTrait, DbErr};

use migrations::tables::Checkpoint;

use crate::projection::Names;

/// The checkpoint table of projection `name`.
pub(crate) fn table(name: &str, names: &Names) -> String {
    names.table(&format!("{name}_checkpoint"))
}

/// The position a projection has applied up to.
pub async fn read(conn: &impl ConnectionTrait, name: &str, names: &Names) -> Result<u64, DbErr> {
    Ok(read_with(conn, name, names, None).await?.0)
}

/// [`read`] with the time it was last written (which tells writes at the same
/// position apart), locking the row until the transaction ends (SQLite's
/// write transaction holds the database's lock already).
pub async fn read_locked(conn: &impl ConnectionTrait, name: &str, names: &Names) -> Result<(u64, i64), DbErr> {
    read_with(conn, name, names, Some(LockType::Update)).await
}

async fn read_with(
    conn: &impl ConnectionTrait,
    name: &str,
    names: &Names,
    lock: Option<LockType>,
) -> Result<(u64, i64), DbErr> {
    let mut select = Query::select();
    select
        .columns([Checkpoint::Position, Checkpoint::UpdatedAtUs])
        .from(Alias::new(table(name, names)))
        .and_where(Expr::col(Checkpoint::Id).eq(1));
    if let Some(lock) = lock {
        select.lock(lock);
    }
    let row = conn
        .query_one(&select)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("the checkpoint of {name} (run the migrations)")))?;
    Ok((row.try_get::<i64>("", "position")? as u64, row.try_get::<i64>("", "updated_at_us")?))
}

/// Sets the checkpoint to `to` (the caller's transaction holds its lock).
pub async fn set(conn: &impl ConnectionTrait, name: &str, names: &Names, to: u64, now_us: i64) -> Result<(), DbErr> {
    conn.execute(&update(name, names, to, now_us)).await.map(|_| ())
}

/// Moves the checkpoint from `from` to `to` only if nobody moved it
/// meanwhile; false when someone did (nothing is written then).
pub async fn advance(
    conn: &impl ConnectionTrait,
    name: &str,
    names: &Names,
    from: u64,
    to: u64,
    now_us: i64,
) -> Result<bool, DbErr> {
    advance_written_at(conn, name, names, (from, None), to, now_us).await
}

/// [`advance`] from `from`, last written at `written_at` when given (a
/// rebuild's swap can put back the same position, written at another time).
pub async fn advance_written_at(
    conn: &impl ConnectionTrait,
    name: &str,
    names: &Names,
    (from, written_at): (u64, Option<i64>),
    to: u64,
    now_us: i64,
) -> Result<bool, DbErr> {
    let mut update = update(name, names, to, now_us);
    update.and_where(Expr::col(Checkpoint::Position).eq(from as i64));
    if let Some(written_at) = written_at {
        update.and_where(Expr::col(Checkpoint::UpdatedAtUs).eq(written_at));
    }
    Ok(conn.execute(&update).await?.rows_affected() == 1)
}

/// [`advance_written_at`] as a statement of `script` that fails, and the
/// script with it, unless the checkpoint stands at `from` (and was written
/// at `written_at`, when given; see [`fails_unless`]).
pub(crate) fn advance_in(
    script: &mut Script,
    name: &str,
    names: &Names,
    (from, written_at): (u64, Option<i64>),
    to: u64,
    now_us: i64,
) -> Result<(), Unscriptable> {
    let (condition, mut values) = match written_at {
        Some(written_at) => ("`position` = ? AND `updated_at_us` = ?", vec![(from as i64).into(), written_at.into()]),
        None => ("`position` = ?", vec![(from as i64).into()]),
    };
    values.extend([(to as i64).into(), now_us.into()]);
    let sql = format!(
        "UPDATE `{}` SET `position` = {}, `updated_at_us` = ? WHERE `id` = 1",
        table(name, names),
        fails_unless(condition)
    );
    script.push_sql(&sql, &values)
}

fn update(name: &str, names: &Names, to: u64, now_us: i64) -> UpdateStatement {
    Query::update()
        .table(Alias::new(table(name, names)))
        .value(Checkpoint::Position, to as i64)
        .value(Checkpoint::UpdatedAtUs, now_us)
        .and_where(Expr::col(Checkpoint::Id).eq(1))
        .to_owned()
}

/// The lowest checkpoint of the live read models ([`crate::PROJECTIONS`]), in
/// one statement: every event up to it is in all of them. What a replica is
/// judged by, since it holds exactly what the primary's transactions wrote.
pub async fn applied_by_all(conn: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let tables: Vec<String> = crate::PROJECTIONS
        .iter()
        .map(|name| format!("SELECT `position` FROM `{}` WHERE `id` = 1", table(name, &Names::LIVE)))
        .collect();
    let sql = format!("SELECT MIN(`position`) AS `position` FROM ({}) AS `checkpoints`", tables.join(" UNION ALL "));
    let statement = sea_orm::Statement::from_string(conn.get_database_backend(), sql);
    let row = conn
        .query_one_raw(statement)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the read models' checkpoints (run the migrations)".into()))?;
    let position: i64 = row.try_get::<Option<i64>>("", "position")?.unwrap_or(0);
    Ok(u64::try_from(position).unwrap_or(0))
}
