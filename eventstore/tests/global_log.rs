//! The global log under concurrency, across OS processes.
//!
//! Writer processes (this test binary re-run, its role in the environment) append
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
use eventstore::{CommandContext, CommandError, EventStore, EventStoreConfig, RecordedEvent};
use support::{Backend, earn, open, scratch, world};

const WRITERS: usize = 3;
const COMMANDS_PER_WRITER: usize = 200;
const TASKS_PER_WRITER: usize = 4;
const WALLETS: [&str; 5] = ["ann", "bob", "cat", "dan", "eve"];

/// Set (to `{url} {writer}`) in the environment of the writer processes this
/// test starts; the role is never read from the command line, which belongs
/// to the test harness.
const WRITER_ROLE: &str = "POINTSTREAM_GLOBAL_LOG_WRITER";
const TESTS: [&str; 2] = ["global_log", "killed_writer"];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime starts");
    if let Some(role) = std::env::var_os(WRITER_ROLE) {
        let role = role.into_string().expect("the writer role is text");
        let (url, writer) = role.rsplit_once(' ').expect("the writer role is `{url} {writer}`");
        runtime.block_on(child(url, writer.parse().expect("writer index")));
        return;
    }
    let selection = Selection::from_args(std::env::args().skip(1));
    if selection.list {
        for test in TESTS {
            println!("{test}: test");
        }
        return;
    }
    let chosen: Vec<&str> = TESTS.iter().copied().filter(|test| selection.runs(test)).collect();
    println!("\nrunning {} tests", chosen.len());
    for backend in [Backend::Sqlite, Backend::Mysql] {
        if chosen.contains(&"global_log") {
            let started = Instant::now();
            let report = runtime.block_on(run(backend));
            println!("global_log on {backend:?}: {report} in {:.1?}", started.elapsed());
        }
        if chosen.contains(&"killed_writer") {
            let started = Instant::now();
            let report = runtime.block_on(killed_writer(backend));
            println!("killed_writer on {backend:?}: {report} in {:.1?}", started.elapsed());
        }
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        chosen.len(),
        TESTS.len() - chosen.len()
    );
}

/// Which of this file's tests the harness arguments select, read as libtest
/// reads them: every libtest flag is understood (those taking a value take
/// it, so `--test-threads 2` filters nothing), the rest are name filters.
/// An argument it does not know fails the run rather than skip it.
struct Selection {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    ignored_only: bool,
    list: bool,
}

