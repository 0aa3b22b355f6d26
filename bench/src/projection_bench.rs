//! `bench projections`: rebuild rate of pointstream's wallets projection next
//! to cqrs-es's `GenericQuery` on the same events, and the lag of the live
//! projector under a steady command rate.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_es::persist::GenericQuery;
use cqrs_es::{EventEnvelope, Query, View};
use domain::values::Reason;
use domain::{Wallet, WalletCommand};
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use mysql_es::MysqlViewRepository;
use projections::projector::{self, Projector};
use projections::rebuild::rebuild;
use projections::{Members, Posts, ProjectorConfig, ProjectorStatus, Shares, Stores, Wallets};
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlPoolOptions;
use tokio::sync::{Mutex, watch};

use crate::measure::{ms, percentiles};
use crate::pointstream::{cafe, earn, points, register};
use crate::run::{Scratch, server_status};

/// What to measure.
pub struct Options {
    pub events: u64,
    pub generic_prefix: u64,
    pub rate: u64,
    pub seconds: u64,
    /// Events per page of the rebuild.
    pub rebuild_batch: u64,
}

/// Wallets the log is written on.
pub(crate) const WALLETS: usize = 10_000;
/// Concurrent writers of the log.
pub(crate) const WRITERS: usize = 64;

/// Baseline: a balance view per wallet, kept by `GenericQuery` on mysql-es.
#[derive(Debug, Default, Serialize, Deserialize)]
struct BalanceView {
    balances: BTreeMap<String, i64>,
    movements: u64,
}

impl View<Wallet> for BalanceView {
    fn update(&mut self, event: &EventEnvelope<Wallet>) {
        if let Some((store, delta)) = event.payload.balance_change() {
            *self.balances.entry(store.as_str().to_string()).or_default() += delta as i64;
            self.movements += 1;
        }
    }
}

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(server, "proj", |url| async move { measure(&url, options).await }).await
}

