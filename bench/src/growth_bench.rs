//! `bench growth`: how each figure moves as the log grows. The same log is
//! grown through pointstream's own commands to each size in turn (10⁵, 10⁶,
//! 10⁷ events by default), and at each size the same figures are measured:
//! appends and `earnPoints` mutations (rate and p99 at 32), the live
//! projector's lag, the wallets rebuild and the audit (events/s). The rates,
//! p99s and the lag are taken twice: over the first seconds after a start (a
//! fresh server, a projector started with the commands, right after the audit
//! swept MariaDB's buffer pool) and again after a warm-up of the same load,
//! so that a cold start and the steady state are told apart. Each
//! figure's baseline is the same figure at the smallest size, measured in the
//! same run; the target is every figure at the largest size within 1.25× of
//! it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::Role;
use domain::{Wallet, WalletCommand};
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use projections::rebuild::rebuild;
use projections::{Consumer, Members, Posts, ShareDistribution, Shares, Stores, Wallets};
use sea_orm::DatabaseConnection;
use tokio::sync::Mutex;

use crate::api_bench::{caught_up, check_earned, connect_all, earn_body, token};
use crate::api_server::ServerProcess;
use crate::measure::{ms, throughput_and_latency};
use crate::pointstream::{earn, register};
use crate::projection_bench::{WALLETS, WRITERS, lag_windows, log_wallets, write_log};
use crate::raw_http::RawHttp;
use crate::run::{Scratch, server_status, server_variable};

/// MariaDB's buffer pool, which `--buffer-pool-mib` sets for the run (online).
const POOL: &str = "innodb_buffer_pool_size";

/// What to measure.
pub struct Options {
    /// Sizes of the log, in events, in increasing order.
    pub sizes: Vec<u64>,
    /// Seconds of each rate figure.
    pub seconds: u64,
    /// Seconds of load between a figure's first window and its steady one.
    pub warmup: u64,
    /// Closed-loop callers of the append and mutation figures.
    pub concurrency: usize,
    /// Commands per second during the lag figure.
    pub rate: u64,
    /// MariaDB's buffer pool for the run, in MiB (the server's own when `None`).
    pub buffer_pool_mib: Option<u64>,
}

/// A figure over the first window after a start, and over the window after
/// the warm-up.
#[derive(Clone, Copy)]
struct Windows<T> {
    first: T,
    steady: T,
}

/// The figures at one size of the log.
struct AtSize {
    events: u64,
    /// Commands/s and p99 of `EventStore::execute` of earns.
    appends: Windows<Window>,
    /// Mutations/s and p99 of `earnPoints` over HTTP.
    mutations: Windows<Window>,
    /// p99 from a command's acknowledgement to the wallets projector applying it.
    lag: Windows<Duration>,
    /// Pages MariaDB read from disk during the lag's windows.
    lag_pool_reads: Windows<u64>,
    /// Wallets rebuild, events/s.
    rebuild: f64,
    /// `audit verify` (chains and every read model), events/s.
    audit: f64,
    /// The database's tables and indexes (as InnoDB reports them), bytes per event.
    bytes_per_event: f64,
}

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(server, "growth", |url| async move {
        let Some(mib) = options.buffer_pool_mib else { return measure(&url, options, None).await };
        let was = server_variable(&url, POOL, Some(mib << 20)).await?;
        let measured = measure(&url, options, Some(mib)).await;
        server_variable(&url, POOL, Some(was)).await?;
        measured
    })
    .await
}

