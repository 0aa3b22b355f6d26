//! `bench api --parts peer`: `earnPoints` on pointstream against the server a
//! user would build instead (`bench peer-server`, [`crate::peer_server`]:
//! async-graphql and sqlx, one transaction per mutation), both driven by the
//! same load generator in the same run.
//!
//! Two server processes, each on a scratch database of its own: `bench
//! api-server` (wired as `pointstream serve`) and `bench peer-server`, each
//! with a pool of the largest concurrency plus 4 connections. At each of
//! `--peer-concurrency` (8 and 32), that many clients per server, each on a
//! keep-alive connection of its own (`raw_http.rs`), earn for the same
//! members with a distinct purchase ref per request, in turns of `--seconds`:
//! pointstream, the peer, the peer, pointstream, and so on, so that both
//! figures are taken over the same stretches of a machine whose speed drifts.
//! Every answer is checked (status 200, no errors, a position and a balance);
//! failures are counted and fail the run after the figures are printed.
//! Afterwards both databases must hold exactly the mutations acknowledged:
//! neither side wins by dropping work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use api::auth::{Claims, Role, mint, now_seconds};
use eventstore::{EventStore, EventStoreConfig};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySql, Pool};
use tokio::sync::Mutex;

use crate::api_bench::{Earners, caught_up, check_earned, connect_all, earn_body};
use crate::api_checks::Spread;
use crate::api_server::ServerProcess;
use crate::cpu::Meter;
use crate::measure::{
    Contender, GroupCommits, Interleaved, Op, closed_loop, histogram_totals, interleave, mean_between, ms, warm_up,
};
use crate::pointstream::register;
use crate::raw_http::RawHttp;
use crate::run::Scratch;

/// How the `peer` part is measured.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Concurrent clients per server in the `peer` part, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    pub peer_concurrency: Vec<usize>,
    /// Turns of `--seconds` each server is measured in, at each concurrency.
    #[arg(long, default_value_t = 6)]
    pub peer_turns: usize,
}

/// The amount every earn pays (the load generator's `earnPoints` request).
const AMOUNT: i64 = 1_000;
/// How long each server's statements are counted, after its turns.
const CENSUS: Duration = Duration::from_secs(2);
/// MariaDB's counters read around each census: what each one counts.
const STATUS: [(&str, &str); 8] = [
    ("Questions", "statements"),
    ("Com_commit", "commits"),
    ("Com_rollback", "rollbacks"),
    ("Handler_write", "rows written"),
    ("Handler_update", "rows updated"),
    ("Handler_read_key", "index lookups"),
    ("Innodb_data_fsyncs", "fsyncs"),
    ("Innodb_os_log_written", "redo bytes"),
];

/// The pointstream/peer ratio a concurrency's figures are held to.
fn target(concurrency: usize) -> Option<f64> {
    match concurrency {
        8 => Some(1.5),
        32 => Some(2.0),
        _ => None,
    }
}

pub async fn run(server: &str, options: &crate::api_bench::Options) -> anyhow::Result<()> {
    Scratch::around_all(server, ["api_ps", "api_peer"], |[ours, peer]| async move {
        Box::pin(measure(&ours, &peer, options)).await
    })
    .await
}

/// Requests one server answered, and those it failed.
#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// One server of the comparison.
struct Side {
    process: ServerProcess,
    tally: Arc<Tally>,
    /// Prefix of its purchase refs.
    prefix: &'static str,
}

/// `earnPoints` over the load generator's client: client `w`'s `i`th for
/// `earners.member(w, i)` under purchase ref `{prefix}{w}-{i}`; each outcome
/// is tallied, none stops the loop.
fn earn_op(
    clients: &Arc<Vec<Mutex<RawHttp>>>,
    staff: &str,
    earners: Earners,
    prefix: String,
    tally: &Arc<Tally>,
) -> Op {
    let (clients, staff, tally) = (clients.clone(), Arc::<str>::from(staff), tally.clone());
    Arc::new(move |w, i| {
        let (clients, staff, tally) = (clients.clone(), staff.clone(), tally.clone());
        let body = earn_body(&earners.member(w, i), &format!("{prefix}{w}-{i}"));
        Box::pin(async move {
            let outcome = async {
                let body = body?;
                let mut client = clients[w].lock().await;
                check_earned(client.post(Some(&staff), &body).await?)
            }
            .await;
            tally.record(outcome);
            Ok(())
        })
    })
}

