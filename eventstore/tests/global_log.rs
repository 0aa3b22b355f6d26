//! The global log under concurrency, across OS processes.
//!
//! Writer processes (this test binary re-run with `--child`) append
//! concurrently to overlapping wallets while this process tails the log from
//! position 0. The reader must see every committed event exactly once, at
//! positions 1..N with no gap, each aggregate's events in sequence order.
//! Runs on SQLite and on MariaDB.

// The support module names this crate as the rest of the workspace does.
extern crate pointstream_eventstore as eventstore;

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use domain::Wallet;
use eventstore::{CommandContext, CommandError, EventStore, EventStoreConfig};
use support::{Backend, earn, open, scratch, world};

const WRITERS: usize = 3;
const COMMANDS_PER_WRITER: usize = 200;
const TASKS_PER_WRITER: usize = 4;
const WALLETS: [&str; 5] = ["ann", "bob", "cat", "dan", "eve"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime starts");
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let url = &args[at + 1];
        let writer: usize = args[at + 2].parse().expect("writer index");
        runtime.block_on(child(url, writer));
        return;
    }
    // `cargo test` passes libtest flags; a filter that names nothing here skips the run.
    if let Some(filter) = args.iter().skip(1).find(|a| !a.starts_with('-'))
        && !"global_log".contains(filter.as_str())
    {
        return;
    }
    for backend in [Backend::Sqlite, Backend::Mysql] {
        let started = Instant::now();
        let report = runtime.block_on(run(backend));
        println!("global_log on {backend:?}: {report} in {:.1?}", started.elapsed());
        let started = Instant::now();
        let report = runtime.block_on(killed_writer(backend));
        println!("killed_writer on {backend:?}: {report} in {:.1?}", started.elapsed());
    }
}

/// One writer process: several tasks earn on the shared wallets at once,
/// printing each outcome as soon as it is acknowledged.
async fn child(url: &str, writer: usize) {
    let store = EventStore::open(url, EventStoreConfig::default()).await.expect("the child opens the store");
    write(store, writer, true).await;
}

/// Earns from several tasks at once; returns each outcome as a line (see
/// [`parse_ack`]), and prints it as soon as it is acknowledged if `echo`.
async fn write(store: EventStore, writer: usize, echo: bool) -> Vec<String> {
    let tasks: Vec<_> = (0..TASKS_PER_WRITER)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in (task..COMMANDS_PER_WRITER).step_by(TASKS_PER_WRITER) {
                    let who = WALLETS[(i + writer) % WALLETS.len()];
                    let command = earn(who, &format!("w{writer}-{i}"), 1_000);
                    let ack = match store.execute::<Wallet>(who, command, CommandContext::default()).await {
                        Ok(outcome) => format!("ok {who} {} {}", outcome.first_position, outcome.last_position),
                        Err(CommandError::Conflict { .. }) => format!("conflict {who}"),
                        Err(other) => panic!("writer {writer}: {other}"),
                    };
                    if echo {
                        println!("{ack}");
                    }
                    acks.push(ack);
                }
                acks
            })
        })
        .collect();
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("a writer task finishes"));
    }
    acks
}

/// One line a writer printed.
enum Ack {
    Committed { who: String, first: u64, last: u64 },
    GaveUp,
}

fn parse_ack(line: &str) -> Ack {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["ok", who, first, last] => Ack::Committed {
            who: who.to_string(),
            first: first.parse().expect("position"),
            last: last.parse().expect("position"),
        },
        ["conflict", _] => Ack::GaveUp,
        _ => panic!("unexpected writer output {line}"),
    }
}