async fn measure(url: &str, options: &Options, buffer_pool_mib: Option<u64>) -> anyhow::Result<()> {
    let pool_bytes = server_variable(url, POOL, None).await?;
    if let Some(mib) = buffer_pool_mib {
        anyhow::ensure!(pool_bytes >= mib << 20, "MariaDB kept its buffer pool at {pool_bytes} bytes, not {mib} MiB");
    }
    let concurrency = options.concurrency.max(1);
    let config = EventStoreConfig { max_connections: (WRITERS.max(concurrency) + 8) as u32, ..Default::default() };
    let store = EventStore::open(url, config.clone()).await?;
    let members = Arc::new(log_wallets());
    register(&store, &members).await?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let staff = token(&secret, Role::Staff, None, Some("cafe"))?;

    let mut figures = Vec::new();
    for &size in &options.sizes {
        let started = Instant::now();
        write_log(&store, members.clone(), size).await?;
        let events = store.read_head().await?;
        eprintln!("(the log holds {events} events; grown in {:.1?})", started.elapsed());

        // Every read model rebuilt to the head: the wallets rebuild is the
        // figure, the others bring the server's read models up to date.
        let wallets = rebuild::<Wallets>(&store, 5_000, |_, _| {}).await?;
        rebuild::<Members>(&store, 5_000, |_, _| {}).await?;
        rebuild::<Stores>(&store, 5_000, |_, _| {}).await?;
        rebuild::<Shares>(&store, 5_000, |_, _| {}).await?;
        rebuild::<Posts>(&store, 5_000, |_, _| {}).await?;
        // The share distribution follows the log too (it has nothing to do in
        // this one): brought to the head here, not inside the server's figures.
        while ShareDistribution::step(&store, None, 5_000).await?.events > 0 {}
        let bytes_per_event = database_bytes(&store).await? as f64 / events.max(1) as f64;
        let started = Instant::now();
        let audit = projections::audit(&store).await?;
        let audit_rate = audit.chain.events as f64 / started.elapsed().as_secs_f64();
        anyhow::ensure!(audit.is_clean(), "the audit found problems: {:?}", audit.problems());

        let (seconds, warmup) = (Duration::from_secs(options.seconds), Duration::from_secs(options.warmup));
        let lags = lag_windows(&store, options.rate, &[seconds, warmup, seconds]).await?;
        let [first, _, steady] = &lags[..] else { anyhow::bail!("lag measured in {} windows", lags.len()) };
        let appends = appends(&store, size, concurrency, seconds, warmup).await?;
        let mutations = mutations(url, &secret, &config, &staff, size, concurrency, seconds, warmup).await?;
        figures.push(AtSize {
            events,
            appends,
            mutations,
            lag: Windows { first: first.p99, steady: steady.p99 },
            lag_pool_reads: Windows { first: first.pool_reads, steady: steady.pool_reads },
            rebuild: wallets.rate(),
            audit: audit_rate,
            bytes_per_event,
        });
    }
    print(&figures, options, concurrency, pool_bytes);
    Ok(())
}

/// The size of the database's tables and indexes, after refreshing InnoDB's
/// statistics (what capacity plans are made from).
async fn database_bytes(store: &EventStore) -> anyhow::Result<u64> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = store.db();
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT table_name FROM information_schema.TABLES WHERE table_schema = DATABASE()",
        ))
        .await?;
    for table in tables {
        let name: String = table.try_get_by_index(0)?;
        db.execute_unprepared(&format!("ANALYZE TABLE `{name}`")).await?;
    }
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.TABLES \
             WHERE table_schema = DATABASE()",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no answer from information_schema"))?;
    Ok(row.try_get_by_index::<i64>(0)?.max(0) as u64)
}

/// Earns on the log's wallets: caller `w`'s `i`th on wallet `w + concurrency × i`.
fn wallet(w: usize, i: u64, concurrency: usize) -> String {
    format!("w{:05}", (w + concurrency * i as usize) % WALLETS)
}

/// A rate figure over one window: operations/s, p99, and the pages MariaDB
/// read from disk meanwhile (`Innodb_buffer_pool_reads`).
#[derive(Clone, Copy)]
struct Window {
    rate: f64,
    p99: Duration,
    pool_reads: u64,
}

