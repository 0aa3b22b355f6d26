//! Fault injection against the real binary: `pointstream serve` on a
//! MariaDB and a Redis of the test's own, under concurrent load from client
//! threads (earn, redeem, share, posts with and without photos, each under
//! an idempotency key), while one part of the system is killed with SIGKILL
//! and started again, round after round, at points drawn from a seeded
//! generator:
//!
//! 1. Redis, in the middle of the relay's batches, restarted empty;
//! 2. MariaDB, in the middle of group commits, restarted on its data;
//! 3. the server itself, in the middle of requests and uploads;
//! 4. the S3 server, during uploads.
//!
//! Afterwards every acknowledged mutation is in the log exactly once (by its
//! scoped command id), every one in doubt at most once and every refused one
//! not at all; positions are dense; the Redis stream equals the log;
//! `pointstream audit verify` is clean; and after `pointstream media gc
//! --grace-secs 0` the photo store holds exactly the photos of live posts.
//! Each scenario prints its figures (rounds, acknowledged, in doubt, lost,
//! doubled, recovery times); a failure prints the seed, and
//! `POINTSTREAM_FAULTS_SEED=<seed>` draws the same schedule again
//! (`POINTSTREAM_FAULTS_ROUNDS=<n>` runs more or fewer rounds). Scenarios
//! run one at a time, so that each has the machine's cores to itself.
//!
//! No wait here has an upper bound on how fast the system must be: each
//! waits for a condition, with a generous deadline that says what did not
//! happen.

mod app;

#[path = "faults/check.rs"]
mod check;
#[path = "faults/load.rs"]
mod load;
#[path = "faults/mariadb.rs"]
mod mariadb;
#[path = "faults/s3.rs"]
mod s3;
#[path = "../workers/tests/services/mod.rs"]
mod services;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use app::{App, setup};
use check::{Figures, Logged, Tally};
use load::{Answer, Kind, Ledger, Load, Profile, Rng};
use mariadb::MariaDb;
use s3::S3Server;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use services::RedisServer;

/// The members the clients act as (client `i` as `m{i % 6}`).
const MEMBERS: [&str; 6] = ["m0", "m1", "m2", "m3", "m4", "m5"];
/// The relay's stream under the default prefix.
const STREAM: &str = "{pointstream}:events";
/// The longest any single wait may take before the test says what did not
/// happen: generous, since the machine may be busy with other builds.
const PATIENCE: Duration = Duration::from_secs(120);

/// Scenarios take turns: each starts several processes and a load sized
/// for the machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One scenario's run: its name, seed, generator and rounds, and a trail of
/// what happened (kill points, the logs of killed servers), printed with
/// the seed if the test fails.
struct Scenario {
    name: &'static str,
    seed: u64,
    rng: Rng,
    rounds: usize,
    trail: Vec<String>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Scenario {
    fn new(name: &'static str, rounds: usize) -> Scenario {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let seed = std::env::var("POINTSTREAM_FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
        let rounds = std::env::var("POINTSTREAM_FAULTS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(rounds);
        eprintln!("{name}: seed {seed}, {rounds} rounds");
        Scenario { name, seed, rng: Rng::new(seed), rounds, trail: Vec::new(), _turn: turn }
    }

    fn note(&mut self, line: String) {
        self.trail.push(line);
    }

    /// Prints the figures and fails on any problem: the tally's, and
    /// `problems` (the log's, the stream's, the audit's, the scenario's own).
    /// The scenario's figures: its name, seed and rounds, and what the run found.
    fn figures(&self, head: u64, tally: Tally, recoveries: Vec<Duration>, notes: Vec<String>) -> Figures {
        Figures { scenario: self.name, seed: self.seed, rounds: self.rounds, head, tally, recoveries, notes }
    }

    fn conclude(&self, figures: Figures, mut problems: Vec<String>) {
        let text = figures.print();
        problems.extend(check::problems(&figures.tally));
        assert!(
            problems.is_empty(),
            "{}: {} problem(s) (seed {}; POINTSTREAM_FAULTS_SEED={} draws the same schedule):\n{}\n{text}",
            self.name,
            problems.len(),
            self.seed,
            self.seed,
            problems.join("\n")
        );
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {} (POINTSTREAM_FAULTS_SEED={} draws the same schedule); what happened:\n{}",
                self.name,
                self.seed,
                self.seed,
                self.trail.join("\n")
            );
        }
    }
}

