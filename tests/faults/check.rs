//! What must hold once the faults are over and everything has settled,
//! read from the database itself (not through the server under test):
//! every acknowledged mutation in the log exactly once under its command
//! id, every one in doubt at most once, every refused one not at all;
//! positions dense from 1 to the head; the Redis stream equal to the log;
//! `pointstream audit verify` clean; and the figures the run is quoted by.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use projections::{Names, PROJECTIONS, checkpoint};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::Value;

use crate::load::{Ledger, Outcome};

/// One event as stored.
#[derive(Debug, Clone)]
pub struct Logged {
    pub position: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    pub metadata: String,
    /// `metadata.command_id`.
    pub command_id: String,
}

/// The log head (`log_head.position`).
pub async fn head(db: &DatabaseConnection) -> u64 {
    let sql = "SELECT CAST(position AS SIGNED) AS position FROM log_head";
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::MySql, sql))
        .await
        .expect("the log head reads")
        .expect("log_head has its row");
    row.try_get::<i64>("", "position").expect("a position") as u64
}

/// Every event, in position order.
pub async fn read_log(db: &DatabaseConnection) -> Vec<Logged> {
    let mut events = Vec::new();
    let mut after = 0i64;
    loop {
        let sql = "SELECT CAST(position AS SIGNED) AS position, aggregate_type, aggregate_id, event_type, payload, \
                   metadata FROM events WHERE position > ? ORDER BY position LIMIT 2000";
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(DbBackend::MySql, sql, [after.into()]))
            .await
            .expect("the events read");
        let Some(last) = rows.last() else { break };
        after = last.try_get("", "position").expect("a position");
        for row in rows {
            let text = |column: &str| row.try_get::<String>("", column).unwrap_or_else(|e| panic!("{column}: {e}"));
            let metadata = text("metadata");
            let parsed: Value = serde_json::from_str(&metadata).unwrap_or_else(|e| panic!("metadata {metadata}: {e}"));
            events.push(Logged {
                position: row.try_get::<i64>("", "position").expect("a position") as u64,
                aggregate_type: text("aggregate_type"),
                aggregate_id: text("aggregate_id"),
                event_type: text("event_type"),
                payload: text("payload"),
                command_id: parsed["command_id"].as_str().unwrap_or_default().to_string(),
                metadata,
            });
        }
    }
    events
}

