//! `bench fanout`: subscriptions at the limit of one server process. The
//! server (`bench api-server`, a process of its own) holds `--connections`
//! WebSockets (19,000 by default: about what fits under a 20,000 open-file
//! limit) opened by `--client-processes` client processes (`bench
//! fanout-clients`, see [`crate::fanout_clients`]), with `--subscriptions`
//! `walletUpdates` subscriptions (50,000) multiplexed over them. Measured:
//!
//! * (a) one update that reaches every subscription (all follow one
//!   wallet): delivery p50/p99 from sending the mutation;
//! * (b) `--rate` updates a second (1,000) over `--wallets` distinct wallets
//!   for `--seconds`, each subscription following one wallet: delivery p99 of
//!   each subscription, their median and the worst;
//! * (c) the server's resident memory per idle connection and per idle
//!   subscription (VmRSS before and after connecting, then after subscribing).
//!
//! Each next to a baseline of the same run: (a) and (b) with a crowd of
//! `--baseline-subscribers` (1,000: one subscription per connection) on the
//! same server after the large crowd has gone; (c) the client processes'
//! own memory per connection (a bare tungstenite client connection).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::auth::Role;
use eventstore::{EventStore, EventStoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::api_bench::{caught_up, raise_open_files_limit, token};
use crate::api_server::ServerProcess;
use crate::fanout_clients::now_ns;
use crate::measure::ms;
use crate::pointstream::register;
use crate::raw_http::RawHttp;
use crate::run::Scratch;

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// WebSocket connections to the one server, over every client process.
    #[arg(long, default_value_t = 19_000)]
    pub connections: usize,
    /// Subscriptions multiplexed over them (subscription `s` on connection `s % connections`).
    #[arg(long, default_value_t = 50_000)]
    pub subscriptions: usize,
    /// Client processes the connections are spread over (each under the open-file limit).
    #[arg(long, default_value_t = 4)]
    pub client_processes: usize,
    /// Connections opening at a time, per client process.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Timed updates to every subscription, (a).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Distinct wallets the updates of (b) go to; subscription `s` follows wallet `s % wallets`.
    #[arg(long, default_value_t = 1_000)]
    pub wallets: usize,
    /// Updates per second of (b).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of (b).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// HTTP connections the updates of (b) are sent over.
    #[arg(long, default_value_t = 32)]
    pub load_connections: usize,
    /// Subscriptions of the baseline crowd (one per connection).
    #[arg(long, default_value_t = 1_000)]
    pub baseline_subscribers: usize,
}

/// The member every subscription of (a) follows.
const FAN: &str = "fan";

const EARN: &str = "mutation($m: String!, $r: String!) { \
    earnPoints(member: $m, store: \"cafe\", purchaseRef: $r, amount: 1000) { position } }";

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(server, "fanout", |url| async move { Box::pin(measure(&url, options)).await }).await
}

/// A client process of the run (`bench fanout-clients`).
struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    /// Starts one and waits until every connection of its share is acknowledged.
    async fn spawn(address: &str, token: &str, share: (usize, usize), total: (usize, usize)) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the bench binary to start a client process")?;
        let ((first, count), (connections, subscriptions)) = (share, total);
        let mut child = Command::new(exe)
            .args(["fanout-clients", "--address", address, "--token", token])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--connections", &connections.to_string(), "--subscriptions", &subscriptions.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a client process")?;
        let stdin = child.stdin.take().context("the client process's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the client process's stdout")?).lines();
        Ok(Self { child, stdin, stdout })
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        self.stdout.next_line().await?.context("a client process exited (its error is above)")
    }

    async fn connected(&mut self) -> anyhow::Result<()> {
        let line = tokio::time::timeout(Duration::from_secs(300), self.line())
            .await
            .context("a client process did not connect within 300 s")??;
        anyhow::ensure!(line == "connected", "a client process said {line}");
        Ok(())
    }

    async fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    fn resident_bytes(&self) -> anyhow::Result<u64> {
        crate::api_server::resident_bytes(self.child.id().context("a client process has exited")?)
    }
}

/// What a `status` asked of every client process found.
#[derive(Debug, Default, Clone, Copy)]
struct Status {
    /// Subscriptions that received the position asked about, or a later one.
    reached: usize,
    /// Subscriptions that received anything since they subscribed.
    any: usize,
    failures: usize,
    subscriptions: usize,
    /// Updates received since the last drain.
    pending: usize,
}