/// A private MariaDB holding the database `pointstream`, and a runtime for
/// the test's own reads.
struct Stack {
    mariadb: MariaDb,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Stack {
    /// `None` when MySQL tests were opted out of.
    fn start() -> Option<Stack> {
        let mariadb = MariaDb::start()?;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let server = mariadb.server_url();
        runtime.block_on(async {
            let admin = sea_orm::Database::connect(&server).await.expect("the private MariaDB takes connections");
            admin
                .execute_raw(Statement::from_string(DbBackend::MySql, "CREATE DATABASE pointstream"))
                .await
                .expect("creates the database");
            let _ = admin.close().await;
        });
        Some(Stack { url: format!("{server}/pointstream"), mariadb, runtime })
    }

    fn connect(&self) -> DatabaseConnection {
        self.runtime.block_on(sea_orm::Database::connect(&self.url)).expect("the private MariaDB takes connections")
    }

    fn redis(&self, url: &str) -> fred::prelude::Client {
        self.runtime.block_on(workers::redis::connect(url)).expect("Redis takes connections")
    }

    /// Waits until everything has caught up with a log that no longer
    /// moves; the head and the log.
    fn settle(&self, redis: Option<&fred::prelude::Client>) -> (u64, Vec<Logged>) {
        let db = self.connect();
        self.runtime.block_on(async {
            let head = check::settle(&db, redis.map(|r| (r, STREAM))).await;
            let log = check::read_log(&db).await;
            let _ = db.close().await;
            (head, log)
        })
    }

    /// The checks every scenario makes on a settled system: the ledgers
    /// against the log, dense positions, the stream, the audit.
    fn verify(
        &self,
        ledgers: &[Ledger],
        redis: Option<&fred::prelude::Client>,
        head: u64,
        log: &[Logged],
    ) -> (check::Tally, Vec<String>) {
        let tally = check::tally(ledgers, log);
        let mut problems = Vec::new();
        if let Some(gap) = check::dense(log, head) {
            problems.push(format!("positions are not dense: {gap}"));
        }
        if let Some(redis) = redis
            && let Some(problem) = self.runtime.block_on(check::stream_equals_log(redis, STREAM, log))
        {
            problems.push(format!("the stream is not the log: {problem}"));
        }
        problems.extend(check::audit(&self.url));
        (tally, problems)
    }
}

/// Polls `done` until it holds; fails saying `what` did not happen within
/// [`PATIENCE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free loopback port (the probe's socket is closed before it is used).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("an address").port()
}

fn mixed(count: usize) -> Vec<Profile> {
    vec![Profile::mixed(); count]
}

