//! Baseline (b): the same Wallet aggregate run by cqrs-es 0.5's
//! `CqrsFramework` on mysql-es 0.5 (its default event store: every command
//! loads the aggregate's whole stream).

use std::sync::Arc;

use domain::values::StoreId;
use domain::{InMemoryDirectory, Services, StoreTerms, Wallet, WalletCommand};
use mysql_es::{MysqlCqrs, mysql_cqrs};
use sqlx::{MySql, Pool};

/// mysql-es's `db/init.sql` without `CHECK (sequence >= 0)`, which MariaDB
/// does not accept in that position.
pub async fn prepare(pool: &Pool<MySql>) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE events (aggregate_type VARCHAR(255) NOT NULL, aggregate_id VARCHAR(255) NOT NULL, \
         sequence BIGINT NOT NULL, event_type TEXT NOT NULL, event_version TEXT NOT NULL, payload JSON NOT NULL, \
         metadata JSON NOT NULL, CONSTRAINT events_pk PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TABLE snapshots (aggregate_type VARCHAR(255) NOT NULL, aggregate_id VARCHAR(255) NOT NULL, \
         last_sequence BIGINT NOT NULL, current_snapshot BIGINT NOT NULL, payload JSON NOT NULL, \
         CONSTRAINT snapshots_pk PRIMARY KEY (aggregate_type, aggregate_id))",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The framework, with a directory that knows `members` and the cafe.
pub fn framework(
    pool: Pool<MySql>,
    members: &[String],
    cafe: &StoreId,
    terms: StoreTerms,
) -> anyhow::Result<MysqlCqrs<Wallet>> {
    let mut directory = InMemoryDirectory::default().with_store(cafe, terms);
    for member in members {
        directory = directory.with_member(&crate::pointstream::member(member)?, true);
    }
    let services: Services = Arc::new(directory);
    Ok(mysql_cqrs(pool, Vec::new(), services))
}

/// Runs one command on wallet `id`.
pub async fn execute(cqrs: &MysqlCqrs<Wallet>, id: &str, command: WalletCommand) -> anyhow::Result<()> {
    cqrs.execute(id, command).await.map_err(|e| anyhow::anyhow!("cqrs-es: {e}"))
}

/// Writes `count` earn events for wallet `id` straight into mysql-es's table,
/// as its serializer would, so that a long history is quick to set up.
pub async fn seed_history(pool: &Pool<MySql>, id: &str, count: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let opened = serde_json::json!({"WalletOpened": {"member": id}});
    let mut sequence = 0u64;
    let mut rows = vec![(1u64, "WalletOpened", "1", opened)];
    while (rows.len() as u64) < count {
        sequence += 1;
        let earned = serde_json::json!({"PointsEarned": {
            "store": "cafe", "purchase_ref": format!("seed-{sequence}"), "amount_paid": 1000,
            "points": 100, "policy_version": 1}});
        rows.push((rows.len() as u64 + 1, "PointsEarned", "2", earned));
    }
    for chunk in rows.chunks(1_000) {
        let mut builder = sqlx::QueryBuilder::<MySql>::new(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
        );
        builder.push_values(chunk, |mut row, (sequence, event_type, version, payload)| {
            row.push_bind("Wallet")
                .push_bind(id)
                .push_bind(*sequence as i64)
                .push_bind(*event_type)
                .push_bind(*version)
                .push_bind(payload.to_string())
                .push_bind("{}");
        });
        builder.build().execute(pool).await?;
    }
    Ok(())
}
