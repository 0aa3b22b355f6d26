//! `bench ledger`: the Merkle tree over the log. What keeping it up costs
//! the appends (the notary running next to not running, in turns), what a
//! proof costs at a million events (next to a primary-key read of one
//! event), and how fast a whole export verifies offline (next to reading
//! and parsing it alone, and SHA-256 over its bytes).

use std::future::Future;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::Wallet;
use eventstore::merkle::{self, Digest, Extended, PublicKey, RootBuilder, Signer};
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use projections::notary::{self, NotaryConfig};
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use verify::ExportedEvent;

use crate::api_checks::Spread;
use crate::cpu::{CpuTime, Meter};
use crate::measure::{Loop, Op, closed_loop, ms, warm_up};
use crate::pointstream::{earn, register};
use crate::projection_bench::{WALLETS, WRITERS, log_wallets, write_log};
use crate::run::Scratch;

/// What to measure.
pub struct Options {
    /// Events in the log the proofs and the verification are measured on.
    pub events: u64,
    /// Seconds of each turn of the append figures.
    pub seconds: u64,
    /// Closed-loop workers of the append figures.
    pub concurrency: usize,
    /// Turns of each append figure (on and off).
    pub turns: usize,
    /// Random proofs of each kind (and point reads) timed.
    pub proofs: usize,
    /// Rounds of each offline figure.
    pub rounds: usize,
}

/// Wallets each append worker cycles through, one set per figure.
const WALLETS_PER_WORKER: usize = 10;
/// Events per `merkle::extend`, as the notary's default batch.
const EXTEND_BATCH: u64 = 5_000;
/// Events the parts of an extension are timed over, alone.
const PARTS_PREFIX: u64 = 200_000;
/// Idle time before every append turn, with the tree at the log's head.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the notary has to catch up once the load stops.
const CATCH_UP: Duration = Duration::from_secs(1);
/// How often the notary's lag is sampled during the on turns.
const LAG_SAMPLE: Duration = Duration::from_millis(100);

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(server, "ledger", |url| async move { measure(server, &url, options).await }).await
}

/// The append figures' two sides.
const OFF: usize = 0;
const ON: usize = 1;
const MODES: [&str; 2] = ["off", "on"];

/// Member `k` of worker `w` of the figure `mode`.
fn wallet(mode: usize, w: usize, k: usize) -> String {
    format!("{}{w}-{k}", MODES[mode])
}

async fn measure(server: &str, url: &str, options: &Options) -> anyhow::Result<()> {
    let run_started = Instant::now();
    let meter = Meter::new(None);
    let run_before = meter.read()?;
    let concurrency = options.concurrency.max(1);
    let config =
        EventStoreConfig { max_connections: (WRITERS.max(concurrency) + 8) as u32, ..EventStoreConfig::default() };
    let store = EventStore::open(url, config).await?;
    let mut members = log_wallets();
    for mode in [OFF, ON] {
        members.extend((0..concurrency).flat_map(|w| (0..WALLETS_PER_WORKER).map(move |k| wallet(mode, w, k))));
    }
    register(&store, &members).await?;

    let started = Instant::now();
    write_log(&store, Arc::new(members), options.events).await?;
    let head = store.read_head().await?;
    let written = started.elapsed();
    eprintln!("(wrote {head} events in {written:.1?})");

    let tree = tree_and_proofs(&store, head, options).await?;
    eprintln!("(tree and proofs measured)");
    let offline = offline(&store, head, options).await?;
    eprintln!("(offline verification measured)");
    let appends = appends(&store, options).await?;

    println!("## ledger: the Merkle tree (MySQL at {server}, one run)");
    println!();
    println!(
        "Log: {head} events (earns and redeems on {WALLETS} wallets through `EventStore::execute`, {WRITERS} \
         concurrent writers), written in {:.1} s ({:.0} events/s).",
        written.as_secs_f64(),
        head as f64 / written.as_secs_f64()
    );
    println!();
    appends.print(options, concurrency);
    tree.print();
    offline.print();
    let (wall, cpu) = (run_started.elapsed(), run_before.until(&meter.read()?));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = |time: Duration| 100.0 * time.as_secs_f64() / (wall.as_secs_f64() * cores as f64);
    println!(
        "The whole run took {:.0} s. Of the machine's CPU time ({cores} cores, `/proc`): this process {:.0}%, \
         MariaDB {:.0}%, other processes {:.0}%, idle {:.0}%.",
        wall.as_secs_f64(),
        share(cpu.clients),
        share(cpu.database),
        share(others(&cpu, wall)),
        share(cpu.idle)
    );
    Ok(())
}