/// Client processes that together hold `connections` connections and
/// `subscriptions` subscriptions.
struct Crowd {
    processes: Vec<ClientProcess>,
    subscriptions: usize,
}

impl Crowd {
    async fn connect(
        address: &str,
        token: &str,
        (connections, subscriptions): (usize, usize),
        processes: usize,
    ) -> anyhow::Result<Self> {
        let processes = processes.clamp(1, connections.max(1));
        let mut spawned = Vec::with_capacity(processes);
        for p in 0..processes {
            let (first, last) = (connections * p / processes, connections * (p + 1) / processes);
            spawned
                .push(ClientProcess::spawn(address, token, (first, last - first), (connections, subscriptions)).await?);
        }
        for process in &mut spawned {
            process.connected().await?;
        }
        Ok(Self { processes: spawned, subscriptions })
    }

    /// Sends `command` to every process and returns each one's first answer line.
    async fn ask(&mut self, command: &str) -> anyhow::Result<Vec<String>> {
        for process in &mut self.processes {
            process.send(command).await?;
        }
        let mut answers = Vec::with_capacity(self.processes.len());
        for process in &mut self.processes {
            answers.push(process.line().await?);
        }
        Ok(answers)
    }

    async fn subscribe(&mut self, target: &str) -> anyhow::Result<()> {
        for answer in self.ask(&format!("subscribe {target}")).await? {
            anyhow::ensure!(answer == "ok", "a client process answered {answer} to subscribe");
        }
        Ok(())
    }

    async fn status(&mut self, position: u64) -> anyhow::Result<Status> {
        let mut total = Status::default();
        for answer in self.ask(&format!("status {position}")).await? {
            let numbers: Vec<usize> = answer.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
            let [reached, any, failures, subscriptions, pending] = numbers[..] else {
                anyhow::bail!("a client process answered {answer} to status");
            };
            total.reached += reached;
            total.any += any;
            total.failures += failures;
            total.subscriptions += subscriptions;
            total.pending += pending;
        }
        if total.failures > 0 {
            let reasons = self.failures().await?;
            anyhow::bail!("{} subscriptions or connections failed, among them: {}", total.failures, reasons.join("; "));
        }
        Ok(total)
    }

    async fn failures(&mut self) -> anyhow::Result<Vec<String>> {
        let mut reasons = Vec::new();
        for process in &mut self.processes {
            process.send("failures").await?;
            loop {
                let line = process.line().await?;
                if line == "end" {
                    break;
                }
                reasons.push(line);
            }
        }
        Ok(reasons)
    }