async fn measure(url: &str, options: &Options) -> anyhow::Result<()> {
    let config = EventStoreConfig { max_connections: WRITERS as u32 + 8, ..EventStoreConfig::default() };
    let store = EventStore::open(url, config).await?;
    let members = log_wallets();
    register(&store, &members).await?;

    // The log: earns (and some redeems) on 10,000 wallets.
    let started = Instant::now();
    write_log(&store, Arc::new(members), options.events).await?;
    let head = store.read_head().await?;
    eprintln!("(wrote {head} events in {:.1?})", started.elapsed());

    // (c) pointstream: rebuild the wallets projection (balances + ledger) from 0.
    let report = rebuild::<Wallets>(&store, options.rebuild_batch.max(1), |_, _| {}).await?;
    let ours = report.rate();

    // The audit (chains, and a replay of every read model) against reading
    // the log alone, page by page, on the same log; every projection is
    // brought to the head first so the audit replays into each.
    rebuild::<Members>(&store, 5_000, |_, _| {}).await?;
    rebuild::<Stores>(&store, 5_000, |_, _| {}).await?;
    rebuild::<Shares>(&store, 5_000, |_, _| {}).await?;
    rebuild::<Posts>(&store, 5_000, |_, _| {}).await?;
    let started = Instant::now();
    let (mut read, mut after) = (0u64, 0);
    loop {
        let page = store.read_stored(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        (after, read) = (last.position, read + page.len() as u64);
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let audit = projections::audit(&store).await?;
    let audit_rate = audit.chain.events as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(audit.is_clean(), "the audit found problems: {:?}", audit.problems());

    // Lag of the live projector, right after it caught up.
    let (p50, p99, samples) = lag(&store, options.rate, options.seconds).await?;

    // (b) cqrs-es GenericQuery on mysql-es, one event at a time, on a prefix of the same log.
    let pool = MySqlPoolOptions::new().max_connections(4).connect(url).await?;
    sqlx::query(
        "CREATE TABLE balance_view (view_id VARCHAR(255) NOT NULL PRIMARY KEY, version BIGINT NOT NULL, payload JSON NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let errors = Arc::new(AtomicU64::new(0));
    let mut query = GenericQuery::<MysqlViewRepository<BalanceView, Wallet>, BalanceView, Wallet>::new(Arc::new(
        MysqlViewRepository::new("balance_view", pool.clone()),
    ));
    let counter = errors.clone();
    query.use_error_handler(Box::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    let mut prefix = 0;
    let started = Instant::now();
    let mut after = 0;
    while prefix < options.generic_prefix {
        let page = store.read_from(after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page.iter().filter(|e| e.aggregate_type == "Wallet") {
            if prefix == options.generic_prefix {
                break;
            }
            prefix += 1;
            let envelope = EventEnvelope::<Wallet> {
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence as usize,
                payload: event.decode::<Wallet>()?,
                metadata: HashMap::new(),
            };
            query.dispatch(&event.aggregate_id, std::slice::from_ref(&envelope)).await;
        }
    }
    let theirs = prefix as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(errors.load(Ordering::Relaxed) == 0, "GenericQuery reported persistence errors");
    pool.close().await;

    println!("## projections benchmark (MySQL, one run)");
    println!();
    println!("Log: {head} events (earns and redeems on {WALLETS} wallets, written by {WRITERS} concurrent writers).");
    println!();
    println!("| rebuild of the wallets read model | events | events/s |");
    println!("|---|---|---|");
    println!(
        "| (b) cqrs-es 0.5 GenericQuery + mysql-es view (load, update, save per event) | {prefix} (first wallet events) | {theirs:.0} |"
    );
    println!(
        "| (c) pointstream rebuild (balances + ledger, shadow tables, swap; pages of {}) | {} | {ours:.0} |",
        options.rebuild_batch, report.events
    );
    println!();
    println!("c/b = {:.1}x", ours / theirs);
    println!();
    println!("| reading the whole log | events | events/s |");
    println!("|---|---|---|");
    println!("| (r) pages of 5,000 in position order, nothing done with them | {read} | {read_rate:.0} |");
    println!(
        "| (a) audit: every chain, every read model replayed and compared | {} | {audit_rate:.0} |",
        audit.chain.events
    );
    println!();
    println!("a/r = {:.2}", audit_rate / read_rate);
    println!();
    println!(
        "Live projection lag at {} commands/s for {} s ({samples} commands): p50 {}, p99 {}",
        options.rate,
        options.seconds,
        ms(p50),
        ms(p99)
    );
    Ok(())
}

/// The wallets [`write_log`] writes to (each to be registered first).
pub(crate) fn log_wallets() -> Vec<String> {
    (0..WALLETS).map(|i| format!("w{i:05}")).collect()
}

/// Writes earns (and, every tenth command once each wallet has earned, a
/// redeem) through `store`'s own commands, [`WRITERS`] writers at once, on
/// the first [`WALLETS`] of `members` (registered), until the log holds at
/// least `target` events.
pub(crate) async fn write_log(store: &EventStore, members: Arc<Vec<String>>, target: u64) -> anyhow::Result<()> {
    anyhow::ensure!(members.len() >= WALLETS, "the log's writers need {WALLETS} wallets");
    // Purchase refs unique across calls that grow one log further.
    let start = store.head();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, members) = (store.clone(), members.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while store.head() < target {
                    let id = &members[(w + i * WRITERS) % WALLETS];
                    let command = if i % 10 == 9 && i > 2 * (WALLETS / WRITERS + 1) {
                        WalletCommand::Redeem { store: cafe()?, points: points(1)?, reward: Reason::parse("mug")? }
                    } else {
                        earn(id, &format!("g{start}-{w}-{i}"))?
                    };
                    store.execute::<Wallet>(id, command, CommandContext::default()).await?;
                    i += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    Ok(())
}

/// Time from a command's acknowledgement until the live wallets projector has
/// applied it, at a steady command rate: the median, the 99th percentile and
/// the number of samples.
pub(crate) async fn lag(store: &EventStore, rate: u64, seconds: u64) -> anyhow::Result<(Duration, Duration, usize)> {
    let windows = lag_windows(store, rate, &[Duration::from_secs(seconds)]).await?;
    let window = windows.into_iter().next().ok_or_else(|| anyhow::anyhow!("no lag window"))?;
    Ok((window.p50, window.p99, window.samples))
}

/// The lag over one window of [`lag_windows`].
pub(crate) struct LagWindow {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) samples: usize,
    /// Pages MariaDB read from disk meanwhile (`Innodb_buffer_pool_reads`:
    /// the buffer pool did not hold them), the whole server's.
    pub(crate) pool_reads: u64,
}

/// [`lag`] over consecutive windows of one run (a projector started with the
/// commands, then running warm): each sample counts in the window its command
/// was acknowledged in.
pub(crate) async fn lag_windows(store: &EventStore, rate: u64, windows: &[Duration]) -> anyhow::Result<Vec<LagWindow>> {
    anyhow::ensure!(!windows.is_empty(), "no lag window to measure");
    // MariaDB's disk reads at each window's start and end.
    let counted = {
        let (db, windows) = (store.db().clone(), windows.to_vec());
        let began = Instant::now();
        tokio::spawn(async move {
            let mut reads = vec![server_status(&db, "Innodb_buffer_pool_reads").await?];
            let mut end = began;
            for length in windows {
                end += length;
                tokio::time::sleep_until(end.into()).await;
                reads.push(server_status(&db, "Innodb_buffer_pool_reads").await?);
            }
            anyhow::Ok(reads)
        })
    };
    let (stop, shutdown) = watch::channel(false);
    let (status, mut statuses) = watch::channel(ProjectorStatus::default());
    let config = ProjectorConfig { batch_size: 1_000, ..ProjectorConfig::default() };
    let projector = tokio::spawn(projector::run::<Projector<Wallets>>(store.clone(), config, status, shutdown));

    let pending: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    // (acknowledged at, lag)
    let samples: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let applied = statuses.clone();
    let watcher = tokio::spawn({
        let (pending, samples) = (pending.clone(), samples.clone());
        async move {
            while statuses.changed().await.is_ok() {
                let checkpoint = statuses.borrow_and_update().checkpoint;
                let now = Instant::now();
                let mut pending = pending.lock().await;
                while pending.front().is_some_and(|(position, _)| *position <= checkpoint) {
                    if let Some((_, acked)) = pending.pop_front() {
                        samples.lock().await.push((acked, now - acked));
                    }
                }
            }
        }
    });

    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1) as u32);
    let began = Instant::now();
    let deadline = began + windows.iter().sum::<Duration>();
    let mut i = 0u64;
    let mut commands = Vec::new();
    // Purchase refs unique across runs on one log.
    let start = store.head();
    while Instant::now() < deadline {
        ticker.tick().await;
        i += 1;
        let (store, pending, samples, applied) = (store.clone(), pending.clone(), samples.clone(), applied.clone());
        commands.push(tokio::spawn(async move {
            let id = format!("w{:05}", i % WALLETS as u64);
            let outcome =
                store.execute::<Wallet>(&id, earn(&id, &format!("lag{start}-{i}"))?, CommandContext::default()).await?;
            let mut pending = pending.lock().await;
            if applied.borrow().checkpoint >= outcome.last_position {
                // Applied before this task saw its acknowledgement.
                samples.lock().await.push((Instant::now(), Duration::ZERO));
                return anyhow::Ok(());
            }
            let at = pending.partition_point(|(p, _)| *p < outcome.last_position);
            pending.insert(at, (outcome.last_position, Instant::now()));
            anyhow::Ok(())
        }));
    }
    for command in commands {
        command.await??;
    }
    let drained = Instant::now() + Duration::from_secs(30);
    while !pending.lock().await.is_empty() {
        anyhow::ensure!(Instant::now() < drained, "the projector did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    projector.await??;
    watcher.abort();
    let samples = std::mem::take(&mut *samples.lock().await);
    let mut binned = vec![Vec::new(); windows.len()];
    for (acked, lag) in samples {
        let mut end = began;
        let window = windows.iter().position(|length| {
            end += *length;
            acked < end
        });
        binned[window.unwrap_or(windows.len() - 1)].push(lag);
    }
    let reads = counted.await??;
    binned
        .into_iter()
        .zip(reads.windows(2))
        .map(|(samples, reads)| {
            let count = samples.len();
            anyhow::ensure!(count > 0, "no lag samples in a window");
            let (p50, p99) = percentiles(samples);
            Ok(LagWindow { p50, p99, samples: count, pool_reads: reads[1].saturating_sub(reads[0]) })
        })
        .collect()
}