impl Selection {
    fn from_args(args: impl Iterator<Item = String>) -> Selection {
        const WITH_VALUE: [&str; 7] =
            ["--test-threads", "--skip", "--logfile", "--format", "--color", "-Z", "--shuffle-seed"];
        const ALONE: [&str; 17] = [
            "--include-ignored",
            "--force-run-in-process",
            "--exclude-should-panic",
            "--test",
            "--bench",
            "--nocapture",
            "--no-capture",
            "--show-output",
            "-q",
            "--quiet",
            "--report-time",
            "--ensure-time",
            "--shuffle",
            "--fail-fast",
            "--ignored",
            "--exact",
            "--list",
        ];
        let mut selection =
            Selection { filters: Vec::new(), skip: Vec::new(), exact: false, ignored_only: false, list: false };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with('-') => (flag.to_string(), Some(value.to_string())),
                _ => (arg.clone(), None),
            };
            if WITH_VALUE.contains(&flag.as_str()) {
                let value = inline
                    .or_else(|| args.next())
                    .unwrap_or_else(|| panic!("global_log: harness flag {flag} needs a value"));
                if flag == "--skip" {
                    selection.skip.push(value);
                }
            } else if ALONE.contains(&flag.as_str()) && inline.is_none() {
                match flag.as_str() {
                    "--ignored" => selection.ignored_only = true,
                    "--exact" => selection.exact = true,
                    "--list" => selection.list = true,
                    _ => {}
                }
            } else if arg.starts_with('-') {
                panic!("global_log: unknown harness argument {arg:?}; refusing to guess whether it selects this test");
            } else {
                selection.filters.push(arg);
            }
        }
        selection
    }

    /// Whether test `name` runs (none of this file's tests is ignored).
    fn runs(&self, name: &str) -> bool {
        let matches = |pattern: &String| if self.exact { name == pattern } else { name.contains(pattern.as_str()) };
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
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
                    let purchase = format!("w{writer}-{i}");
                    let command = earn(who, &purchase, 1_000);
                    let ack = match store.execute::<Wallet>(who, command, CommandContext::default()).await {
                        Ok(outcome) => {
                            format!("ok {who} {purchase} {} {}", outcome.first_position, outcome.last_position)
                        }
                        Err(CommandError::Conflict { .. }) => format!("conflict {who} {purchase}"),
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

/// One line a writer printed: an earn (by its purchase ref) committed at
/// positions `first..=last`, or given up after losing every race.
enum Ack {
    Committed { who: String, purchase: String, first: u64, last: u64 },
    GaveUp { purchase: String },
}

fn parse_ack(line: &str) -> Ack {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["ok", who, purchase, first, last] => Ack::Committed {
            who: who.to_string(),
            purchase: purchase.to_string(),
            first: first.parse().expect("position"),
            last: last.parse().expect("position"),
        },
        ["conflict", _, purchase] => Ack::GaveUp { purchase: purchase.to_string() },
        _ => panic!("unexpected writer output {line}"),
    }
}

/// A writer process: this test binary again, told its role by [`WRITER_ROLE`].
fn spawn_writer(url: &str, writer: usize) -> std::process::Child {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    Command::new(exe)
        .env(WRITER_ROLE, format!("{url} {writer}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("a writer process starts")
}

/// The purchase ref a `PointsEarned` records.
fn purchase_of(event: &RecordedEvent) -> String {
    assert_eq!(event.event_type, "PointsEarned");
    let payload: serde_json::Value = serde_json::from_str(&event.payload).expect("the payload is JSON");
    payload["purchase_ref"].as_str().expect("a purchase ref").to_string()
}

/// Checks `log` (the whole log, from position 1) against what the writers
/// were told: every command in it is whole, each acknowledged earn is there
/// once at the positions it was acknowledged at, and an earn given up on
/// left nothing. Returns how many acknowledged events were found.
fn check_commands_against_acks(log: &[RecordedEvent], acks: &[Ack]) -> usize {
    // The log's commands: its events grouped by command id, in order.
    let mut commands: BTreeMap<String, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in log {
        let metadata = event.metadata().expect("metadata parses");
        commands.entry(metadata.command_id).or_default().push(event);
    }
    let mut earned_at: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (command, events) in &commands {
        let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
        let first = positions[0];
        assert_eq!(
            positions,
            (first..first + positions.len() as u64).collect::<Vec<_>>(),
            "command {command} is not one run of the log"
        );
        let (head, rest) = (events[0], &events[1..]);
        assert!(
            events.iter().all(|e| (&e.aggregate_type, &e.aggregate_id) == (&head.aggregate_type, &head.aggregate_id)),
            "command {command} spans aggregates"
        );
        if head.aggregate_type != "Wallet" {
            continue;
        }
        // An earn is its wallet's opening (on the wallet's first credit) and
        // then the PointsEarned: never one without the other.
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let whole = match types.as_slice() {
            ["PointsEarned"] => head.sequence > 1,
            ["WalletOpened", "PointsEarned"] => head.sequence == 1 && rest[0].sequence == 2,
            _ => false,
        };
        assert!(whole, "command {command} on wallet {} is half-written: {types:?}", head.aggregate_id);
        let earned = events.last().expect("an event");
        let purchase = purchase_of(earned);
        let last = earned.position;
        assert!(earned_at.insert(purchase.clone(), (first, last)).is_none(), "purchase {purchase} earned twice");
    }
    let mut acknowledged = 0;
    for ack in acks {
        match ack {
            Ack::Committed { who, purchase, first, last } => {
                let at = earned_at.get(purchase);
                assert_eq!(at, Some(&(*first, *last)), "acknowledged earn {purchase} is not where it was acknowledged");
                let earned = &log[(*last - 1) as usize];
                assert_eq!((&earned.aggregate_id, earned.event_type.as_str()), (who, "PointsEarned"));
                acknowledged += (last - first + 1) as usize;
            }
            Ack::GaveUp { purchase } => {
                assert!(!earned_at.contains_key(purchase), "earn {purchase} was given up on, yet it is in the log")
            }
        }
    }
    acknowledged
}

async fn run(backend: Backend) -> String {
    let Some(db) = scratch(backend).await else { return "skipped (POINTSTREAM_SKIP_MYSQL=1)".into() };
    let config = EventStoreConfig { follow_interval: Duration::from_millis(5), ..EventStoreConfig::default() };
    let reader = open(&db, config).await;
    world(&reader, &WALLETS).await;

    let mut children: Vec<_> = (0..WRITERS).map(|writer| spawn_writer(&db.url, writer)).collect();
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
    let acks: Vec<Ack> = acks.iter().map(|line| parse_ack(line)).collect();
    for ack in &acks {
        match ack {
            Ack::Committed { first, last, .. } => committed.extend(*first..=*last),
            Ack::GaveUp { .. } => conflicts += 1,
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
    // Each earn a writer was told of is in the log, whole, where it was told.
    check_commands_against_acks(&stored, &acks);
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
    let mut child = spawn_writer(&db.url, 9);
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
    for ack in &acks {
        if let Ack::Committed { who, first, last, .. } = ack {
            for position in *first..=*last {
                let event = &log[(position - 1) as usize];
                assert_eq!(&event.aggregate_id, who, "acknowledged event at {position} is missing or wrong");
            }
        }
    }
    let report = reopened.verify().await.expect("verifies");
    assert!(report.is_clean(), "{:?}", report.breaks);
    // No command is half-written: each earn acknowledged before the kill is
    // in the log whole, where it was acknowledged, and an earn in flight at
    // the kill is there whole or not at all.
    let acknowledged = check_commands_against_acks(&log, &acks);
    let told: BTreeSet<&str> = acks
        .iter()
        .map(|ack| match ack {
            Ack::Committed { purchase, .. } | Ack::GaveUp { purchase } => purchase.as_str(),
        })
        .collect();
    let untold =
        log.iter().filter(|e| e.event_type == "PointsEarned" && !told.contains(purchase_of(e).as_str())).count();
    // And the wallets, folded from those events, hold what was earned.
    for who in WALLETS {
        let wallet = reopened.load::<Wallet>(who).await.expect("the wallet loads");
        let earned = log.iter().filter(|e| e.aggregate_id == who && e.event_type == "PointsEarned").count() as u64;
        assert_eq!(wallet.state.balance(&support::cafe()), earned * 100);
        reopened
            .execute::<Wallet>(who, earn(who, &format!("after-{who}"), 1_000), CommandContext::default())
            .await
            .expect("the wallet is writable after the crash");
    }
    format!(
        "{acknowledged} events acknowledged before SIGKILL, all present and whole; \
         {untold} earns committed but never acknowledged, each whole; {head} events in the log"
    )
}