    /// Waits until `done(status)` holds, or `within` has passed; the last status.
    async fn wait(
        &mut self,
        position: u64,
        within: Duration,
        done: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<(Status, bool)> {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status(position).await?;
            if done(&status) {
                return Ok((status, true));
            }
            if Instant::now() >= deadline {
                return Ok((status, false));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every update received since the last drain: (subscription, position, received at).
    async fn drain(&mut self) -> anyhow::Result<Vec<(u32, u64, u64)>> {
        let mut arrivals = Vec::new();
        for process in &mut self.processes {
            process.send("drain").await?;
            loop {
                let line = process.line().await?;
                if line == "end" {
                    break;
                }
                let mut fields = line.split(' ').map(str::parse::<u64>);
                let (Some(Ok(s)), Some(Ok(position)), Some(Ok(at))) = (fields.next(), fields.next(), fields.next())
                else {
                    anyhow::bail!("a client process drained {line}");
                };
                arrivals.push((s as u32, position, at));
            }
        }
        Ok(arrivals)
    }

    fn resident_bytes(&self) -> anyhow::Result<u64> {
        self.processes.iter().map(ClientProcess::resident_bytes).sum()
    }

    /// CPU time the client processes have used so far.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        self.processes
            .iter()
            .map(|p| crate::cpu::process_time(p.child.id().context("a client process has exited")?))
            .sum()
    }

    /// Closes every client process (their connections with them) and waits for them.
    async fn close(self) -> anyhow::Result<()> {
        for mut process in self.processes {
            drop(process.stdin);
            if tokio::time::timeout(Duration::from_secs(30), process.child.wait()).await.is_err() {
                process.child.start_kill()?;
            }
        }
        Ok(())
    }
}

/// The updates the benchmark sends, over HTTP.
struct Updates {
    clients: Vec<Arc<Mutex<RawHttp>>>,
    staff: String,
    sent: usize,
}

impl Updates {
    /// Earns for `member`; the position and when the request was sent.
    async fn earn(
        client: &Mutex<RawHttp>,
        staff: &str,
        member: &str,
        purchase_ref: &str,
    ) -> anyhow::Result<(u64, u64)> {
        let body = serde_json::json!({ "query": EARN, "variables": { "m": member, "r": purchase_ref } }).to_string();
        let mut client = client.lock().await;
        let sent = now_ns();
        let answer = client.post(Some(staff), body.as_bytes()).await?;
        let value: serde_json::Value = serde_json::from_slice(answer)?;
        let position = value["data"]["earnPoints"]["position"]
            .as_u64()
            .with_context(|| format!("earnPoints answered without a position: {value}"))?;
        Ok((position, sent))
    }

    async fn one(&mut self, member: &str) -> anyhow::Result<(u64, u64, u64)> {
        self.sent += 1;
        let purchase_ref = format!("u-{}", self.sent);
        let (position, sent) = Self::earn(&self.clients[0], &self.staff, member, &purchase_ref).await?;
        Ok((position, sent, now_ns()))
    }

    /// `rate` earns a second for `seconds`, earn `i` for wallet `w{i % wallets}`,
    /// each sent at its time (or as soon as a connection is free): for each
    /// position, when it was sent and when answered.
    async fn steady(&mut self, wallets: usize, rate: u64, seconds: u64) -> anyhow::Result<Vec<(u64, u64, u64, usize)>> {
        let total = (rate * seconds) as usize;
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let base = self.sent;
        self.sent += total;
        let n = self.clients.len();
        let tasks: Vec<_> = self
            .clients
            .iter()
            .enumerate()
            .map(|(k, client)| {
                let (client, staff) = (client.clone(), self.staff.clone());
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    for i in (k..total).step_by(n) {
                        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate as f64)).await;
                        let wallet = i % wallets;
                        let member = format!("w{wallet}");
                        let (position, sent) =
                            Self::earn(&client, &staff, &member, &format!("u-{}", base + i + 1)).await?;
                        done.push((position, sent, now_ns(), wallet));
                    }
                    anyhow::Ok(done)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(total);
        for task in tasks {
            all.extend(task.await??);
        }
        Ok(all)
    }
}

/// What (a) measured on a crowd.
struct ToAll {
    subscriptions: usize,
    rounds: Vec<Round>,
    /// CPU time over the timed rounds: the server's, the client processes'.
    cpu: (Duration, Duration),
}

/// One update to every subscription; times from sending it.
struct Round {
    answered: Duration,
    p50: Duration,
    p99: Duration,
    all: Duration,
}

/// What (b) measured on a crowd.
struct Steady {
    subscriptions: usize,
    updates: usize,
    seconds: f64,
    answered_p50: Duration,
    answered_p99: Duration,
    /// Over every delivery.
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Each subscription's p99: their median, their 99th percentile, the worst.
    each_p99_median: Duration,
    each_p99_p99: Duration,
    each_p99_worst: Duration,
    deliveries: usize,
    expected: usize,
}

/// (c): memory.
struct Memory {
    server_fresh: u64,
    server_connected: u64,
    server_subscribed: u64,
    /// After (a)'s deliveries.
    server_delivered: u64,
    clients_before: u64,
    clients_connected: u64,
    server_files: usize,
}

fn duration_ns(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

/// (a) on `crowd`: `rounds` earns for `fan`, each timed to every subscription.
async fn to_all(
    crowd: &mut Crowd,
    updates: &mut Updates,
    server: &ServerProcess,
    rounds: usize,
) -> anyhow::Result<ToAll> {
    let subscriptions = crowd.subscriptions;
    warm_up_fan(crowd, updates).await?;
    let cpu_before = (server.cpu_time()?, crowd.cpu_time()?);
    let mut timed = Vec::new();
    for round in 1..=rounds.max(1) {
        let (position, sent, answered) = updates.one(FAN).await?;
        let (status, done) = crowd.wait(position, Duration::from_secs(60), |s| s.reached == subscriptions).await?;
        anyhow::ensure!(
            done,
            "round {round}: only {} of {subscriptions} subscriptions received it in 60 s",
            status.reached
        );
        let mut latencies: Vec<u64> = crowd
            .drain()
            .await?
            .into_iter()
            .filter(|&(_, p, _)| p == position)
            .map(|(_, _, at)| at.saturating_sub(sent))
            .collect();
        latencies.sort_unstable();
        anyhow::ensure!(latencies.len() == subscriptions, "round {round}: {} deliveries", latencies.len());
        timed.push(Round {
            answered: duration_ns(answered.saturating_sub(sent)),
            p50: duration_ns(quantile(&latencies, 0.5)),
            p99: duration_ns(quantile(&latencies, 0.99)),
            all: duration_ns(latencies.last().copied().unwrap_or_default()),
        });
        // Let the machine settle between rounds.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = (server.cpu_time()?.saturating_sub(cpu_before.0), crowd.cpu_time()?.saturating_sub(cpu_before.1));
    Ok(ToAll { subscriptions, rounds: timed, cpu })
}

/// A subscribe has no acknowledgement: every subscription is live once every
/// one has received the same update; until then, earn again.
async fn warm_up_fan(crowd: &mut Crowd, updates: &mut Updates) -> anyhow::Result<()> {
    let subscriptions = crowd.subscriptions;
    for attempt in 1..=5 {
        let (position, _, _) = updates.one(FAN).await?;
        let (status, done) = crowd.wait(position, Duration::from_secs(30), |s| s.reached == subscriptions).await?;
        if done {
            crowd.drain().await?;
            return Ok(());
        }
        eprintln!(
            "({} of {subscriptions} subscriptions did not receive warm-up update {attempt}; another)",
            subscriptions - status.reached
        );
    }
    anyhow::bail!("not every subscription received any of 5 warm-up updates")
}

/// Subscribes `crowd` to the wallets and waits until each subscription has
/// received an update (one earn per wallet, again for any still silent).
async fn warm_up_wallets(crowd: &mut Crowd, updates: &mut Updates, wallets: usize) -> anyhow::Result<()> {
    crowd.subscribe(&format!("wallets {wallets}")).await?;
    let subscriptions = crowd.subscriptions;
    for attempt in 1..=5 {
        let steady = updates.steady(wallets, 2_000, (wallets as u64).div_ceil(2_000)).await?;
        let last = steady.iter().map(|u| u.0).max().unwrap_or_default();
        let (status, done) = crowd.wait(last, Duration::from_secs(30), |s| s.any == subscriptions).await?;
        if done {
            crowd.drain().await?;
            return Ok(());
        }
        eprintln!(
            "({} of {subscriptions} subscriptions silent after warm-up {attempt}; another)",
            subscriptions - status.any
        );
    }
    anyhow::bail!("not every subscription received an update of its wallet after 5 warm-ups")
}

/// (b) on `crowd` (already following the wallets).
async fn steady(crowd: &mut Crowd, updates: &mut Updates, options: &Options) -> anyhow::Result<Steady> {
    let subscriptions = crowd.subscriptions;
    let wallets = options.wallets.max(1);
    let started = Instant::now();
    let sent = updates.steady(wallets, options.rate, options.seconds).await?;
    let seconds = started.elapsed().as_secs_f64();
    let last = sent.iter().map(|u| u.0).max().unwrap_or_default();
    // Every subscription whose wallet was updated last has that position once all is delivered.
    let followers = |wallet: usize| (wallet..subscriptions).step_by(wallets).count();
    let expected: usize = sent.iter().map(|&(_, _, _, wallet)| followers(wallet)).sum();
    let _ = crowd.wait(last, Duration::from_secs(30), |s| s.pending >= expected).await?;
    let arrivals = crowd.drain().await?;
    let by_position: HashMap<u64, u64> = sent.iter().map(|&(position, at, _, _)| (position, at)).collect();
    let mut each: Vec<Vec<u64>> = vec![Vec::new(); subscriptions];
    let mut all = Vec::with_capacity(arrivals.len());
    for (s, position, at) in arrivals {
        let Some(&sent_at) = by_position.get(&position) else { continue };
        let latency = at.saturating_sub(sent_at);
        all.push(latency);
        if let Some(samples) = each.get_mut(s as usize) {
            samples.push(latency);
        }
    }
    all.sort_unstable();
    let mut each_p99: Vec<u64> = each
        .iter_mut()
        .filter(|samples| !samples.is_empty())
        .map(|samples| {
            samples.sort_unstable();
            quantile(samples, 0.99)
        })
        .collect();
    each_p99.sort_unstable();
    let mut answered: Vec<u64> = sent.iter().map(|&(_, at, done, _)| done.saturating_sub(at)).collect();
    answered.sort_unstable();
    Ok(Steady {
        subscriptions,
        updates: sent.len(),
        seconds,
        answered_p50: duration_ns(quantile(&answered, 0.5)),
        answered_p99: duration_ns(quantile(&answered, 0.99)),
        p50: duration_ns(quantile(&all, 0.5)),
        p99: duration_ns(quantile(&all, 0.99)),
        max: duration_ns(all.last().copied().unwrap_or_default()),
        each_p99_median: duration_ns(quantile(&each_p99, 0.5)),
        each_p99_p99: duration_ns(quantile(&each_p99, 0.99)),
        each_p99_worst: duration_ns(each_p99.last().copied().unwrap_or_default()),
        deliveries: all.len(),
        expected,
    })
}

/// The server's VmRSS once it has stopped growing: the same (within 64 KiB)
/// over a second, and its CPU time grown by under 50 ms in that second (a
/// client's request still being served). At most a minute.
async fn settled(server: &ServerProcess) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut resident, mut cpu) = (server.resident_bytes()?, server.cpu_time()?);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, cpu_now) = (server.resident_bytes()?, server.cpu_time()?);
        let still = now.abs_diff(resident) < 64 << 10 && cpu_now.saturating_sub(cpu) < Duration::from_millis(50);
        if still || Instant::now() >= deadline {
            return Ok(now);
        }
        (resident, cpu) = (now, cpu_now);
    }
}