/// Redis killed with SIGKILL while the relay copies the log into it, and
/// started again empty on the same port, again and again: the relay fills
/// the new stream from the start of the log, and whatever batch it was in
/// when Redis died must leave no gap and no repeat.
#[test]
fn redis_killed_mid_relay_batch_and_restarted_empty() {
    let mut s = Scenario::new("redis_killed_mid_relay_batch_and_restarted_empty", 24);
    let Some(stack) = Stack::start() else { return };
    let mut redis = RedisServer::start();
    let redis_url = redis.url();
    let app = App::serve_at(&stack.url, "127.0.0.1:0", &["--redis-url", &redis_url, "--lease-ttl-ms", "1000"], &[]);
    setup(&app, &MEMBERS, &[("cafe", "m0")]);
    let watcher = stack.redis(&redis_url);
    let relayed = || stack.runtime.block_on(workers::relay::relayed(&watcher, STREAM)).unwrap_or(0);
    let db = stack.connect();
    let load = Load::start(&app.client, &mixed(4), MEMBERS.len(), &mut s.rng);
    let (mut recoveries, mut resumed, mut empty, mut behind) = (Vec::new(), Vec::new(), 0, 0);
    let mut restarted = Instant::now();
    for round in 0..s.rounds {
        // The kill point, drawn from the restart on: before the relay's
        // first batch into the new Redis lands (while it reconnects, reads
        // the log or appends), or somewhere in the batches after it.
        let delay = Duration::from_millis(s.rng.between(0, 250));
        let mut first_entry = None;
        while restarted.elapsed() < delay {
            if first_entry.is_none() && relayed() > 0 {
                first_entry = Some(restarted.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let head = stack.runtime.block_on(check::head(&db));
        let at = relayed();
        // Round 0 starts on the first Redis, not a restarted one.
        resumed.extend(first_entry.filter(|_| round > 0));
        empty += usize::from(at == 0);
        behind += usize::from(0 < at && at < head);
        let port = redis.kill();
        redis = RedisServer::start_on(port);
        s.note(format!("round {round}: Redis killed {delay:?} after its restart, the stream at {at} of {head}"));
        restarted = Instant::now();
        let first = load.wait_acks(restarted, 1, &[], PATIENCE, &format!("round {round}: after Redis restarted"));
        recoveries.push(first - restarted);
    }
    wait_until("the relay writes into the last Redis", || relayed() > 0);
    resumed.push(restarted.elapsed());
    let moved = app.counted("pointstream_relay_batches_moved_total", &[]);
    let ledgers = load.stop();
    let (head, log) = stack.settle(Some(&watcher));
    let (tally, problems) = stack.verify(&ledgers, Some(&watcher), head, &log);
    let figures = s.figures(
        head,
        tally,
        recoveries,
        vec![
            format!(
                "Redis killed with its stream empty (the relay's first batch not landed): {empty}, part-filled: \
             {behind}, of {} rounds",
                s.rounds
            ),
            format!(
                "relay steps cut by a kill: {} failed on the dead connection, {moved} reached the restarted Redis and \
             were refused (the stream had moved under them)",
                app.logs().matches("relay batch failed").count()
            ),
            format!("relay resumed (restart to the first entry of the new stream): {}", check::spread(&resumed)),
        ],
    );
    s.conclude(figures, problems);
    drop(app);
    drop(redis);
}

/// MariaDB killed with SIGKILL while group commits are in flight (a
/// steady load from six clients keeps the writer busy), down for a
/// moment, then started again on its data directory: InnoDB recovers, the
/// server reconnects, and what each client was told holds.
#[test]
fn mariadb_killed_mid_group_commit_and_restarted() {
    let mut s = Scenario::new("mariadb_killed_mid_group_commit_and_restarted", 10);
    let Some(mut stack) = Stack::start() else { return };
    let redis = RedisServer::start();
    let app = App::serve_at(&stack.url, "127.0.0.1:0", &["--redis-url", &redis.url(), "--lease-ttl-ms", "1000"], &[]);
    setup(&app, &MEMBERS, &[("cafe", "m0")]);
    let load = Load::start(&app.client, &mixed(6), MEMBERS.len(), &mut s.rng);
    let (mut recoveries, mut caught) = (Vec::new(), Vec::new());
    let mut since = Instant::now();
    for round in 0..s.rounds {
        load.wait_acks(since, 20, &[], PATIENCE, &format!("round {round}: the load flows"));
        let delay = s.rng.between(0, 200);
        std::thread::sleep(Duration::from_millis(delay));
        let killed = Instant::now();
        stack.mariadb.kill();
        // How long the database stays away is part of the fault.
        let outage = s.rng.between(0, 1_000);
        std::thread::sleep(Duration::from_millis(outage));
        let restarted = Instant::now();
        stack.mariadb.restart();
        let first = load.wait_acks(restarted, 1, &[], PATIENCE, &format!("round {round}: after MariaDB restarted"));
        recoveries.push(first - restarted);
        caught.push(load.answers.doubts_between(killed, first).to_string());
        s.note(format!(
            "round {round}: MariaDB killed {delay} ms in, down {outage} ms, recovered in {:?}",
            first - restarted
        ));
        since = restarted;
    }
    let ledgers = load.stop();
    let watcher = stack.redis(&redis.url());
    let (head, log) = stack.settle(Some(&watcher));
    let (tally, problems) = stack.verify(&ledgers, Some(&watcher), head, &log);
    let figures = s.figures(
        head,
        tally,
        recoveries,
        vec![
            format!("attempts answered in doubt per outage (caught in flight): {}", caught.join(" ")),
            format!(
                "scripted group commits cut by a kill (the writer asked the log whether they landed): {}",
                app.logs().matches("asking the log whether it landed").count()
            ),
        ],
    );
    s.conclude(figures, problems);
    drop(app);
}

/// What every photo scenario checks after `pointstream media gc
/// --grace-secs 0`: the store holds exactly the photos of live posts.
fn photos_swept(stored: BTreeSet<String>, log: &[Logged], report: &str) -> Option<String> {
    check::swept_to_live(&stored, &check::live_photos(log)).map(|problem| format!("{problem}\n  gc: {report}"))
}

/// What a sweep's report says it removed: whole photos no post recorded (a
/// kill between the photo's write and its command, or a removal that
/// failed) and part files (a kill inside a photo's write).
fn swept(report: &str) -> String {
    let report: serde_json::Value = serde_json::from_str(report).unwrap_or_default();
    let removed: Vec<&str> =
        report["sweep"]["removed"].as_array().into_iter().flatten().filter_map(|key| key.as_str()).collect();
    let parts = removed.iter().filter(|key| key.ends_with(".part")).count();
    format!("gc removed {} orphan photo(s) and {parts} part file(s)", removed.len() - parts)
}

/// The server killed with SIGKILL under load, uploads included (one client
/// sends its photos slowly, in paced pieces, so that kills land in the
/// middle of uploads), and started again on the same port, database and
/// photo directory. Afterwards `pointstream media gc --grace-secs 0` leaves
/// exactly the photos live posts hold: with the filesystem store, the
/// directory's entries.
#[test]
fn server_killed_mid_load_and_mid_upload() {
    let mut s = Scenario::new("server_killed_mid_load_and_mid_upload", 12);
    let Some(stack) = Stack::start() else { return };
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let photos = media::scratch::scratch_dir();
    let photos_arg = photos.display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--redis-url", &redis_url, "--lease-ttl-ms", "1000", "--media-dir", &photos_arg];
    let mut app = App::serve_at(&stack.url, &listen, &args, &[]);
    setup(&app, &MEMBERS, &[("cafe", "m0")]);
    let with_photos = Profile { weights: [4, 2, 2, 1, 2], photo_bytes: (8 << 10, 64 << 10), ..Profile::mixed() };
    let slow = Profile::uploader((128 << 10, 256 << 10), 16 << 10, Duration::from_millis(2));
    let load = Load::start(&app.client, &[with_photos, with_photos, with_photos, slow], MEMBERS.len(), &mut s.rng);
    let (mut recoveries, mut caught) = (Vec::new(), Vec::new());
    let mut since = Instant::now();
    for round in 0..s.rounds {
        load.wait_acks(since, 10, &[], PATIENCE, &format!("round {round}: the load flows"));
        let delay = s.rng.between(0, 400);
        std::thread::sleep(Duration::from_millis(delay));
        let killed = Instant::now();
        let logged = app.kill();
        let restarted = Instant::now();
        app = App::serve_at(&stack.url, &listen, &args, &[]);
        let first = load.wait_acks(restarted, 1, &[], PATIENCE, &format!("round {round}: after the server restarted"));
        recoveries.push(first - restarted);
        caught.push(load.answers.doubts_between(killed, first).to_string());
        s.note(format!("round {round}: server killed {delay} ms in; its log's end:\n{}", tail(&logged, 20)));
        since = restarted;
    }
    let ledgers = load.stop();
    let watcher = stack.redis(&redis_url);
    let (head, log) = stack.settle(Some(&watcher));
    let (tally, mut problems) = stack.verify(&ledgers, Some(&watcher), head, &log);
    let (ok, report, err) =
        check::pointstream(&stack.url, &["media", "gc", "--grace-secs", "0", "--media-dir", &photos_arg]);
    if !ok {
        problems.push(format!("`pointstream media gc --grace-secs 0` failed: {report}\n{err}"));
    }
    let stored: BTreeSet<String> = std::fs::read_dir(photos.join("photos"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| format!("photos/{}", entry.file_name().to_string_lossy()))
        .collect();
    let live = check::live_photos(&log).len();
    problems.extend(photos_swept(stored, &log, report.trim()));
    let figures = s.figures(
        head,
        tally,
        recoveries,
        vec![
            format!("attempts answered in doubt per kill (caught in flight): {}", caught.join(" ")),
            format!("photos of live posts: {live}; {}", swept(&report)),
        ],
    );
    s.conclude(figures, problems);
    drop(app);
    let _ = std::fs::remove_dir_all(&photos);
}

/// The S3 server stopped (SIGKILL) while photos are being uploaded, and
/// started again on the same data once an upload has failed: every upload
/// it broke is answered with a coded error (no request goes unanswered) and
/// nothing of it is recorded; once it is back, uploads succeed again, and
/// `media gc` leaves the bucket holding exactly the photos of live posts.
#[test]
fn s3_stopped_during_uploads() {
    let mut s = Scenario::new("s3_stopped_during_uploads", 5);
    let Some(mut s3) = S3Server::start() else { return };
    let Some(stack) = Stack::start() else { return };
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let endpoint = s3.endpoint();
    let s3_args =
        ["--s3-bucket", s3::BUCKET, "--s3-endpoint", &endpoint, "--s3-region", "us-east-1", "--s3-path-style"];
    let mut args = vec!["--redis-url", redis_url.as_str(), "--lease-ttl-ms", "1000"];
    args.extend(s3_args);
    let app = App::serve_at(&stack.url, "127.0.0.1:0", &args, &[]);
    setup(&app, &MEMBERS, &[("cafe", "m0")]);
    // The photo store's failure is its own code (`PHOTO_STORE_UNAVAILABLE`),
    // a refusal; an `INTERNAL` answer counts as in doubt, and none may come.
    let uploader = Profile::uploader((16 << 10, 128 << 10), 16 << 10, Duration::from_millis(1));
    let plain = Profile::mixed();
    let load = Load::start(&app.client, &[uploader, uploader, uploader, plain], MEMBERS.len(), &mut s.rng);
    let (mut recoveries, mut outages) = (Vec::new(), Vec::new());
    let mut since = Instant::now();
    for round in 0..s.rounds {
        load.wait_acks(since, 5, &[Kind::PhotoPost], PATIENCE, &format!("round {round}: photos are uploaded"));
        let delay = s.rng.between(0, 150);
        std::thread::sleep(Duration::from_millis(delay));
        let killed = Instant::now();
        s3.kill();
        // Down for a drawn while, and until an upload has failed: the SDK
        // retries a refused connection for a while before it gives up.
        let outage = s.rng.between(1_000, 3_000);
        std::thread::sleep(Duration::from_millis(outage));
        let what = format!("round {round}: an upload refused while S3 is down");
        load.wait_for(killed, 1, &[Kind::PhotoPost], Answer::Refused, PATIENCE, &what);
        let down = killed.elapsed();
        let restarted = Instant::now();
        s3.restart();
        let what = format!("round {round}: a photo uploaded after S3 restarted");
        let first = load.wait_acks(restarted, 1, &[Kind::PhotoPost], PATIENCE, &what);
        recoveries.push(first - restarted);
        s.note(format!("round {round}: S3 killed {delay} ms in, down {down:?}"));
        outages.push(down);
        since = restarted;
    }
    let ledgers = load.stop();
    let watcher = stack.redis(&redis_url);
    let (head, log) = stack.settle(Some(&watcher));
    let (tally, mut problems) = stack.verify(&ledgers, Some(&watcher), head, &log);
    if tally.in_doubt > 0 {
        problems.push(format!(
            "{} mutation(s) got no answer that says: every one must (the database stayed up)",
            tally.in_doubt
        ));
    }
    let refused_photos = ledgers
        .iter()
        .flat_map(|l| &l.mutations)
        .filter(|m| m.kind == Kind::PhotoPost && matches!(m.outcome, load::Outcome::Refused(_)))
        .count();
    if refused_photos == 0 {
        problems.push("no upload failed while S3 was down: the fault was not felt".into());
    }
    let unavailable = ledgers
        .iter()
        .flat_map(|l| &l.mutations)
        .filter(|m| matches!(&m.outcome, load::Outcome::Refused(code) if code == "PHOTO_STORE_UNAVAILABLE"))
        .count();
    if unavailable == 0 {
        problems.push("no upload was refused as PHOTO_STORE_UNAVAILABLE while S3 was down".into());
    }
    let mut gc = vec!["media", "gc", "--grace-secs", "0"];
    gc.extend(s3_args);
    let (ok, report, err) = check::pointstream(&stack.url, &gc);
    if !ok {
        problems.push(format!("`pointstream media gc --grace-secs 0` failed: {report}\n{err}"));
    }
    let listed = stack.runtime.block_on(async {
        media::MediaStore::S3(media::S3Store::connect(&s3.config()).await).list().await.expect("the bucket lists")
    });
    let stored: BTreeSet<String> = listed.into_iter().map(|object| object.key).collect();
    let live = check::live_photos(&log).len();
    problems.extend(photos_swept(stored, &log, report.trim()));
    let figures = s.figures(
        head,
        tally,
        recoveries,
        vec![
            format!("photo posts refused while S3 was down: {refused_photos} ({unavailable} PHOTO_STORE_UNAVAILABLE)"),
            format!("S3 down (kill to restart, until an upload was refused): {}", check::spread(&outages)),
            format!("photos of live posts: {live}; {}", swept(&report)),
        ],
    );
    s.conclude(figures, problems);
    drop(app);
}
