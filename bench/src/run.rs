//! `bench eventstore`: throughput at several concurrencies and latency at
//! several history lengths, pointstream next to its baselines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{StoreTerms, Wallet};
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{Executor, MySql, Pool};

use crate::measure::{latencies, ms, throughput};
use crate::pointstream::{cafe, earn, policy, register};
use crate::{cqrs_baseline, raw_inserts};

/// What to measure.
pub struct Options {
    pub seconds: u64,
    pub concurrency: Vec<usize>,
    pub history: Vec<u64>,
}

/// Wallets each worker cycles through, so that streams have short histories
/// in the throughput runs (as most real wallets do).
const WALLETS_PER_WORKER: u64 = 10;

pub async fn eventstore(server: &str, options: &Options) -> anyhow::Result<()> {
    let max_concurrency = options.concurrency.iter().copied().max().unwrap_or(1);
    let mut members: Vec<String> =
        (0..max_concurrency).flat_map(|w| (0..WALLETS_PER_WORKER).map(move |k| format!("t{w}-{k}"))).collect();
    members.extend(options.history.iter().map(|h| format!("h{h}")));

    Scratch::around_all(server, ["raw", "cqrs", "ps"], |urls| async move {
        measure(server, options, &members, urls.each_ref().map(String::as_str)).await
    })
    .await
}

async fn measure(server: &str, options: &Options, members: &[String], urls: [&str; 3]) -> anyhow::Result<()> {
    let max_concurrency = options.concurrency.iter().copied().max().unwrap_or(1);
    let [raw_url, cqrs_url, ps_url] = urls;
    // One contender's pool at a time: MariaDB's default limit is 151 connections.
    let pool_size = max_concurrency as u32 + 4;
    let duration = Duration::from_secs(options.seconds);

    let raw = MySqlPoolOptions::new().max_connections(pool_size).connect(raw_url).await?;
    raw_inserts::prepare(&raw).await?;
    let mut a = Vec::new();
    for &concurrency in &options.concurrency {
        let pool = raw.clone();
        a.push(
            throughput(concurrency, duration, move |w, i| {
                let pool = pool.clone();
                async move { raw_inserts::insert(&pool, w, i + (concurrency as u64) * 1_000_000_000).await }
            })
            .await?,
        );
    }
    raw.close().await;

    let cqrs_pool = MySqlPoolOptions::new().max_connections(pool_size).connect(cqrs_url).await?;
    cqrs_baseline::prepare(&cqrs_pool).await?;
    let terms = StoreTerms { open: true, policy: policy()?, policy_version: 1 };
    let cqrs = Arc::new(cqrs_baseline::framework(cqrs_pool.clone(), members, &cafe()?, terms)?);
    let mut b = Vec::new();
    for &concurrency in &options.concurrency {
        let framework = cqrs.clone();
        b.push(
            throughput(concurrency, duration, move |w, i| {
                let framework = framework.clone();
                async move {
                    let id = format!("t{w}-{}", i % WALLETS_PER_WORKER);
                    let command = earn(&id, &format!("b{concurrency}-{w}-{i}"))?;
                    cqrs_baseline::execute(&framework, &id, command).await
                }
            })
            .await?,
        );
    }

    let store =
        EventStore::open(ps_url, EventStoreConfig { max_connections: pool_size, ..EventStoreConfig::default() })
            .await?;
    register(&store, members).await?;
    let mut c = Vec::new();
    for &concurrency in &options.concurrency {
        let contender = store.clone();
        c.push(
            throughput(concurrency, duration, move |w, i| {
                let store = contender.clone();
                async move {
                    let id = format!("t{w}-{}", i % WALLETS_PER_WORKER);
                    let command = earn(&id, &format!("c{concurrency}-{w}-{i}"))?;
                    store.execute::<Wallet>(&id, command, CommandContext::default()).await?;
                    Ok(())
                }
            })
            .await?,
        );
    }

    println!("# event store benchmark (MySQL at {server}, {} s per figure)", options.seconds);
    println!();
    println!("(a) raw: one single-row autocommit INSERT per operation (sqlx), no event store");
    println!("(b) cqrs-es 0.5 CqrsFramework on mysql-es 0.5, same Wallet aggregate and commands");
    println!("(c) pointstream EventStore::execute (hash chain, metadata, global position, group commit)");
    println!();
    println!("| concurrency | (a) raw inserts/s | (b) cqrs-es commands/s | (c) pointstream commands/s | c/b | c/a |");
    println!("|---|---|---|---|---|---|");
    for (k, concurrency) in options.concurrency.iter().enumerate() {
        let (a, b, c) = (a[k], b[k], c[k]);
        println!("| {concurrency} | {a:.0} | {b:.0} | {c:.0} | {:.2} | {:.2} |", c / b, c / a);
    }

    println!();
    println!("Latency of one earn on a wallet with a long history (sequential, p50 / p99):");
    println!();
    println!(
        "| prior events | (b) cqrs-es command | (c) pointstream command | (c) cold load (snapshot + tail) | (c) full replay |"
    );
    println!("|---|---|---|---|---|");
    let mut first: Option<(Duration, Duration, Duration)> = None;
    let mut last = None;
    for &history in &options.history {
        let id = format!("h{history}");
        cqrs_baseline::seed_history(&cqrs_pool, &id, history).await?;
        let seeding = Instant::now();
        for i in 0..history.saturating_sub(1) {
            store.execute::<Wallet>(&id, earn(&id, &format!("seed{history}-{i}"))?, CommandContext::default()).await?;
        }
        let seeded = seeding.elapsed();

        let b = latencies(50, |i| {
            let (cqrs, id) = (cqrs.clone(), id.clone());
            async move { cqrs_baseline::execute(&cqrs, &id, earn(&id, &format!("lb{history}-{i}"))?).await }
        })
        .await?;
        let c = latencies(500, |i| {
            let (store, id) = (store.clone(), id.clone());
            async move {
                store
                    .execute::<Wallet>(&id, earn(&id, &format!("lc{history}-{i}"))?, CommandContext::default())
                    .await?;
                Ok(())
            }
        })
        .await?;
        let load = latencies(500, |_| {
            let (store, id) = (store.clone(), id.clone());
            async move {
                store.load::<Wallet>(&id).await?;
                Ok(())
            }
        })
        .await?;
        let replay = latencies(10, |_| {
            let (store, id) = (store.clone(), id.clone());
            async move {
                store.replay::<Wallet>(&id).await?;
                Ok(())
            }
        })
        .await?;
        println!(
            "| {history} | {} / {} | {} / {} | {} / {} | {} / {} |",
            ms(b.0),
            ms(b.1),
            ms(c.0),
            ms(c.1),
            ms(load.0),
            ms(load.1),
            ms(replay.0),
            ms(replay.1)
        );
        eprintln!("(seeded {history} pointstream events in {seeded:.1?})");
        first.get_or_insert((b.0, c.0, load.0));
        last = Some((history, b.0, c.0, load.0));
    }
    if let (Some((b0, c0, l0)), Some((history, b, c, l))) = (first, last) {
        println!();
        println!(
            "p50 at {history} prior events / at {}: (b) command {:.2}x, (c) command {:.2}x, (c) cold load {:.2}x",
            options.history[0],
            b.as_secs_f64() / b0.as_secs_f64(),
            c.as_secs_f64() / c0.as_secs_f64(),
            l.as_secs_f64() / l0.as_secs_f64()
        );
    }
    drop(store);
    cqrs_pool.close().await;
    Ok(())
}