/// Runs `window` three times in turn (first, warm-up, steady), each told its
/// phase (distinct purchase refs), and keeps the first and the steady one.
async fn in_windows<F, Fut>(
    db: &DatabaseConnection,
    seconds: Duration,
    warmup: Duration,
    window: F,
) -> anyhow::Result<Windows<Window>>
where
    F: Fn(&'static str, Duration) -> Fut,
    Fut: Future<Output = anyhow::Result<(f64, Duration)>>,
{
    let measured = async |phase, length| {
        let before = server_status(db, "Innodb_buffer_pool_reads").await?;
        let (rate, p99) = window(phase, length).await?;
        let after = server_status(db, "Innodb_buffer_pool_reads").await?;
        anyhow::Ok(Window { rate, p99, pool_reads: after.saturating_sub(before) })
    };
    let first = measured("first", seconds).await?;
    window("warmup", warmup).await?;
    let steady = measured("steady", seconds).await?;
    Ok(Windows { first, steady })
}

async fn appends(
    store: &EventStore,
    size: u64,
    concurrency: usize,
    seconds: Duration,
    warmup: Duration,
) -> anyhow::Result<Windows<Window>> {
    in_windows(store.db(), seconds, warmup, |phase, length| {
        let store = store.clone();
        async move {
            let (rate, _, p99) = throughput_and_latency(concurrency, length, move |w, i| {
                let store = store.clone();
                let id = wallet(w, i, concurrency);
                async move {
                    let command: WalletCommand = earn(&id, &format!("a{size}-{phase}-{w}-{i}"))?;
                    store.execute::<Wallet>(&id, command, CommandContext::default()).await?;
                    Ok(())
                }
            })
            .await?;
            Ok((rate, p99))
        }
    })
    .await
}

/// `earnPoints` over HTTP against a server process on the same database,
/// started once its read models have caught up with the log.
#[allow(clippy::too_many_arguments)]
async fn mutations(
    url: &str,
    secret: &str,
    config: &EventStoreConfig,
    staff: &str,
    size: u64,
    concurrency: usize,
    seconds: Duration,
    warmup: Duration,
) -> anyhow::Result<Windows<Window>> {
    let server = ServerProcess::spawn(url, secret, config).await?;
    let db = eventstore::connect(url, 1).await?;
    let measured = async {
        caught_up(url).await?;
        let clients: Arc<Vec<Mutex<RawHttp>>> = connect_all(concurrency, || RawHttp::connect(&server.address)).await?;
        let staff = Arc::<str>::from(staff);
        in_windows(&db, seconds, warmup, |phase, length| {
            let (clients, staff) = (clients.clone(), staff.clone());
            async move {
                let (rate, _, p99) = throughput_and_latency(concurrency, length, move |w, i| {
                    let (clients, staff) = (clients.clone(), staff.clone());
                    let body = earn_body(&wallet(w, i, concurrency), &format!("m{size}-{phase}-{w}-{i}"));
                    async move {
                        let mut client = clients[w].lock().await;
                        check_earned(client.post(Some(&staff), &body?).await?)
                    }
                })
                .await?;
                Ok((rate, p99))
            }
        })
        .await
    }
    .await;
    server.stop().await?;
    measured
}

fn print(figures: &[AtSize], options: &Options, concurrency: usize, pool_bytes: u64) {
    let Some(first) = figures.first() else { return };
    let Some(last) = figures.last() else { return };
    println!("## growth benchmark (MySQL, one run)");
    println!();
    println!(
        "The log grown through the commands ({WRITERS} writers, earns and redeems on {WALLETS} wallets); \
         at each size: {concurrency} callers for {} s per rate, lag at {} commands/s, each taken over \
         the first {} s after a start and again after {} s more of the same load (steady); \
         MariaDB's buffer pool {} MiB.",
        options.seconds,
        options.rate,
        options.seconds,
        options.warmup,
        pool_bytes >> 20
    );
    println!();
    let mut header = "| figure |".to_string();
    let mut rule = "|---|".to_string();
    for at in figures {
        header.push_str(&format!(" {} events |", at.events));
        rule.push_str("---|");
    }
    println!("{header} largest / smallest |");
    println!("{rule}---|");
    // Rates: smallest / largest (a slowdown reads above 1); times: largest / smallest.
    let rate_row = |name: &str, get: &dyn Fn(&AtSize) -> f64| {
        let cells: String = figures.iter().map(|at| format!(" {:.0} |", get(at))).collect();
        println!("| {name} |{cells} {:.2} |", get(first) / get(last).max(f64::MIN_POSITIVE));
    };
    let time_row = |name: &str, get: &dyn Fn(&AtSize) -> Duration| {
        let cells: String = figures.iter().map(|at| format!(" {} |", ms(get(at)))).collect();
        println!("| {name} |{cells} {:.2} |", get(last).as_secs_f64() / get(first).as_secs_f64().max(1e-9));
    };
    rate_row("appends/s, first", &|at| at.appends.first.rate);
    rate_row("appends/s, steady", &|at| at.appends.steady.rate);
    time_row("append p99, first", &|at| at.appends.first.p99);
    time_row("append p99, steady", &|at| at.appends.steady.p99);
    rate_row("earnPoints mutations/s, first (a fresh server)", &|at| at.mutations.first.rate);
    rate_row("earnPoints mutations/s, steady", &|at| at.mutations.steady.rate);
    time_row("mutation p99, first (a fresh server)", &|at| at.mutations.first.p99);
    time_row("mutation p99, steady", &|at| at.mutations.steady.p99);
    time_row("projector lag p99, first (a projector just started)", &|at| at.lag.first);
    time_row("projector lag p99, steady", &|at| at.lag.steady);
    let reads_row = |name: &str, get: &dyn Fn(&AtSize) -> u64| {
        let cells: String = figures.iter().map(|at| format!(" {} |", get(at))).collect();
        println!("| {name} |{cells} – |");
    };
    reads_row("pages read from disk (`Innodb_buffer_pool_reads`): appends, first", &|at| at.appends.first.pool_reads);
    reads_row("… appends, steady", &|at| at.appends.steady.pool_reads);
    reads_row("… mutations, first", &|at| at.mutations.first.pool_reads);
    reads_row("… mutations, steady", &|at| at.mutations.steady.pool_reads);
    reads_row("… projector lag, first", &|at| at.lag_pool_reads.first);
    reads_row("… projector lag, steady", &|at| at.lag_pool_reads.steady);
    rate_row("wallets rebuild, events/s", &|at| at.rebuild);
    rate_row("audit, events/s", &|at| at.audit);
    let cells: String = figures.iter().map(|at| format!(" {:.0} |", at.bytes_per_event)).collect();
    println!("| database bytes per event (tables and indexes) |{cells} – |");
    println!();
    println!("Target: every figure at the largest size within 1.25× of the smallest (last column ≤ 1.25).");
}