/// An HS256 token for staff of the cafe, signed with `secret`, for an hour.
fn staff_token(secret: &str) -> anyhow::Result<String> {
    let claims = Claims {
        sub: "bench".into(),
        role: Role::Staff,
        member: None,
        store: Some("cafe".into()),
        exp: now_seconds() + 3_600,
    };
    Ok(mint(secret.as_bytes(), &claims)?)
}

/// MariaDB's counters of [`STATUS`], read now.
async fn status(db: &Pool<MySql>) -> anyhow::Result<Vec<f64>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SHOW GLOBAL STATUS").fetch_all(db).await?;
    STATUS
        .iter()
        .map(|(name, _)| {
            rows.iter()
                .find(|(variable, _)| variable.eq_ignore_ascii_case(name))
                .and_then(|(_, value)| value.parse::<f64>().ok())
                .ok_or_else(|| anyhow::anyhow!("MariaDB has no status variable {name}"))
        })
        .collect()
}

/// What one concurrency measured.
struct Level {
    concurrency: usize,
    members: usize,
    /// pointstream, then the peer.
    figures: [Interleaved; 2],
    /// MariaDB's counters per mutation during each server's census;
    /// pointstream, then the peer.
    census: [Vec<f64>; 2],
    /// Mutations in each census.
    census_mutations: [u64; 2],
    /// MariaDB's counters per second while both servers idled (their
    /// background work, and any other client of the database server).
    idle: Vec<f64>,
    /// pointstream's group commits over its turns, and the earns they carried.
    commits: (GroupCommits, u64),
    /// pointstream's own means over its turns: the request (from its body
    /// read to its answer), the command in it (`EventStore::execute`: the
    /// wait for the group commit included), the wait for the wallets read model.
    inside: [Option<Duration>; 3],
}

/// What both databases hold after the run, against what was acknowledged.
struct Held {
    acknowledged: [u64; 2],
    /// pointstream: `PointsEarned` events, purchase claims, `earn` ledger rows, the balances' sum.
    ours: [i64; 4],
    /// The peer: purchase rows, ledger rows, the balances' sum.
    peer: [i64; 3],
}

impl Held {
    fn exact(&self) -> bool {
        let points = crate::peer_server::points_for(AMOUNT).unwrap_or(0);
        let [ours, peer] = self.acknowledged.map(|n| n as i64);
        self.ours == [ours, ours, ours, ours * points] && self.peer == [peer, peer, peer * points]
    }
}