/// Waits until the log stops moving (the share distribution appends the
/// recipients' side of every share after the load stops), every projection
/// and the share distribution have reached the head, and the stream (when
/// `stream` is given) ends at it; returns the head.
pub async fn settle(db: &DatabaseConnection, stream: Option<(&fred::prelude::Client, &str)>) -> u64 {
    let deadline = Duration::from_secs(180);
    let started = Instant::now();
    let mut last = None;
    loop {
        let head = head(db).await;
        let mut behind = Vec::new();
        for name in PROJECTIONS.iter().chain(["share_distribution"].iter()) {
            let at = checkpoint::read(db, name, &Names::LIVE).await.expect("a checkpoint reads");
            if at < head {
                behind.push(format!("{name} at {at}"));
            }
        }
        if let Some((redis, key)) = stream {
            let relayed = workers::relay::relayed(redis, key).await.unwrap_or(0);
            if relayed < head {
                behind.push(format!("the stream at {relayed}"));
            }
        }
        if behind.is_empty() && last == Some(head) {
            return head;
        }
        assert!(started.elapsed() < deadline, "not settled after {deadline:?}: head {head}, {}", behind.join(", "));
        last = behind.is_empty().then_some(head);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What became of the clients' mutations.
#[derive(Debug, Default)]
pub struct Tally {
    pub acknowledged: usize,
    pub in_doubt: usize,
    /// Of those in doubt, how many the log holds.
    pub in_doubt_recorded: usize,
    pub refused: usize,
    pub never_sent: usize,
    /// Acknowledged, not in the log.
    pub lost: Vec<String>,
    /// In the log more than once.
    pub doubled: Vec<String>,
    /// Refused or never sent, yet in the log.
    pub refused_recorded: Vec<String>,
    /// Recorded as another command than the one sent under the key.
    pub mismatched: Vec<String>,
    /// Answers that break the API's promises.
    pub anomalies: Vec<String>,
    /// Each answer's code (or failure to get one), over every attempt.
    pub answers: BTreeMap<String, u64>,
}

/// Holds each ledger up against the log.
pub fn tally(ledgers: &[Ledger], log: &[Logged]) -> Tally {
    // A command's events, but the `WalletOpened` a first earn adds.
    let mut by_command: HashMap<&str, Vec<&Logged>> = HashMap::new();
    for event in log.iter().filter(|e| e.event_type != "WalletOpened") {
        by_command.entry(event.command_id.as_str()).or_default().push(event);
    }
    let mut tally = Tally::default();
    for ledger in ledgers {
        tally.anomalies.extend(ledger.anomalies.iter().cloned());
        for (answer, count) in &ledger.answers {
            *tally.answers.entry(answer.clone()).or_default() += count;
        }
        for mutation in &ledger.mutations {
            let id = ledger.command_id(&mutation.key);
            let events = by_command.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
            let what = format!(
                "{:?} {} ({id}, {} attempt(s), {:?})",
                mutation.kind, mutation.key, mutation.attempts, mutation.outcome
            );
            if events.iter().any(|e| e.event_type != mutation.kind.event()) {
                let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
                tally.mismatched.push(format!("{what}: recorded as {types:?}"));
            }
            if events.len() > 1 {
                let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
                tally.doubled.push(format!("{what}: at positions {positions:?}"));
            }
            match &mutation.outcome {
                Outcome::Acknowledged => {
                    tally.acknowledged += 1;
                    if events.is_empty() {
                        tally.lost.push(what);
                    }
                }
                Outcome::InDoubt(_) => {
                    tally.in_doubt += 1;
                    tally.in_doubt_recorded += usize::from(!events.is_empty());
                }
                Outcome::Refused(_) | Outcome::NotSent => {
                    if mutation.outcome == Outcome::NotSent {
                        tally.never_sent += 1;
                    } else {
                        tally.refused += 1;
                    }
                    if !events.is_empty() {
                        tally.refused_recorded.push(what);
                    }
                }
            }
        }
    }
    tally
}

/// Positions `1..=head`, each once, in order: the first problem, if any.
pub fn dense(log: &[Logged], head: u64) -> Option<String> {
    if log.len() as u64 != head {
        return Some(format!("{} events for a head of {head}", log.len()));
    }
    log.iter()
        .zip(1..)
        .find(|(event, expected)| event.position != *expected)
        .map(|(event, expected)| format!("position {} where {expected} belongs", event.position))
}

/// The stream `key` holds exactly the log: ids `1-0 ..= head-0`, each entry
/// with its event's fields. The first problem, if any.
pub async fn stream_equals_log(redis: &fred::prelude::Client, key: &str, log: &[Logged]) -> Option<String> {
    use fred::prelude::*;
    let mut expected = log.iter();
    let mut start = "-".to_string();
    let mut read = 0usize;
    loop {
        let entries: Vec<(String, Vec<(String, String)>)> =
            match redis.xrange(key, start.as_str(), "+", Some(1_000)).await {
                Ok(entries) => entries,
                Err(e) => return Some(format!("the stream does not read: {e}")),
            };
        let Some((last, _)) = entries.last() else { break };
        let next = match workers::relay::position_of(last) {
            Ok(position) => position + 1,
            Err(e) => return Some(format!("entry {last}: {e}")),
        };
        for (id, fields) in &entries {
            read += 1;
            let Some(event) = expected.next() else {
                return Some(format!("entry {id} is past the log's end ({} events)", log.len()));
            };
            if *id != format!("{}-0", event.position) {
                return Some(format!("entry {id} where event {} belongs", event.position));
            }
            let field =
                |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("(missing)");
            for (name, value) in [
                ("position", event.position.to_string().as_str()),
                ("aggregate_id", event.aggregate_id.as_str()),
                ("event_type", event.event_type.as_str()),
                ("payload", event.payload.as_str()),
                ("metadata", event.metadata.as_str()),
            ] {
                if field(name) != value {
                    return Some(format!("entry {id}: {name} is {:?}, the log has {value:?}", field(name)));
                }
            }
        }
        start = format!("{next}-0");
    }
    (read != log.len()).then(|| format!("the stream holds {read} entries, the log {}", log.len()))
}

/// Runs `pointstream <args>` on the database at `url`: whether it
/// succeeded, and what it printed (stdout, then stderr).
pub fn pointstream(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("pointstream {args:?} runs: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// `pointstream audit verify`: the first problem, if any.
pub fn audit(url: &str) -> Option<String> {
    let (ok, out, err) = pointstream(url, &["audit", "verify", "--json"]);
    (!ok).then(|| format!("`pointstream audit verify` is not clean:\n{out}\n{err}"))
}

/// The photos live posts hold, read from the log's payloads: every
/// `photos/...` key a post's events name, dropped when the post is deleted.
pub fn live_photos(log: &[Logged]) -> BTreeSet<String> {
    fn keys(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::String(text) if text.starts_with("photos/") => into.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|v| keys(v, into)),
            Value::Object(fields) => fields.values().for_each(|v| keys(v, into)),
            _ => {}
        }
    }
    let mut by_post: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for event in log.iter().filter(|e| e.aggregate_type == "Post") {
        let photos = by_post.entry(event.aggregate_id.as_str()).or_default();
        if event.event_type == "PostDeleted" {
            photos.clear();
        } else if matches!(event.event_type.as_str(), "PostCreated" | "PhotoAdded") {
            let payload: Value = serde_json::from_str(&event.payload).expect("a JSON payload");
            keys(&payload, photos);
        }
    }
    by_post.into_values().flatten().collect()
}

/// The photo store, after `pointstream media gc --grace-secs 0`, holds
/// exactly the photos live posts hold: the first problem, if any, and the
/// sweep's report.
pub fn swept_to_live(stored: &BTreeSet<String>, live: &BTreeSet<String>) -> Option<String> {
    let orphans: Vec<&String> = stored.difference(live).collect();
    let missing: Vec<&String> = live.difference(stored).collect();
    (!orphans.is_empty() || !missing.is_empty()).then(|| {
        format!(
            "after `media gc --grace-secs 0`: {} object(s) no live post holds {orphans:?}; {} live photo(s) missing {missing:?}",
            orphans.len(),
            missing.len()
        )
    })
}

/// A run's figures, printed for the record whether it passes or fails.
pub struct Figures {
    pub scenario: &'static str,
    pub seed: u64,
    pub rounds: usize,
    pub head: u64,
    pub tally: Tally,
    /// Restart to the first mutation acknowledged after it, per restart.
    pub recoveries: Vec<Duration>,
    /// Other lines worth quoting.
    pub notes: Vec<String>,
}

/// `min / median / max` of `times` in milliseconds, and each of them.
pub fn spread(times: &[Duration]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    let mut ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    let all: Vec<String> = times.iter().map(|t| t.as_millis().to_string()).collect();
    format!(
        "min {} / median {} / max {} ms over {} ({})",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len(),
        all.join(" ")
    )
}

impl Figures {
    /// Prints the figures past the test harness's capture (they are the
    /// suite's output even when it passes) and returns them as text.
    pub fn print(&self) -> String {
        let t = &self.tally;
        let answers: Vec<String> = t.answers.iter().map(|(answer, n)| format!("{answer} {n}")).collect();
        let mut text = format!(
            "faults {} (seed {}): {} rounds, head {}: {} acknowledged, {} in doubt ({} of them recorded), {} lost, \
             {} doubled; {} refused, {} never sent\n  answers: {}\n  recovery (restart to first acknowledged \
             mutation): {}\n",
            self.scenario,
            self.seed,
            self.rounds,
            self.head,
            t.acknowledged,
            t.in_doubt,
            t.in_doubt_recorded,
            t.lost.len(),
            t.doubled.len(),
            t.refused,
            t.never_sent,
            answers.join(", "),
            spread(&self.recoveries),
        );
        for note in &self.notes {
            text.push_str(&format!("  {note}\n"));
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
        text
    }
}

/// What the tally shows wrong: each problem with enough to start looking.
pub fn problems(tally: &Tally) -> Vec<String> {
    let mut problems = Vec::new();
    let list = |what: &str, items: &[String]| {
        let shown: Vec<&String> = items.iter().take(10).collect();
        format!("{} {what}: {shown:#?}", items.len())
    };
    if !tally.lost.is_empty() {
        problems.push(list("acknowledged mutation(s) lost", &tally.lost));
    }
    if !tally.doubled.is_empty() {
        problems.push(list("mutation(s) recorded more than once", &tally.doubled));
    }
    if !tally.refused_recorded.is_empty() {
        problems.push(list("refused or unsent mutation(s) recorded", &tally.refused_recorded));
    }
    if !tally.mismatched.is_empty() {
        problems.push(list("key(s) recorded for another command", &tally.mismatched));
    }
    if !tally.anomalies.is_empty() {
        problems.push(list("answer(s) that break the API's promises", &tally.anomalies));
    }
    if tally.acknowledged == 0 {
        problems.push("no mutation was acknowledged: the load never ran".into());
    }
    problems
}