async fn run(backend: Backend) -> String {
    let Some(db) = scratch(backend).await else { return "skipped (POINTSTREAM_SKIP_MYSQL=1)".into() };
    let config = EventStoreConfig { follow_interval: Duration::from_millis(5), ..EventStoreConfig::default() };
    let reader = open(&db, config).await;
    world(&reader, &WALLETS).await;

    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut children: Vec<_> = (0..WRITERS)
        .map(|writer| {
            Command::new(&exe)
                .args(["--child", &db.url, &writer.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("a writer process starts")
        })
        .collect();
    // The reader's process writes too: what it reads back of its own commits
    // comes from memory, the rest from the database.
    let own = tokio::spawn(write(reader.clone(), WRITERS, false));

    // Tail from 0 while the writers run, until they are done and the log is read to its end.
    let mut seen = Vec::new();
    let mut after = 0;
    let mut reads_while_writing = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let events = reader.read_from(after, 200).await.expect("the log reads");
        for event in &events {
            assert_eq!(event.position, after + 1, "the reader saw a gap or a repeat after position {after}");
            after = event.position;
        }
        let running = children.iter_mut().any(|c| c.try_wait().expect("child status").is_none()) || !own.is_finished();
        if running && !events.is_empty() {
            reads_while_writing += 1;
        }
        seen.extend(events);
        if !running && after == reader.read_head().await.expect("the head reads") {
            break;
        }
        assert!(Instant::now() < deadline, "the writers did not finish in time");
        reader.wait_for(after, Duration::from_millis(50)).await;
    }

    let mut committed = BTreeSet::new();
    let mut conflicts = 0;
    let mut acks = own.await.expect("the reader's own writer finishes");
    for child in children {
        let output = child.wait_with_output().expect("child output");
        assert!(output.status.success(), "a writer failed: {output:?}");
        acks.extend(String::from_utf8_lossy(&output.stdout).lines().map(str::to_string));
    }
    for line in &acks {
        match parse_ack(line) {
            Ack::Committed { first, last, .. } => committed.extend(first..=last),
            Ack::GaveUp => conflicts += 1,
        }
    }

    // Every acknowledged event was seen, exactly once (positions are unique and dense).
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=seen.len() as u64).collect::<Vec<_>>());
    let missing: Vec<_> = committed.iter().filter(|p| **p > seen.len() as u64).collect();
    assert!(missing.is_empty(), "acknowledged but never seen: {missing:?}");
    // Each aggregate's events arrive in sequence order, from 1, without repeats.
    let mut streams: BTreeMap<(String, String), u64> = BTreeMap::new();
    for event in &seen {
        let last = streams.entry((event.aggregate_type.clone(), event.aggregate_id.clone())).or_default();
        assert_eq!(event.sequence, *last + 1, "{}/{} out of order", event.aggregate_type, event.aggregate_id);
        *last = event.sequence;
    }
    let earned = seen.iter().filter(|e| e.event_type == "PointsEarned").count();
    assert_eq!(earned, (WRITERS + 1) * COMMANDS_PER_WRITER - conflicts, "one PointsEarned per acknowledged earn");
    // What was read, partly from memory, is the log as stored, byte for byte.
    let stored = reader.read_stored(0, seen.len() as u64 + 1).await.expect("the log reads");
    assert!(stored == seen, "the log read while it was written differs from the log as stored");
    assert!(reader.verify().await.expect("verifies").is_clean());
    assert!(reads_while_writing > 1, "the reader should tail while the writers run");
    format!(
        "{} events, {earned} earns by {WRITERS} processes and the reader, {conflicts} gave up on conflicts, {reads_while_writing} reads while writing",
        seen.len()
    )
}

/// A writer killed with SIGKILL in the middle of its work loses nothing it
/// acknowledged, leaves no partial command and no broken chain, and the
/// wallets it was writing stay writable.
async fn killed_writer(backend: Backend) -> String {
    let Some(db) = scratch(backend).await else { return "skipped (POINTSTREAM_SKIP_MYSQL=1)".into() };
    let store = open(&db, EventStoreConfig::default()).await;
    world(&store, &WALLETS).await;
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut child = Command::new(&exe)
        .args(["--child", &db.url, "9"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("a writer process starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    while acks.len() < 60 {
        match lines.next() {
            Some(line) => acks.push(parse_ack(&line.expect("a line"))),
            None => panic!("the writer ended before it could be killed"),
        }
    }
    child.kill().expect("SIGKILL is delivered");
    // Lines already in the pipe were acknowledged before the kill, too.
    acks.extend(lines.map_while(Result::ok).map(|line| parse_ack(&line)));
    child.wait().expect("the writer is reaped");

    let reopened = open(&db, EventStoreConfig::default()).await;
    let head = reopened.read_head().await.expect("the head reads");
    let log = reopened.read_from(0, head + 10).await.expect("the log reads");
    assert_eq!(log.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=head).collect::<Vec<_>>());
    let mut acknowledged = 0;
    for ack in &acks {
        if let Ack::Committed { who, first, last } = ack {
            for position in *first..=*last {
                let event = &log[(position - 1) as usize];
                assert_eq!(&event.aggregate_id, who, "acknowledged event at {position} is missing or wrong");
                acknowledged += 1;
            }
        }
    }
    let report = reopened.verify().await.expect("verifies");
    assert!(report.is_clean(), "{:?}", report.breaks);
    // Every command is whole: each PointsEarned has its wallet opened before it.
    for who in WALLETS {
        let wallet = reopened.load::<Wallet>(who).await.expect("the wallet loads");
        let earned = log.iter().filter(|e| e.aggregate_id == who && e.event_type == "PointsEarned").count() as u64;
        assert_eq!(wallet.state.balance(&support::cafe()), earned * 100);
        reopened
            .execute::<Wallet>(who, earn(who, &format!("after-{who}"), 1_000), CommandContext::default())
            .await
            .expect("the wallet is writable after the crash");
    }
    format!("{} events acknowledged before SIGKILL, all present; {head} events in the log", acknowledged)
}
