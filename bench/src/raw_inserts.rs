//! Baseline (a): the database's own speed. One single-row autocommit INSERT
//! per operation through sqlx, no event store at all.

use sqlx::{MySql, Pool};

/// Creates the table the raw inserts go to.
pub async fn prepare(pool: &Pool<MySql>) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE raw_events (aggregate_id VARCHAR(255) NOT NULL, sequence BIGINT NOT NULL, \
         payload LONGTEXT NOT NULL, PRIMARY KEY (aggregate_id, sequence))",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Inserts one row for `worker`'s `i`-th operation.
pub async fn insert(pool: &Pool<MySql>, worker: usize, i: u64) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO raw_events (aggregate_id, sequence, payload) VALUES (?, ?, ?)")
        .bind(format!("w{worker}"))
        .bind(i as i64)
        .bind(r#"{"store":"cafe","purchase_ref":"r","amount_paid":1000,"points":100,"policy_version":1}"#)
        .execute(pool)
        .await?;
    Ok(())
}