/// A database of the benchmark's own, dropped at the end.
pub(crate) struct Scratch {
    admin: Pool<MySql>,
    name: String,
    pub(crate) url: String,
}

impl Scratch {
    pub(crate) async fn create(server: &str, label: &str) -> anyhow::Result<Self> {
        let admin =
            MySqlPoolOptions::new().max_connections(1).connect(server).await.map_err(|e| {
                anyhow::anyhow!("MariaDB is not reachable at {server}: {e} (start it, or pass --mysql)")
            })?;
        let name = format!("pointstream_bench_{label}_{}", uuid::Uuid::new_v4().simple());
        admin.execute(format!("CREATE DATABASE `{name}`").as_str()).await?;
        Ok(Self { admin, url: format!("{}/{name}", server.trim_end_matches('/')), name })
    }

    pub(crate) async fn drop_database(self) -> anyhow::Result<()> {
        self.admin.execute(format!("DROP DATABASE `{}`", self.name).as_str()).await?;
        Ok(())
    }

    /// Runs `measure` on a scratch database of its own, dropped afterwards
    /// whatever `measure` returns.
    pub(crate) async fn around<T, Fut>(
        server: &str,
        label: &str,
        measure: impl FnOnce(String) -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        Self::around_all(server, [label], |[url]| measure(url)).await
    }

    /// Runs `measure` on a scratch database per label (their URLs in the
    /// labels' order); every database created is dropped afterwards,
    /// whatever `measure` returns, and none is left if one cannot be created.
    pub(crate) async fn around_all<const N: usize, T, Fut>(
        server: &str,
        labels: [&str; N],
        measure: impl FnOnce([String; N]) -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut scratches = Vec::with_capacity(N);
        let mut created = Ok(());
        for label in labels {
            match Scratch::create(server, label).await {
                Ok(scratch) => scratches.push(scratch),
                Err(err) => {
                    created = Err(err);
                    break;
                }
            }
        }
        let result = match created {
            Ok(()) => measure(std::array::from_fn(|i| scratches[i].url.clone())).await,
            Err(err) => Err(err),
        };
        // Every database gets its DROP, even after one fails; the measurement's
        // own error comes first.
        let mut dropped = Ok(());
        for scratch in scratches {
            let name = scratch.name.clone();
            if let Err(err) = scratch.drop_database().await {
                eprintln!("the scratch database {name} is left behind: {err:#}");
                dropped = dropped.and(Err(err));
            }
        }
        let value = result?;
        dropped?;
        Ok(value)
    }
}

/// MariaDB's global numeric variable `name` (`max_connections`,
/// `innodb_buffer_pool_size`) as it was, set to `value` when one is given:
/// what a run changes for itself and puts back afterwards.
pub(crate) async fn server_variable(url: &str, name: &str, value: Option<u64>) -> anyhow::Result<u64> {
    let pool = MySqlPoolOptions::new().max_connections(1).connect(url).await?;
    let was: u64 = sqlx::query_scalar(&format!("SELECT @@GLOBAL.{name}")).fetch_one(&pool).await?;
    if let Some(value) = value {
        sqlx::query(&format!("SET GLOBAL {name} = {value}")).execute(&pool).await?;
    }
    pool.close().await;
    Ok(was)
}

/// MariaDB's global status counter `name` (`SHOW GLOBAL STATUS`), such as
/// `Innodb_buffer_pool_reads`.
pub(crate) async fn server_status(db: &sea_orm::DatabaseConnection, name: &str) -> anyhow::Result<u64> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
            [name.to_uppercase().into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("MariaDB has no status counter {name}"))?;
    let value: String = row.try_get_by_index(0)?;
    Ok(value.trim().parse()?)
}