async fn measure(ours_url: &str, peer_url: &str, options: &crate::api_bench::Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let peer_options = &options.peer_options;
    let mut levels: Vec<usize> = peer_options.peer_concurrency.iter().copied().filter(|&c| c > 0).collect();
    levels.dedup();
    anyhow::ensure!(!levels.is_empty(), "--peer-concurrency names no concurrency above 0");
    let widest = levels.iter().copied().max().unwrap_or(1);
    // The same members at every concurrency: client w of c earns for members
    // w, w + c, ...; the most any concurrency uses are registered.
    let member_count = levels.iter().map(|&c| c * (options.members / c).max(1)).max().unwrap_or(options.members.max(1));
    let members: Vec<String> = (0..member_count).map(|k| format!("m{k:05}")).collect();
    // Both pools as the `earn` part sizes them for the largest concurrency.
    let config = Earners { concurrency: widest, per_worker: (options.members / widest).max(1) }
        .store_config(options.append_scripts);
    register(&EventStore::open(ours_url, config.clone()).await?, &members).await?;

    let secret = uuid::Uuid::new_v4().simple().to_string();
    let staff = staff_token(&secret)?;
    let ours = ServerProcess::spawn(ours_url, &secret, &config).await?;
    let peer_args = [
        "peer-server",
        "--database-url",
        peer_url,
        "--secret",
        &secret,
        "--max-connections",
        &config.max_connections.to_string(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from);
    let peer = match ServerProcess::spawn_command(&peer_args).await {
        Ok(peer) => peer,
        Err(e) => {
            ours.stop().await?;
            return Err(e);
        }
    };
    let sides = [
        Side { process: ours, tally: Arc::default(), prefix: "s" },
        Side { process: peer, tally: Arc::default(), prefix: "p" },
    ];
    let measured = async {
        caught_up(ours_url).await?;
        let status_db = MySqlPoolOptions::new().max_connections(1).connect(ours_url).await?;
        let mut measured = Vec::new();
        for &concurrency in &levels {
            let earners = Earners { concurrency, per_worker: (options.members / concurrency).max(1) };
            measured.push(measure_level(&sides, earners, &staff, &status_db, options).await?);
        }
        status_db.close().await;
        let held = held(ours_url, peer_url, &sides).await?;
        anyhow::Ok((measured, held))
    }
    .await;
    let [ours, peer] = sides;
    let stopped = [ours.process.stop().await, peer.process.stop().await];
    let (levels, held) = measured?;
    stopped.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let tallies = [&ours.tally, &peer.tally];
    print(&levels, &held, tallies, &config, options, started.elapsed());

    let failed: Vec<String> = ["pointstream", "the peer"]
        .iter()
        .zip(tallies)
        .filter(|(_, tally)| tally.failed() > 0)
        .map(|(name, tally)| {
            let first = tally.first_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            format!("{name} failed {} requests (the first: {})", tally.failed(), first.unwrap_or_default())
        })
        .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    anyhow::ensure!(
        held.exact(),
        "the databases do not hold exactly the acknowledged mutations: pointstream {} acknowledged, holds {:?}; \
         the peer {} acknowledged, holds {:?}",
        held.acknowledged[0],
        held.ours,
        held.acknowledged[1],
        held.peer
    );
    Ok(())
}

/// Both servers at one concurrency: warm-up, turns, then each one's statements counted.
async fn measure_level(
    sides: &[Side; 2],
    earners: Earners,
    staff: &str,
    status_db: &Pool<MySql>,
    options: &crate::api_bench::Options,
) -> anyhow::Result<Level> {
    let concurrency = earners.concurrency;
    let rounds = earners.warm_up_rounds();
    let mut contenders = Vec::new();
    let mut censuses = Vec::new();
    for side in sides {
        let clients = connect_all(concurrency, || RawHttp::connect(&side.process.address)).await?;
        let op = earn_op(&clients, staff, earners, format!("{}{concurrency}-", side.prefix), &side.tally);
        // Every member earns once first: the balances exist, pointstream's aggregates are cached.
        warm_up(concurrency, rounds, &op).await?;
        let meter = Meter::new(Some(side.process.pid()?));
        contenders.push(Contender { op, concurrency, meter, from: rounds });
        censuses.push(earn_op(&clients, staff, earners, format!("{}c{concurrency}-", side.prefix), &side.tally));
    }
    let mut metrics = crate::graphql_http::GraphqlHttp::connect(&sides[0].process.address).await?;
    let (before, acknowledged) = (metrics.get("/metrics").await?, sides[0].tally.acknowledged());
    let figures =
        interleave(&contenders, options.peer_options.peer_turns.max(1), Duration::from_secs(options.seconds.max(1)))
            .await?;
    let after = metrics.get("/metrics").await?;
    let commits = (GroupCommits::between(&before, &after), sides[0].tally.acknowledged() - acknowledged);
    let inside = [
        ("pointstream_graphql_request_seconds", ""),
        ("pointstream_command_seconds", "command=\"earn\""),
        ("pointstream_read_wait_seconds", "projection=\"wallets\""),
    ]
    .map(|(name, label)| mean_between(histogram_totals(&before, name, label), histogram_totals(&after, name, label)));
    let figures = <[Interleaved; 2]>::try_from(figures)
        .map_err(|figures| anyhow::anyhow!("{} figures measured, not 2", figures.len()))?;

    // What MariaDB does per mutation of each: the counters around a
    // closed loop of the same clients; and around as long with both idle.
    let delta = |after: Vec<f64>, before: &[f64], per: f64| -> Vec<f64> {
        after.iter().zip(before).map(|(a, b)| (a - b) / per.max(f64::MIN_POSITIVE)).collect()
    };
    let started = (status(status_db).await?, Instant::now());
    tokio::time::sleep(CENSUS).await;
    let idle = delta(status(status_db).await?, &started.0, started.1.elapsed().as_secs_f64());
    let mut census = Vec::new();
    let mut census_mutations = Vec::new();
    for op in censuses {
        let before = status(status_db).await?;
        let done = closed_loop(concurrency, CENSUS, move |w, i| op(w, i), false).await?;
        let mutations = done.operations();
        census.push(delta(status(status_db).await?, &before, mutations as f64));
        census_mutations.push(mutations);
    }
    let census = <[Vec<f64>; 2]>::try_from(census).map_err(|_| anyhow::anyhow!("two censuses expected"))?;
    let census_mutations = [census_mutations[0], census_mutations[1]];
    Ok(Level {
        concurrency,
        members: earners.concurrency * earners.per_worker,
        figures,
        census,
        census_mutations,
        idle,
        commits,
        inside,
    })
}

/// Counts what each database holds.
async fn held(ours_url: &str, peer_url: &str, sides: &[Side; 2]) -> anyhow::Result<Held> {
    // pointstream writes its read models in the append's transaction; the
    // projectors' checkpoints are waited for all the same.
    caught_up(ours_url).await?;
    let count = |db: Pool<MySql>, queries: Vec<&'static str>| async move {
        let mut counts = Vec::new();
        for query in queries {
            counts.push(sqlx::query_scalar::<_, i64>(query).fetch_one(&db).await?);
        }
        db.close().await;
        anyhow::Ok(counts)
    };
    let ours = count(
        MySqlPoolOptions::new().max_connections(1).connect(ours_url).await?,
        vec![
            "SELECT COUNT(*) FROM events WHERE event_type = 'PointsEarned'",
            "SELECT COUNT(*) FROM claims WHERE kind = 'purchase'",
            "SELECT COUNT(*) FROM ledger WHERE kind = 'earn'",
            "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED) FROM balances",
        ],
    )
    .await?;
    let peer = count(
        MySqlPoolOptions::new().max_connections(1).connect(peer_url).await?,
        vec![
            "SELECT COUNT(*) FROM peer_purchases",
            "SELECT COUNT(*) FROM peer_ledger",
            "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED) FROM peer_balances",
        ],
    )
    .await?;
    Ok(Held {
        acknowledged: [sides[0].tally.acknowledged(), sides[1].tally.acknowledged()],
        ours: <[i64; 4]>::try_from(ours).map_err(|_| anyhow::anyhow!("four counts expected"))?,
        peer: <[i64; 3]>::try_from(peer).map_err(|_| anyhow::anyhow!("three counts expected"))?,
    })
}

