//! The global log under concurrency, across OS processes.
//!
//! Writer processes (this test binary re-run with `--child`) append
//! concurrently to overlapping wallets while this process tails the log from
//! position 0. The reader must see every committed event exactly once, at
//! positions 1..N with no gap, each aggregate's events in sequence order.
//! Runs on SQLite and on MariaDB.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use domain::Wallet;
use pointstream_eventstore::{CommandContext, CommandError, EventStore, EventStoreConfig};
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
        && !"global_log".contains(filter.as_str()) {
            return;
        }
    for backend in [Backend::Sqlite, Backend::Mysql] {
        let started = Instant::now();
        let report = runtime.block_on(run(backend));
        println!("global_log on {backend:?}: {report} in {:.1?}", started.elapsed());
    }
}

/// One writer process: several tasks earn on the shared wallets at once,
/// printing each outcome.
async fn child(url: &str, writer: usize) {
    let store = EventStore::open(url, EventStoreConfig::default()).await.expect("the child opens the store");
    let tasks: Vec<_> = (0..TASKS_PER_WRITER)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lines = Vec::new();
                for i in (task..COMMANDS_PER_WRITER).step_by(TASKS_PER_WRITER) {
                    let who = WALLETS[(i + writer) % WALLETS.len()];
                    let command = earn(who, &format!("w{writer}-{i}"), 1_000);
                    match store.execute::<Wallet>(who, command, CommandContext::default()).await {
                        Ok(outcome) => lines.push(format!("ok {who} {} {}", outcome.first_position, outcome.last_position)),
                        Err(CommandError::Conflict { .. }) => lines.push(format!("conflict {who}")),
                        Err(other) => panic!("writer {writer}: {other}"),
                    }
                }
                lines
            })
        })
        .collect();
    for task in tasks {
        for line in task.await.expect("a writer task finishes") {
            println!("{line}");
        }
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
        let running = children.iter_mut().any(|c| c.try_wait().expect("child status").is_none());
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
    for child in children {
        let output = child.wait_with_output().expect("child output");
        assert!(output.status.success(), "a writer failed: {output:?}");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[0] {
                "ok" => {
                    let first: u64 = fields[2].parse().expect("position");
                    let last: u64 = fields[3].parse().expect("position");
                    committed.extend(first..=last);
                }
                "conflict" => conflicts += 1,
                _ => panic!("unexpected writer output {line}"),
            }
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
    assert_eq!(earned, WRITERS * COMMANDS_PER_WRITER - conflicts, "one PointsEarned per acknowledged earn");
    assert!(reader.verify().await.expect("verifies").is_clean());
    assert!(reads_while_writing > 1, "the reader should tail while the writers run");
    format!(
        "{} events, {earned} earns by {WRITERS} processes, {conflicts} gave up on conflicts, {reads_while_writing} reads while writing",
        seen.len()
    )
}