/// The `q` quantile of sorted `samples` (0 when empty).
fn quantile(samples: &[u64], q: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn measure(url: &str, options: &Options) -> anyhow::Result<()> {
    let files = raise_open_files_limit()?;
    let per_process = options.connections.div_ceil(options.client_processes.max(1)) as u64;
    anyhow::ensure!(
        (options.connections as u64) < files && per_process < files,
        "{} connections do not fit under the open-file limit of {files} per process (server) or {} per client \
         process: fewer --connections or more --client-processes",
        options.connections,
        files
    );
    let load_at_start = load_average();
    let wallets = options.wallets.max(1);
    let mut members: Vec<String> = vec![FAN.to_string()];
    members.extend((0..wallets).map(|w| format!("w{w}")));
    let config =
        EventStoreConfig { max_connections: options.load_connections as u32 + 4, ..EventStoreConfig::default() };
    register(&EventStore::open(url, config.clone()).await?, &members).await?;

    let secret = uuid::Uuid::new_v4().simple().to_string();
    let staff = token(&secret, Role::Staff, None, Some("cafe"))?;
    let auditor = token(&secret, Role::Auditor, None, None)?;
    let server = ServerProcess::spawn(url, &secret, &config).await?;
    let measured = async {
        caught_up(url).await?;
        let mut clients = Vec::with_capacity(options.load_connections.max(1));
        for _ in 0..options.load_connections.max(1) {
            clients.push(Arc::new(Mutex::new(RawHttp::connect(&server.address).await?)));
        }
        let mut updates = Updates { clients, staff: staff.clone(), sent: 0 };
        // The first requests initialise what a server initialises lazily: not per subscriber.
        updates.one(FAN).await?;
        updates.steady(wallets, 2_000, 1).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let server_fresh = server.resident_bytes()?;

        // The crowd: connections first (idle, acknowledged), then subscriptions.
        let started = Instant::now();
        let mut crowd = Crowd::connect(
            &server.address,
            &auditor,
            (options.connections, options.subscriptions),
            options.client_processes,
        )
        .await?;
        let connect = started.elapsed();
        eprintln!("({} connections in {connect:.1?})", options.connections);
        let server_connected = settled(&server).await?;
        let clients_connected = crowd.resident_bytes()?;
        crowd.subscribe(FAN).await?;
        // Nothing is delivered meanwhile (no update is sent): the memory of
        // idle subscriptions once the server has set up every one of them.
        let server_subscribed = settled(&server).await?;
        eprintln!("(subscribed; (a) starts)");
        let all = to_all(&mut crowd, &mut updates, &server, options.rounds).await?;
        let server_delivered = server.resident_bytes()?;
        let server_files = server.open_files()?;
        // The clients' memory before connecting: a fresh client process's.
        let clients_before = {
            // The same arrays of per-subscription state as the crowd's processes, no connection.
            let total = (options.connections, options.subscriptions);
            let probe = ClientProcess::spawn(&server.address, &auditor, (0, 0), total).await?;
            let mut probe = Crowd { processes: vec![probe], subscriptions: 0 };
            probe.processes[0].connected().await?;
            let bytes = probe.resident_bytes()?;
            probe.close().await?;
            bytes * crowd.processes.len() as u64
        };
        eprintln!("((a) done; following {wallets} wallets)");
        warm_up_wallets(&mut crowd, &mut updates, wallets).await?;
        let steady_crowd = steady(&mut crowd, &mut updates, options).await?;
        crowd.close().await?;
        let memory = Memory {
            server_fresh,
            server_connected,
            server_subscribed,
            server_delivered,
            clients_before,
            clients_connected,
            server_files,
        };

        // The baseline: a small crowd, one subscription per connection, on the same server.
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.open_files()? > 200 + options.load_connections {
            anyhow::ensure!(Instant::now() < deadline, "the server still holds the crowd's sockets after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let small = options.baseline_subscribers.max(1);
        let mut baseline = Crowd::connect(&server.address, &auditor, (small, small), 1).await?;
        baseline.subscribe(FAN).await?;
        let all_baseline = to_all(&mut baseline, &mut updates, &server, options.rounds).await?;
        warm_up_wallets(&mut baseline, &mut updates, wallets).await?;
        let steady_baseline = steady(&mut baseline, &mut updates, options).await?;
        baseline.close().await?;
        anyhow::Ok((connect, all, all_baseline, steady_crowd, steady_baseline, memory))
    }
    .await;
    let stopped = server.stop().await;
    let (connect, all, all_baseline, steady_crowd, steady_baseline, memory) = measured?;
    stopped?;
    print(options, connect, [&all, &all_baseline], [&steady_crowd, &steady_baseline], &memory);
    println!("Machine load (/proc/loadavg 1, 5, 15 min): {load_at_start} at the start, {} at the end.", load_average());
    println!();
    Ok(())
}

fn print(options: &Options, connect: Duration, all: [&ToAll; 2], steady: [&Steady; 2], memory: &Memory) {
    let (c, s) = (options.connections, options.subscriptions);
    println!(
        "Fan-out at one server process's limit: {c} WebSocket connections (graphql-transport-ws, token in \
         connection_init) from {} client processes, opened in {:.1} s; {s} `walletUpdates` subscriptions \
         multiplexed over them (subscription s on connection s mod {c}). Baseline: {} subscriptions, one per \
         connection, on the same server after the crowd has gone.",
        options.client_processes,
        connect.as_secs_f64(),
        options.baseline_subscribers
    );
    println!();
    println!("(a) One update to every subscription (all follow one wallet); times from sending the mutation:");
    println!();
    println!("| round | subscriptions | mutation answered | p50 delivery | p99 delivery | all delivered |");
    println!("|---|---|---|---|---|---|");
    for figure in all {
        for (k, round) in figure.rounds.iter().enumerate() {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                k + 1,
                figure.subscriptions,
                ms(round.answered),
                ms(round.p50),
                ms(round.p99),
                ms(round.all)
            );
        }
    }
    let median = |figure: &ToAll, pick: fn(&Round) -> Duration| {
        let mut values: Vec<Duration> = figure.rounds.iter().map(pick).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    let worst = all[0].rounds.iter().map(|r| r.p99).max().unwrap_or_default();
    let (p99, base_p99) = (median(all[0], |r| r.p99), median(all[1], |r| r.p99));
    let (p50, base_p50) = (median(all[0], |r| r.p50), median(all[1], |r| r.p50));
    println!();
    println!(
        "Median round: p50 {} / p99 {} against the baseline's {} / {}: **{:.1}× / {:.1}×** for {:.0}× the \
         subscriptions. p99 target < 250 ms: **{}** (worst round {}).",
        ms(p50),
        ms(p99),
        ms(base_p50),
        ms(base_p99),
        p50.as_secs_f64() / base_p50.as_secs_f64().max(1e-9),
        p99.as_secs_f64() / base_p99.as_secs_f64().max(1e-9),
        all[0].subscriptions as f64 / all[1].subscriptions.max(1) as f64,
        if worst < Duration::from_millis(250) { "met" } else { "missed" },
        ms(worst)
    );
    println!();
    for figure in all {
        let deliveries = (figure.subscriptions * figure.rounds.len()).max(1) as f64;
        println!(
            "CPU per delivery over the timed rounds, {} subscriptions: server {:.1} µs, client processes {:.1} µs \
             (the round's mutation and the polling of the clients included).",
            figure.subscriptions,
            figure.cpu.0.as_secs_f64() * 1e6 / deliveries,
            figure.cpu.1.as_secs_f64() * 1e6 / deliveries
        );
    }
    println!();
    println!(
        "(b) {} updates a second over {} wallets for {} s (subscription s follows wallet s mod {}); times from \
         sending each mutation:",
        options.rate, options.wallets, options.seconds, options.wallets
    );
    println!();
    println!(
        "| subscriptions | updates/s sent | mutation answered p50 / p99 | delivery p50 / p99 / max | each \
         subscription's p99: median / p99 / worst | delivered |"
    );
    println!("|---|---|---|---|---|---|");
    for figure in steady {
        println!(
            "| {} | {:.0} | {} / {} | {} / {} / {} | {} / {} / {} | {} of {} |",
            figure.subscriptions,
            figure.updates as f64 / figure.seconds,
            ms(figure.answered_p50),
            ms(figure.answered_p99),
            ms(figure.p50),
            ms(figure.p99),
            ms(figure.max),
            ms(figure.each_p99_median),
            ms(figure.each_p99_p99),
            ms(figure.each_p99_worst),
            figure.deliveries,
            figure.expected
        );
    }
    let [crowd, base] = steady;
    println!();
    println!(
        "Each subscription's p99, the worst: {} against the baseline's {} (**{:.1}×**); target < 100 ms: **{}**.",
        ms(crowd.each_p99_worst),
        ms(base.each_p99_worst),
        crowd.each_p99_worst.as_secs_f64() / base.each_p99_worst.as_secs_f64().max(1e-9),
        if crowd.each_p99_worst < Duration::from_millis(100) { "met" } else { "missed" }
    );
    if crowd.deliveries != crowd.expected || base.deliveries != base.expected {
        println!();
        println!("**Not every update was delivered within 30 s of the last (see the delivered column).**");
    }
    println!();
    let kib = |bytes: u64, n: usize| bytes as f64 / n.max(1) as f64 / 1024.0;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let per_connection = kib(memory.server_connected.saturating_sub(memory.server_fresh), c);
    let per_subscription = kib(memory.server_subscribed.saturating_sub(memory.server_connected), s);
    let per_subscriber = kib(memory.server_subscribed.saturating_sub(memory.server_fresh), s);
    let client_per_connection = kib(memory.clients_connected.saturating_sub(memory.clients_before), c);
    println!(
        "(c) Server memory (VmRSS): {:.1} MiB fresh, {:.1} MiB with {c} idle connections, {:.1} MiB with {s} \
         idle subscriptions over them ({} files open in the server):",
        mib(memory.server_fresh),
        mib(memory.server_connected),
        mib(memory.server_subscribed),
        memory.server_files
    );
    println!();
    println!("| per | server | baseline: a client process's, per connection | server / baseline |");
    println!("|---|---|---|---|");
    println!(
        "| idle connection | {per_connection:.2} KiB | {client_per_connection:.2} KiB | {:.2} |",
        per_connection / client_per_connection.max(1e-9)
    );
    println!("| idle subscription (beyond its connection's) | {per_subscription:.2} KiB | | |");
    println!(
        "| subscriber, one subscription per connection (connection + subscription) | {:.2} KiB | | |",
        per_connection + per_subscription
    );
    println!(
        "| subscription, connections shared ({:.2} per connection) | {per_subscriber:.2} KiB | | |",
        s as f64 / c as f64
    );
    println!();
    println!(
        "After (a)'s warm-up and {} timed updates to every subscription: {:.1} MiB, {:.2} KiB per subscription over the fresh \
         server (what the allocator kept of the deliveries' peaks, besides the subscriptions).",
        options.rounds,
        mib(memory.server_delivered),
        kib(memory.server_delivered.saturating_sub(memory.server_fresh), s)
    );
    println!();
    println!(
        "Target < 8 KiB per idle subscriber: **{}** for a subscriber on a connection of its own, **{}** with \
         the connections shared.",
        if per_connection + per_subscription < 8.0 { "met" } else { "missed" },
        if per_subscriber < 8.0 { "met" } else { "missed" }
    );
    println!();
}