fn print(
    levels: &[Level],
    held: &Held,
    tallies: [&Arc<Tally>; 2],
    config: &EventStoreConfig,
    options: &crate::api_bench::Options,
    took: Duration,
) {
    let turns = options.peer_options.peer_turns.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## API against the peer a user would build (MySQL, one run)");
    println!();
    println!(
        "Two servers, each a process of its own on a database of its own: **pointstream** (`bench api-server`, wired \
         as `pointstream serve`: every projector running, the read models written in the append's transaction) and \
         **the peer** (`bench peer-server`: async-graphql 7 on poem, sqlx's MySQL pool, each `earnPoints` one \
         transaction: the purchase's row (unique on store and purchase ref), the balance upserted, read back, the \
         ledger row, COMMIT). Both with a pool of {} connections and HS256 bearer tokens. The same load generator \
         (`raw_http.rs`) on both: at each concurrency that many clients per server, each on its own keep-alive \
         HTTP/1.1 connection, earning 1000 (100 points) for the same members (no wallet shared between clients) \
         with a distinct purchase ref per request, after one unmeasured earn per member; turns of {} s, {turns} \
         each, in the order pointstream, peer, peer, pointstream, and so on. The whole part took {:.0} s.",
        config.max_connections,
        options.seconds.max(1),
        took.as_secs_f64()
    );
    println!();
    println!(
        "| concurrency | members | pointstream per second | p50 / p99 | peer per second | p50 / p99 | \
         **pointstream/peer** | turns: mean (≈95% interval) | turn by turn | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for level in levels {
        let [ours, peer] = &level.figures;
        let ratio = ours.rate / peer.rate.max(f64::MIN_POSITIVE);
        let by_turn: Vec<f64> =
            ours.slices.iter().zip(&peer.slices).map(|(a, b)| a / b.max(f64::MIN_POSITIVE)).collect();
        let interval = match Spread::of(by_turn.iter().copied()) {
            Some(Spread { mean, low, high }) => format!("{mean:.2} ({low:.2}–{high:.2})"),
            None => "–".to_string(),
        };
        let verdict = match target(level.concurrency) {
            Some(target) if ratio >= target => format!("≥ {target}: met"),
            Some(target) => format!("≥ {target}: **missed**"),
            None => "–".to_string(),
        };
        let turns: Vec<String> = by_turn.iter().map(|ratio| format!("{ratio:.2}")).collect();
        println!(
            "| {} | {} | {:.0} | {} / {} | {:.0} | {} / {} | **{ratio:.2}** | {interval} | {} | {verdict} |",
            level.concurrency,
            level.members,
            ours.rate,
            ms(ours.p50),
            ms(ours.p99),
            peer.rate,
            ms(peer.p50),
            ms(peer.p99),
            turns.join(", ")
        );
    }
    println!();
    let verdicts: Vec<String> = levels
        .iter()
        .filter_map(|level| {
            let [ours, peer] = &level.figures;
            let ratio = ours.rate / peer.rate.max(f64::MIN_POSITIVE);
            target(level.concurrency).map(|target| {
                format!(
                    "≥ {target}× at {}: {} ({ratio:.2})",
                    level.concurrency,
                    if ratio >= target { "met" } else { "**missed**" }
                )
            })
        })
        .collect();
    if !verdicts.is_empty() {
        println!("Targets: {}.", verdicts.join("; "));
        println!();
    }
    for level in levels {
        let (commits, earns) = level.commits;
        let groups = commits.scripts + commits.statements;
        let [request, command, wait] = level.inside.map(|mean| mean.map_or("–".to_string(), ms));
        println!(
            "pointstream over its turns at {}: group commits {} ({:.1} earns each); inside the server, per mutation \
             on average, the request {request}, of which the command (the group commit's wait and append) {command} \
             and the wait for the wallets read model {wait}.",
            level.concurrency,
            commits.describe(),
            earns as f64 / groups.max(1.0)
        );
    }
    println!();
    println!(
        "CPU time per mutation ({cores} cores; `/proc`): this process (the clients), the server, MariaDB, the idle \
         machine, and what is left of the cores' time, {cores} cores over the mutation's share of its turns: other \
         processes (anything else running on the machine, which the figures then share it with):"
    );
    println!();
    println!("| | this process | server | MariaDB | idle | other processes | this process, server and MariaDB |");
    println!("|---|---|---|---|---|---|---|");
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    for level in levels {
        for (name, figure) in [("pointstream", &level.figures[0]), ("peer", &level.figures[1])] {
            let cpu = figure.cpu;
            let ours = cpu.clients + cpu.server + cpu.database;
            let wall = Duration::from_secs_f64(cores as f64 / figure.rate.max(f64::MIN_POSITIVE));
            println!(
                "| {name} at {} | {} | {} | {} | {} | {} | {} |",
                level.concurrency,
                us(cpu.clients),
                us(cpu.server),
                us(cpu.database),
                us(cpu.idle),
                us(wall.saturating_sub(ours + cpu.idle)),
                us(ours)
            );
        }
    }
    println!();
    println!(
        "MariaDB per mutation (`SHOW GLOBAL STATUS` around {} s of each server alone at the same concurrency, after \
         its turns; the counters are the whole database server's: the last rows are per second with both servers \
         idle, their background work and any other client's):",
        CENSUS.as_secs()
    );
    println!();
    let header: Vec<&str> = STATUS.iter().map(|(_, what)| *what).collect();
    println!("| | mutations | {} |", header.join(" | "));
    println!("|---|---|{}", "---|".repeat(STATUS.len()));
    for level in levels {
        for (name, census, mutations) in [
            ("pointstream", &level.census[0], level.census_mutations[0]),
            ("peer", &level.census[1], level.census_mutations[1]),
        ] {
            let values: Vec<String> =
                census
                    .iter()
                    .zip(STATUS)
                    .map(|(value, (variable, _))| {
                        if variable == "Innodb_os_log_written" { format!("{value:.0}") } else { format!("{value:.2}") }
                    })
                    .collect();
            println!("| {name} at {} | {mutations} | {} |", level.concurrency, values.join(" | "));
        }
    }
    for level in levels {
        let values: Vec<String> = level.idle.iter().map(|value| format!("{value:.0}")).collect();
        println!("| both idle, per second (at {}) | – | {} |", level.concurrency, values.join(" | "));
    }
    println!();
    let [ours, peer] = held.acknowledged;
    println!(
        "Acknowledged: {ours} by pointstream, {peer} by the peer (warm-ups and counts included); failed: {} and {}. \
         pointstream's database holds {} `PointsEarned` events, {} purchase claims, {} `earn` ledger rows and {} \
         points; the peer's {} purchase rows, {} ledger rows and {} points: {}.",
        tallies[0].failed(),
        tallies[1].failed(),
        held.ours[0],
        held.ours[1],
        held.ours[2],
        held.ours[3],
        held.peer[0],
        held.peer[1],
        held.peer[2],
        if held.exact() { "exactly the acknowledged mutations" } else { "**not the acknowledged mutations**" }
    );
    println!();
}
