//! Leases: at most one process runs a given projector at a time. A lease is a
//! row in `leases` with a holder and an expiry; the holder renews it, and
//! another process takes it over once it has expired (its holder died).
//!
//! Correctness does not rest on the lease: every batch locks its checkpoint
//! row, so two projectors that briefly overlap still apply each event once.
//! The lease keeps them from doing the same work twice.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, SqlErr};

use migrations::tables::Leases;

/// One process's claim on a named role.
#[derive(Debug, Clone)]
pub struct Lease {
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// A lease on `name` for this process, valid `ttl` after each renewal.
    pub fn new(name: &str, ttl: Duration) -> Self {
        let holder = format!("pid {} / {}", std::process::id(), uuid::Uuid::new_v4().simple());
        Self { name: name.to_string(), holder, ttl }
    }

    /// How often the holder should renew.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How often a process that does not hold the lease tries to take it:
    /// at least every 250 ms, so that a lease its holder released (it
    /// stopped) is taken over at once rather than after a renewal period.
    /// A try that finds the lease held is one single-row `UPDATE` that
    /// changes nothing.
    pub fn retry_every(&self) -> Duration {
        self.renew_every().min(Duration::from_millis(250))
    }

    /// Takes or renews the lease; false when another live holder has it.
    pub async fn acquire(&self, db: &DatabaseConnection) -> Result<bool, DbErr> {
        let now = eventstore::now_us();
        let expires = now + self.ttl.as_micros() as i64;
        let update = Query::update()
            .table(Leases::Table)
            .value(Leases::Holder, self.holder.as_str())
            .value(Leases::ExpiresAtUs, expires)
            .and_where(Expr::col(Leases::Name).eq(self.name.as_str()))
            .and_where(Expr::col(Leases::Holder).eq(self.holder.as_str()).or(Expr::col(Leases::ExpiresAtUs).lt(now)))
            .to_owned();
        if db.execute(&update).await?.rows_affected() == 1 {
            return Ok(true);
        }
        let insert = Query::insert()
            .into_table(Leases::Table)
            .columns([Leases::Name, Leases::Holder, Leases::ExpiresAtUs])
            .values_panic([self.name.as_str().into(), self.holder.as_str().into(), expires.into()])
            .to_owned();
        match db.execute(&insert).await {
            Ok(_) => Ok(true),
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the lease up (a successor need not wait for it to expire).
    pub async fn release(&self, db: &DatabaseConnection) -> Result<(), DbErr> {
        let delete = Query::delete()
            .from_table(Leases::Table)
            .and_where(Expr::col(Leases::Name).eq(self.name.as_str()))
            .and_where(Expr::col(Leases::Holder).eq(self.holder.as_str()))
            .to_owned();
        db.execute(&delete).await?;
        Ok(())
    }
}