/// The CPU time of the machine's other processes (and whatever of the
/// kernel's is charged to neither) over `wall`, given what this process,
/// the database server and the idle CPUs took: what says that a figure
/// shared its cores with something else.
fn others(cpu: &CpuTime, wall: Duration) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    (wall * cores).saturating_sub(cpu.clients + cpu.server + cpu.database + cpu.idle)
}

/// p50, p99 and the largest of some timings.
#[derive(Debug, Clone, Copy)]
struct Spread3 {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Spread3 {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Spread3 { p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }
}

/// Extends the tree to the log's head, `batch` events at a time; its size.
async fn extend_to_head(store: &EventStore, builder: &mut Option<RootBuilder>, batch: u64) -> anyhow::Result<u64> {
    loop {
        match merkle::extend(store.db(), builder, batch).await? {
            Extended::Grown { size, added } if added < batch => return Ok(size),
            Extended::Grown { .. } => {}
            Extended::Raced => *builder = None,
            Extended::Hole(at) => anyhow::bail!("the log has a hole at position {at}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The tree and its proofs.

/// Figures of the tree's extension and of its proofs.
struct TreeFigures {
    size: u64,
    /// The whole tree from 0, `EXTEND_BATCH` events per extension.
    extend: Duration,
    extend_cpu: CpuTime,
    /// Over the first `parts_events` events: reading them in pages, and
    /// hashing their leaves and nodes.
    parts_events: u64,
    reading: Duration,
    hashing: Duration,
    /// Timings of the proofs and their baselines, by index into [`CALLS`].
    calls: [Calls; CALLS.len()],
    /// Mean hashes per proof.
    inclusion_hashes: f64,
    consistency_hashes: f64,
    proofs: usize,
}

async fn tree_and_proofs(store: &EventStore, head: u64, options: &Options) -> anyhow::Result<TreeFigures> {
    let db = store.db();
    anyhow::ensure!(merkle::size(db).await? == 0, "the scratch database's tree is not empty");

    // The whole tree, as the notary builds it from an empty one.
    let meter = Meter::new(None);
    let before = meter.read()?;
    let started = Instant::now();
    let size = extend_to_head(store, &mut None, EXTEND_BATCH).await?;
    let extend = started.elapsed();
    let extend_cpu = before.until(&meter.read()?);
    anyhow::ensure!(size == head, "the tree has {size} leaves, the log {head} events");
    eprintln!("(tree of {size} leaves built in {extend:.1?})");

    // The same pass's work without the writes: read the pages, hash the
    // leaves and the nodes an extension stores.
    let parts_events = size.min(PARTS_PREFIX);
    let (mut reading, mut hashing) = (Duration::ZERO, Duration::ZERO);
    let mut builder = RootBuilder::default();
    let mut nodes: Vec<(u32, u64, merkle::Hash)> = Vec::with_capacity(2 * EXTEND_BATCH as usize);
    let mut after = 0;
    while after < parts_events {
        let started = Instant::now();
        let events = store.read_stored(after, EXTEND_BATCH.min(parts_events - after)).await?;
        reading += started.elapsed();
        let Some(last) = events.last() else { break };
        after = last.position;
        let started = Instant::now();
        nodes.clear();
        for event in &events {
            builder.push_nodes(merkle::leaf_hash(event), |level, index, hash| nodes.push((level, index, *hash)));
        }
        hashing += started.elapsed();
        std::hint::black_box(&nodes);
    }
    anyhow::ensure!(builder.root() == merkle::root(db, after).await?, "the stored tree differs from the log's");

    // Proofs of random leaves and random pairs of sizes, each next to its
    // baselines: one after the other for each sample, in an order that
    // rotates, so that a drift of the machine weighs on all alike.
    let root = merkle::root(db, size).await?;
    let mut random = rand::rngs::StdRng::seed_from_u64(0x5EED_1ED6_E500_0001);
    let proofs = options.proofs.max(1);
    let mut calls: [Calls; CALLS.len()] = Default::default();
    let (mut inclusion_hashes, mut consistency_hashes) = (0usize, 0usize);
    let read_event = format!(
        "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
         recorded_at_us, hash FROM events WHERE position = {}",
        if store.backend() == sea_orm::DbBackend::Postgres { "$1" } else { "?" }
    );
    for k in 0..proofs {
        let index = random.random_range(0..size);
        let (a, b) = (1 + random.random_range(0..size), 1 + random.random_range(0..size));
        let (old, new) = match (a.min(b), a.max(b)) {
            (old, new) if old < new => (old, new),
            (same, _) if same > 1 => (same - 1, same),
            _ => (1, 2.min(size)),
        };
        let mut checks = Vec::new();
        for step in 0..4 {
            match (step + k) % 4 {
                0 => {
                    // Twice: the second finds the pages the first read.
                    for call in [POINT_READ, POINT_READ_AGAIN] {
                        let statement =
                            Statement::from_sql_and_values(store.backend(), &read_event, [(index as i64 + 1).into()]);
                        let row = calls[call].time(store, db.query_one_raw(statement)).await?;
                        let row = row.context("no event at a position below the head")?;
                        anyhow::ensure!(row.try_get::<i64>("", "position")? as u64 == index + 1);
                    }
                }
                1 => {
                    let stored = calls[ROUND_TRIP].time(store, merkle::size(db)).await?;
                    anyhow::ensure!(stored == size);
                }
                2 => {
                    for call in [INCLUSION, INCLUSION_AGAIN] {
                        let (leaf, path) = calls[call].time(store, merkle::inclusion_proof(db, index, size)).await?;
                        if call == INCLUSION {
                            inclusion_hashes += path.len();
                        }
                        checks.push(verify::verify_inclusion(index, size, &leaf, &path, &root));
                    }
                }
                _ => {
                    let path = calls[CONSISTENCY].time(store, merkle::consistency_proof(db, old, new)).await?;
                    consistency_hashes += path.len();
                    let (first, second) = (merkle::root(db, old).await?, merkle::root(db, new).await?);
                    checks.push(verify::verify_consistency(old, new, &first, &second, &path));
                }
            }
        }
        for check in checks {
            check.map_err(|err| anyhow::anyhow!("a proof does not check: {err} (leaf {index}, sizes {old}..{new})"))?;
        }
    }
    Ok(TreeFigures {
        size,
        extend,
        extend_cpu,
        parts_events: after,
        reading,
        hashing,
        calls,
        inclusion_hashes: inclusion_hashes as f64 / proofs as f64,
        consistency_hashes: consistency_hashes as f64 / proofs as f64,
        proofs,
    })
}

/// The calls timed at each sample, by index into [`CALLS`].
const POINT_READ: usize = 0;
const POINT_READ_AGAIN: usize = 1;
const ROUND_TRIP: usize = 2;
const INCLUSION: usize = 3;
const INCLUSION_AGAIN: usize = 4;
const CONSISTENCY: usize = 5;
const CALLS: [&str; 6] = [
    "point read: `SELECT ... FROM events WHERE position = ?` (baseline)",
    "the same point read again (its page now in the buffer pool)",
    "`merkle::size` (a one-row primary-key read: the round trip)",
    "`merkle::inclusion_proof(db, index, size)`",
    "the same inclusion proof again (its pages now in the buffer pool)",
    "`merkle::consistency_proof(db, old, new)`",
];

/// The timings of one kind of call, and what the database server counted
/// meanwhile ([`CALL_COUNTERS`], server-wide).
#[derive(Debug, Default)]
struct Calls {
    samples: Vec<Duration>,
    counted: [f64; CALL_COUNTERS.len()],
}

impl Calls {
    /// Times `call`, and counts the pages read from disk around it (untimed).
    async fn time<T, E>(&mut self, store: &EventStore, call: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
    where
        anyhow::Error: From<E>,
    {
        let before = status(store, &CALL_COUNTERS).await;
        let started = Instant::now();
        let value = call.await?;
        self.samples.push(started.elapsed());
        let after = status(store, &CALL_COUNTERS).await;
        for (k, counted) in self.counted.iter_mut().enumerate() {
            *counted += after[k] - before[k];
        }
        Ok(value)
    }

    fn spread(&self) -> Spread3 {
        Spread3::of(self.samples.clone())
    }

    /// [`CALL_COUNTERS`] per call.
    fn counted(&self) -> impl Iterator<Item = f64> + '_ {
        self.counted.iter().map(|count| count / self.samples.len().max(1) as f64)
    }
}

/// What the database server did for a call: the pages InnoDB read from disk
/// (not found in its buffer pool), and the statements it prepared (a
/// statement's first use on a connection of the pool).
const CALL_COUNTERS: [&str; 2] = ["Innodb_buffer_pool_reads", "Com_stmt_prepare"];

impl TreeFigures {
    fn print(&self) {
        let rate = |events: u64, time: Duration| events as f64 / time.as_secs_f64().max(f64::MIN_POSITIVE);
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        let extend_rate = rate(self.size, self.extend);
        let cpu = self.extend_cpu.per(self.size as f64);
        let (read_rate, hash_rate) = (rate(self.parts_events, self.reading), rate(self.parts_events, self.hashing));
        let both = rate(self.parts_events, self.reading + self.hashing);
        println!("### Proofs at {} events", self.size);
        println!();
        println!(
            "The tree built from empty with `merkle::extend`, {EXTEND_BATCH} events per call (one transaction \
             each, as the notary's batches): {:.1} s, **{extend_rate:.0} events/s**; per event, this process's \
             CPU {}, MariaDB's {}, other processes' {}, the machine idle {}.",
            self.extend.as_secs_f64(),
            us(cpu.clients),
            us(cpu.database),
            us(others(&self.extend_cpu, self.extend) / self.size.max(1) as u32),
            us(cpu.idle)
        );
        println!(
            "Its parts alone, over the first {} events in the same run: reading the pages of {EXTEND_BATCH} \
             (`read_stored`) {read_rate:.0} events/s, hashing the leaves and nodes {hash_rate:.0} events/s; the \
             two together {both:.0} events/s, {:.0}% of an extension's time. The rest ({:.0}%) is writing the \
             nodes (about two rows per event, in INSERTs of 500) and the transaction.",
            self.parts_events,
            100.0 * extend_rate / both,
            100.0 * (1.0 - extend_rate / both)
        );
        println!();
        println!(
            "{} random leaves and {} random pairs of sizes (1 ≤ old < new ≤ {}); for each sample the four kinds \
             of call one after the other, in an order that rotates, the point read and the inclusion proof twice \
             in a row (the second finds its pages in the buffer pool); every proof checked against its roots \
             (`verify_inclusion`, `verify_consistency`):",
            self.proofs, self.proofs, self.size
        );
        println!();
        println!(
            "| call | p50 | p99 | max | p50 / point read | p99 / point read | per call (server-wide counters): \
             pages read from disk / statements prepared |"
        );
        println!("|---|---|---|---|---|---|---|");
        let point_read = self.calls[POINT_READ].spread();
        for (k, calls) in self.calls.iter().enumerate() {
            let figure = calls.spread();
            let name = match k {
                INCLUSION => format!("{} ({:.1} hashes, size {})", CALLS[k], self.inclusion_hashes, self.size),
                CONSISTENCY => format!("{} ({:.1} hashes)", CALLS[k], self.consistency_hashes),
                _ => CALLS[k].to_string(),
            };
            println!(
                "| {name} | {} | {} | {} | {:.2} | {:.2} | {} |",
                ms(figure.p50),
                ms(figure.p99),
                ms(figure.max),
                figure.p50.as_secs_f64() / point_read.p50.as_secs_f64(),
                figure.p99.as_secs_f64() / point_read.p99.as_secs_f64(),
                calls.counted().map(|count| format!("{count:.2}")).collect::<Vec<_>>().join(" / ")
            );
        }
        println!();
        let met = |figure: Spread3| {
            let limit = Duration::from_millis(1);
            if figure.p50 < limit && figure.p99 < limit { "met" } else { "**not met**" }
        };
        println!(
            "Target < 1 ms at p50 and p99: inclusion {}, consistency {}.",
            met(self.calls[INCLUSION].spread()),
            met(self.calls[CONSISTENCY].spread())
        );
        println!();
    }
}

// ---------------------------------------------------------------------------
// Offline verification.

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Figures of the export and of its offline checks.
struct OfflineFigures {
    events: u64,
    bytes: u64,
    export: Duration,
    digest_sizes: Vec<u64>,
    /// Each round's time: verifying, reading and parsing only, SHA-256 over the bytes.
    verify: Vec<Duration>,
    parse: Vec<Duration>,
    sha256: Vec<Duration>,
}

async fn offline(store: &EventStore, head: u64, options: &Options) -> anyhow::Result<OfflineFigures> {
    let file = TempFile(
        std::env::temp_dir().join(format!("pointstream_bench_ledger_{}.jsonl", uuid::Uuid::new_v4().simple())),
    );

    // The export, as `pointstream log --export` writes it.
    let started = Instant::now();
    let mut out = BufWriter::new(std::fs::File::create(&file.0).with_context(|| format!("{}", file.0.display()))?);
    let mut after = 0;
    loop {
        let events = store.read_stored(after, 1_000).await?;
        for event in &events {
            let line = serde_json::to_string(&ExportedEvent {
                position: event.position,
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence,
                event_type: event.event_type.clone(),
                event_version: event.event_version,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
                recorded_at_us: event.recorded_at_us,
                hash: event.hash.clone(),
            })?;
            writeln!(out, "{line}")?;
            after = event.position;
        }
        if events.len() < 1_000 {
            break;
        }
    }
    out.flush()?;
    drop(out);
    let export = started.elapsed();
    anyhow::ensure!(after == head, "exported up to {after}, the log has {head}");
    let bytes = std::fs::metadata(&file.0)?.len();
    eprintln!("(exported {head} events, {bytes} bytes, in {export:.1?})");

    // Digests of the whole log and of three earlier sizes.
    let (signer, _) = Signer::generate();
    let mut digest_sizes: Vec<u64> = [head / 4, head / 2, 3 * head / 4, head].into_iter().filter(|s| *s > 0).collect();
    digest_sizes.dedup();
    let mut digests = Vec::new();
    for size in &digest_sizes {
        digests.push(signer.sign(*size, &merkle::root(store.db(), *size).await?, eventstore::now_us()));
    }
    let key = signer.public_key().clone();

    // Rounds of the three, in an order that turns around every round.
    let path = file.0.clone();
    let rounds = options.rounds.max(1);
    let (verify, parse, sha256) = tokio::task::spawn_blocking(move || {
        let (mut verify, mut parse, mut sha256) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut order = [0, 1, 2];
            if round % 2 == 1 {
                order.reverse();
            }
            for which in order {
                match which {
                    0 => verify.push(verify_file(&path, &digests, &key, head)?),
                    1 => parse.push(parse_file(&path, head)?),
                    _ => sha256.push(sha256_file(&path, bytes)?),
                }
            }
        }
        anyhow::Ok((verify, parse, sha256))
    })
    .await??;
    Ok(OfflineFigures { events: head, bytes, export, digest_sizes, verify, parse, sha256 })
}

/// The export's lines, as `pointstream audit verify --events` reads them.
fn exported_events(path: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<ExportedEvent>>> {
    let reader = BufReader::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    let lines = reader.lines().enumerate().filter(|(_, line)| !matches!(line, Ok(l) if l.trim().is_empty()));
    Ok(lines.map(|(number, line)| {
        let line = line.context("cannot read the export")?;
        serde_json::from_str::<ExportedEvent>(&line)
            .with_context(|| format!("line {}: not an exported event", number + 1))
    }))
}

/// `verify::verify_log` over the export: it must find all `events` events
/// and nothing wrong.
fn verify_file(path: &Path, digests: &[Digest], key: &PublicKey, events: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let report = verify::verify_log(digests, key, exported_events(path)?)?;
    let elapsed = started.elapsed();
    anyhow::ensure!(report.is_clean(), "the export does not verify: {:?}", report.findings);
    anyhow::ensure!(report.events == events, "{} events verified, {events} exported", report.events);
    Ok(elapsed)
}

/// Reading and parsing the export's lines, and nothing else.
fn parse_file(path: &Path, events: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut parsed = 0u64;
    for event in exported_events(path)? {
        std::hint::black_box(event?);
        parsed += 1;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(parsed == events, "{parsed} events parsed, {events} exported");
    Ok(elapsed)
}

/// SHA-256 over the export's bytes, read 1 MiB at a time.
fn sha256_file(path: &Path, bytes: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        read += n as u64;
    }
    std::hint::black_box(hasher.finalize());
    let elapsed = started.elapsed();
    anyhow::ensure!(read == bytes, "{read} bytes hashed, {bytes} exported");
    Ok(elapsed)
}

impl OfflineFigures {
    fn print(&self) {
        let total = |times: &[Duration]| times.iter().sum::<Duration>();
        let rate = |times: &[Duration]| self.events as f64 * times.len() as f64 / total(times).as_secs_f64();
        let range = |times: &[Duration]| {
            let rates: Vec<f64> = times.iter().map(|t| self.events as f64 / t.as_secs_f64()).collect();
            let low = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rates.iter().copied().fold(0.0, f64::max);
            format!("{low:.0}–{high:.0}")
        };
        let mib = self.bytes as f64 / (1 << 20) as f64;
        let mib_rate = |times: &[Duration]| mib * times.len() as f64 / total(times).as_secs_f64();
        println!("### Offline verification of {} events", self.events);
        println!();
        println!(
            "The log exported as `pointstream log --export` writes it (`read_stored` in pages of 1,000, a JSON \
             line of `verify::ExportedEvent` each, through a `BufWriter`): {:.1} MiB ({:.0} bytes per event) in \
             {:.1} s ({:.0} events/s). Digests signed with a fresh key at sizes {}. Then {} rounds of each, in \
             an order that turns around every round, reading the file as `pointstream audit verify --events` \
             does (a `BufReader`, line by line, `serde_json`):",
            mib,
            self.bytes as f64 / self.events as f64,
            self.export.as_secs_f64(),
            self.events as f64 / self.export.as_secs_f64(),
            self.digest_sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            self.verify.len()
        );
        println!();
        println!("| over the whole export | events/s | rounds' events/s | MiB/s | time / verification's |");
        println!("|---|---|---|---|---|");
        let verify_time = total(&self.verify);
        let row = |name: &str, times: &[Duration]| {
            println!(
                "| {name} | {:.0} | {} | {:.0} | {:.2} |",
                rate(times),
                range(times),
                mib_rate(times),
                total(times).as_secs_f64() / verify_time.as_secs_f64()
            );
        };
        row("`verify::verify_log`: read, parse, hash every leaf and node, compare with the digests", &self.verify);
        row("reading and parsing into `ExportedEvent` only (baseline)", &self.parse);
        row("SHA-256 over the file's bytes, read 1 MiB at a time (baseline)", &self.sha256);
        println!();
        let verified = rate(&self.verify);
        let share = 1.0 - total(&self.parse).as_secs_f64() / verify_time.as_secs_f64();
        println!(
            "Verification beyond reading and parsing (the leaf and node hashes, the comparisons): {:.0}% of its \
             time. Target ≥ 500,000 events/s: {}.",
            100.0 * share,
            if verified >= 500_000.0 { "met" } else { "**not met**" }
        );
        println!();
    }
}

// ---------------------------------------------------------------------------
// Appends with the notary running next to not running.

/// One side of the append figures.
#[derive(Default)]
struct Side {
    done: Loop,
    cpu: CpuTime,
    /// What the database server counted during the turns (`SHOW GLOBAL STATUS`).
    counted: [f64; COUNTERS.len()],
    /// The rate in each turn, in order.
    turns: Vec<f64>,
}

/// The append figures.
struct AppendFigures {
    sides: [Side; 2],
    /// Head − tree size when each on turn's load stopped.
    lags: Vec<u64>,
    /// How long after that the tree reached that head, if within `CATCH_UP`.
    caught_up: Vec<Option<Duration>>,
    /// The lag sampled during the on turns.
    sampled: Vec<u64>,
    /// Digests the notary signed during the on turns.
    digests: u64,
}

/// Earns of worker `w` of the figure `mode`, cycling through its wallets.
fn earn_op(store: &EventStore, mode: usize) -> Op {
    let store = store.clone();
    Arc::new(move |w, i| {
        let store = store.clone();
        Box::pin(async move {
            let id = wallet(mode, w, i as usize % WALLETS_PER_WORKER);
            let command = earn(&id, &format!("{}{w}-{i}", MODES[mode]))?;
            store.execute::<Wallet>(&id, command, CommandContext::default()).await?;
            Ok(())
        })
    })
}

/// The database server's counters the append figures print per command:
/// statements, statements prepared, InnoDB's fsyncs. Server-wide: any
/// other client of the same server counts too.
const COUNTERS: [&str; 3] = ["Questions", "Com_stmt_prepare", "Innodb_data_fsyncs"];

/// The database server's status counters `names` now (server-wide; zeros
/// where the server has none).
async fn status(store: &EventStore, names: &[&str]) -> Vec<f64> {
    let list = names.iter().map(|name| format!("'{name}'")).collect::<Vec<_>>().join(", ");
    let query = format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({list})");
    let rows = store.db().query_all_raw(Statement::from_string(store.backend(), query)).await.unwrap_or_default();
    let mut values = vec![0.0; names.len()];
    for row in rows {
        let (Ok(name), Ok(value)) = (row.try_get_by_index::<String>(0), row.try_get_by_index::<String>(1)) else {
            continue;
        };
        if let Some(k) = names.iter().position(|counter| counter.eq_ignore_ascii_case(&name)) {
            values[k] = value.parse().unwrap_or(0.0);
        }
    }
    values
}

async fn digest_count(store: &EventStore) -> anyhow::Result<u64> {
    let row = store
        .db()
        .query_one_raw(Statement::from_string(store.backend(), "SELECT COUNT(*) AS n FROM log_digests"))
        .await?
        .context("no count")?;
    Ok(row.try_get::<i64>("", "n")? as u64)
}

/// Waits until the tree has at least `head` leaves; how long that took, or
/// `None` after `limit`.
async fn tree_reaches(store: &EventStore, head: u64, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    loop {
        if merkle::size(store.db()).await? >= head {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= limit {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn appends(store: &EventStore, options: &Options) -> anyhow::Result<AppendFigures> {
    let concurrency = options.concurrency.max(1);
    let slice = Duration::from_secs(options.seconds.max(1));
    let meter = Meter::new(None);
    let (signer, _) = Signer::generate();
    let config = NotaryConfig { every_events: 1_000, ..NotaryConfig::default() };
    let ops = [earn_op(store, OFF), earn_op(store, ON)];
    // Every worker earns once on each of its wallets, unmeasured: the
    // aggregates are cached, as a running server's are.
    for op in &ops {
        warm_up(concurrency, WALLETS_PER_WORKER as u64, op).await?;
    }
    let mut sides = [Side::default(), Side::default()];
    let (mut lags, mut caught_up, mut sampled) = (Vec::new(), Vec::new(), Vec::new());
    let digests_before = digest_count(store).await?;
    let mut builder = None;
    for turn in 0..options.turns.max(1) {
        let order = if turn % 2 == 0 { [OFF, ON] } else { [ON, OFF] };
        for mode in order {
            // Every turn starts with the tree at the head and an idle second.
            extend_to_head(store, &mut builder, EXTEND_BATCH).await?;
            let notary = (mode == ON).then(|| {
                let (stop, shutdown) = watch::channel(false);
                let task = tokio::spawn(notary::run(store.clone(), config.clone(), signer.clone(), None, shutdown));
                (stop, task)
            });
            tokio::time::sleep(SETTLE).await;
            let sampler = (mode == ON).then(|| {
                let (stop, mut stopped) = watch::channel(false);
                let store = store.clone();
                let task = tokio::spawn(async move {
                    let mut lags = Vec::new();
                    while !*stopped.borrow() {
                        lags.push(store.head().saturating_sub(merkle::size(store.db()).await?));
                        tokio::select! {
                            _ = tokio::time::sleep(LAG_SAMPLE) => {}
                            _ = stopped.changed() => {}
                        }
                    }
                    anyhow::Ok(lags)
                });
                (stop, task)
            });

            let side = &mut sides[mode];
            let from: Vec<u64> = (0..concurrency)
                .map(|w| WALLETS_PER_WORKER as u64 + side.done.per_worker.get(w).copied().unwrap_or(0))
                .collect();
            let op = ops[mode].clone();
            let before = (meter.read()?, status(store, &COUNTERS).await);
            let measured = closed_loop(concurrency, slice, move |w, i| op(w, from[w] + i), true).await?;
            side.cpu.add(&before.0.until(&meter.read()?));
            let after = status(store, &COUNTERS).await;
            for (k, counted) in side.counted.iter_mut().enumerate() {
                *counted += after[k] - before.1[k];
            }

            if let (Some((stop_notary, notary)), Some((stop_sampler, sampler))) = (notary, sampler) {
                let head = store.head();
                lags.push(head.saturating_sub(merkle::size(store.db()).await?));
                caught_up.push(tree_reaches(store, head, CATCH_UP).await?);
                stop_sampler.send_replace(true);
                sampled.extend(sampler.await??);
                tree_reaches(store, head, Duration::from_secs(120))
                    .await?
                    .context("the notary did not catch up within two minutes")?;
                stop_notary.send_replace(true);
                notary.await?;
            }
            side.turns.push(measured.rate());
            side.done.extend(measured);
        }
    }
    let digests = digest_count(store).await? - digests_before;
    Ok(AppendFigures { sides, lags, caught_up, sampled, digests })
}

impl AppendFigures {
    fn print(self, options: &Options, concurrency: usize) {
        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        let ratios: Vec<f64> = self.sides[ON]
            .turns
            .iter()
            .zip(&self.sides[OFF].turns)
            .map(|(on, off)| on / off.max(f64::MIN_POSITIVE))
            .collect();
        println!("### Appends with the tree kept up, next to without");
        println!();
        println!(
            "{concurrency} closed-loop workers, each cycling through {WALLETS_PER_WORKER} wallets of its own (a set \
             per side), earn commands through `EventStore::execute` on the log above. **on**: the notary \
             (`projections::notary::run`: `NotaryConfig::default()` with `every_events` 1,000, no publisher, a \
             fresh `Signer::generate()` key) running on the same store; **off**: no notary. Turns of {} s, {} \
             each, in the order off, on, then on, off, and so on; every turn starts with the tree at the log's \
             head (between turns it is brought there, untimed) after {} s idle, and every worker first earned \
             once on each of its wallets, unmeasured.",
            options.seconds.max(1),
            ratios.len(),
            SETTLE.as_secs()
        );
        println!();
        println!(
            "| at concurrency {concurrency} | commands/s | p50 / p99 | turns' commands/s | CPU per command: this \
             process / MariaDB / other processes / idle | per command (server-wide counters): statements / \
             prepares / fsyncs |"
        );
        println!("|---|---|---|---|---|---|");
        let mut rates = [0.0; 2];
        for (mode, side) in self.sides.into_iter().enumerate() {
            let operations = side.done.operations() as f64;
            let cpu = side.cpu.per(operations);
            let other = others(&side.cpu, side.done.elapsed).div_f64(operations.max(1.0));
            let counted: Vec<String> =
                side.counted.iter().map(|count| format!("{:.2}", count / operations.max(1.0))).collect();
            let turns: Vec<String> = side.turns.iter().map(|rate| format!("{rate:.0}")).collect();
            match side.done.summary() {
                Ok((rate, p50, p99)) => {
                    rates[mode] = rate;
                    println!(
                        "| {} | {rate:.0} | {} / {} | {} | {} / {} / {} / {} | {} |",
                        MODES[mode],
                        ms(p50),
                        ms(p99),
                        turns.join(", "),
                        us(cpu.clients),
                        us(cpu.database),
                        us(other),
                        us(cpu.idle),
                        counted.join(" / ")
                    );
                }
                Err(err) => println!("| {} | {err} | | | | |", MODES[mode]),
            }
        }
        println!();
        let ratio = rates[ON] / rates[OFF].max(f64::MIN_POSITIVE);
        let spread = match Spread::of(ratios.iter().copied()) {
            Some(Spread { mean, low, high }) => {
                format!("; the turns' geometric mean {mean:.3} (≈95% interval {low:.3}–{high:.3})")
            }
            None => String::new(),
        };
        let turns: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
        println!("on/off = **{ratio:.3}**{spread}; turn by turn {}.", turns.join(", "));
        let verdict = if ratio >= 0.95 { "met" } else { "**not met**" };
        let unresolved = match Spread::of(ratios.iter().copied()) {
            Some(Spread { low, high, .. }) if low < 0.95 && 0.95 < high => {
                format!(" (the turns' interval {low:.3}–{high:.3} holds 0.95: this run cannot tell)")
            }
            _ => String::new(),
        };
        println!("Target on/off ≥ 0.95: {verdict}{unresolved}.");
        println!();
        let lags: Vec<String> = self.lags.iter().map(u64::to_string).collect();
        let caught: Vec<String> = self
            .caught_up
            .iter()
            .map(|caught| {
                caught.map_or_else(|| "no".to_string(), |after| format!("{:.0} ms", after.as_secs_f64() * 1e3))
            })
            .collect();
        let all_caught = self.caught_up.iter().all(Option::is_some);
        let (mean, max) = if self.sampled.is_empty() {
            (0.0, 0)
        } else {
            (
                self.sampled.iter().sum::<u64>() as f64 / self.sampled.len() as f64,
                self.sampled.iter().copied().max().unwrap_or(0),
            )
        };
        println!(
            "The notary's lag (head − `merkle::size`) when each on turn's load stopped: {} events; it reached that \
             head within {} s: {} ({}). During the on turns, sampled every {} ms: mean {mean:.0}, max {max} \
             events. Digests signed during the on turns: {}.",
            lags.join(", "),
            CATCH_UP.as_secs(),
            if all_caught { "yes, every time" } else { "**not every time**" },
            caught.join(", "),
            LAG_SAMPLE.as_millis(),
            self.digests
        );
        println!();
    }
}
