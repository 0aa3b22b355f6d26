//! `bench api`: the GraphQL API end to end, over real sockets, next to the
//! event store it runs on: `earnPoints` mutations per second over HTTP against
//! `EventStore::execute` of the same command in process, a trivial query's
//! rate as the server's ceiling, and the fan-out of one update to thousands of
//! `walletUpdates` subscribers, with the server's memory per subscriber; then
//! what per-caller rate limiting and JWKS verification of bearer tokens cost
//! (see [`crate::api_checks`]), and `earnPoints` against the server a user
//! would build instead (see [`crate::api_peer`]). `--parts` picks among the four.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::auth::{Claims, Role, mint};
use domain::Wallet;
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use projections::{Names, checkpoint};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::api_server::ServerProcess;
use crate::cpu::Meter;
use crate::graphql_http::GraphqlHttp;
use crate::measure::{
    Contender, GroupCommits, Interleaved, Op, histogram_totals, interleave, mean_between, ms, percentiles,
    throughput_and_latency, warm_up,
};
use crate::pointstream::{earn, register};
use crate::raw_http::RawHttp;
use crate::run::Scratch;
use crate::subscribers::Subscribers;

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients (and event store callers) for the throughput figures.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Members the earns are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub members: usize,
    /// WebSocket subscribers to one member's wallet updates.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Subscribers connecting at a time.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Timed fan-out mutations.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// As `pointstream serve --append-scripts`, for every event store of the run.
    #[arg(long, default_value_t = eventstore::EventStoreConfig::default().append_scripts, action = clap::ArgAction::Set)]
    pub append_scripts: bool,
    /// What to measure: `earn` ((c), (d), (d') and the `{ __typename }` ceiling),
    /// `fan-out` (subscriptions), `checks` (rate limiting and JWKS verification on, against both off),
    /// `peer` (`earnPoints` against the async-graphql + sqlx server a user would build).
    #[arg(long, value_delimiter = ',', default_value = "earn,fan-out,checks,peer")]
    pub parts: Vec<Part>,
    #[command(flatten)]
    pub check_options: crate::api_checks::Options,
    #[command(flatten)]
    pub peer_options: crate::api_peer::Options,
}

/// A part of the `api` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// `earnPoints` over HTTP against `EventStore::execute`, and the `{ __typename }` ceiling.
    Earn,
    /// One update to `--subscribers` WebSocket subscribers.
    FanOut,
    /// Rate limiting and JWKS verification, on against off.
    Checks,
    /// `earnPoints` against the peer a user would build (async-graphql, sqlx, one transaction per mutation).
    Peer,
}

/// The member every subscriber follows (no other command touches its wallet).
const FOLLOWED: &str = "fan";
/// Open files a process needs besides its sockets to subscribers (database
/// pools, HTTP clients, the listener, stdio).
const SPARE_FILES: u64 = 512;

const EARN: &str = "mutation($m: String!, $r: String!) { \
    earnPoints(member: $m, store: \"cafe\", purchaseRef: $r, amount: 1000) { position balance { balance } } }";

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("cannot raise RLIMIT_NOFILE")
}

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    let parts = |part: Part| options.parts.contains(&part);
    if parts(Part::Earn) || parts(Part::FanOut) {
        Scratch::around_all(server, ["api_c", "api_d", "api_dn"], |[direct, inline, after_commit]| async move {
            Box::pin(measure(&Databases { direct, inline, after_commit }, options)).await
        })
        .await?;
    }
    if parts(Part::Checks) {
        crate::api_checks::run(server, options).await?;
    }
    if parts(Part::Peer) {
        crate::api_peer::run(server, options).await?;
    }
    Ok(())
}

pub(crate) fn token(secret: &str, role: Role, member: Option<&str>, store: Option<&str>) -> anyhow::Result<String> {
    let claims = Claims {
        sub: "bench".into(),
        role,
        member: member.map(str::to_string),
        store: store.map(str::to_string),
        // An hour: longer than any run, within the server's maximum token lifetime.
        exp: api::auth::now_seconds() + 3_600,
    };
    Ok(mint(secret.as_bytes(), &claims)?)
}

fn earn_request(member: &str, purchase_ref: &str) -> Value {
    json!({ "query": EARN, "variables": { "m": member, "r": purchase_ref } })
}

/// The position `earnPoints` answered with.
fn earned_position(data: &Value) -> anyhow::Result<u64> {
    data["earnPoints"]["position"].as_u64().with_context(|| format!("earnPoints answered without a position: {data}"))
}

/// The run's databases, one per figure: no event store follows the log
/// another one appends to.
struct Databases {
    /// (c): the event store in this process.
    direct: String,
    /// (d): the server that writes its read models inline.
    inline: String,
    /// (d'): the server that writes them after commit.
    after_commit: String,
}

/// Each throughput figure is measured in turns of this long.
const SLICE: Duration = Duration::from_secs(1);

async fn measure(urls: &Databases, options: &Options) -> anyhow::Result<()> {
    let (earn, fan) = (options.parts.contains(&Part::Earn), options.parts.contains(&Part::FanOut));
    let files = raise_open_files_limit()?;
    // Each process (clients here, server there) holds one socket per subscriber.
    let subscribers = options.subscribers.min(files.saturating_sub(SPARE_FILES) as usize);
    anyhow::ensure!(
        subscribers > 0 || !fan,
        "the open-file limit is {files} (`ulimit -Hn`): no room for a subscriber besides {SPARE_FILES} other files"
    );

    let concurrency = options.concurrency.max(1);
    let per_worker = (options.members / concurrency).max(1);
    // Worker w cycles through members w, w + concurrency, ...: no two workers share a wallet.
    let earners = Earners { concurrency, per_worker };
    let mut members = earners.members();
    members.push(FOLLOWED.to_string());

    // One pool size for every event store (the benchmark's and the servers'),
    // as the eventstore mode sizes it, so that the ratio is the API's cost.
    let config = earners.store_config(options.append_scripts);
    let store = EventStore::open(&urls.direct, config.clone()).await?;
    register(&store, &members).await?;
    for url in [&urls.inline, &urls.after_commit] {
        register(&EventStore::open(url, config.clone()).await?, &members).await?;
    }

    let secret = uuid::Uuid::new_v4().simple().to_string();
    let staff = token(&secret, Role::Staff, None, Some("cafe"))?;
    let follower = token(&secret, Role::Member, Some(FOLLOWED), None)?;
    let inline = ServerProcess::spawn(&urls.inline, &secret, &config).await?;
    let extra = ["--inline-projections".to_string(), "none".to_string()];
    let after_commit = ServerProcess::spawn_with(&urls.after_commit, &secret, &config, &extra).await?;
    let measured = async {
        for url in [&urls.inline, &urls.after_commit] {
            caught_up(url).await?;
        }
        // Fan-out first, while the server's memory is that of a fresh process.
        let fan_out =
            if fan { Some(fan_out(&inline, &staff, &follower, (subscribers, files), options).await?) } else { None };
        let servers = Servers { inline: &inline, after_commit: &after_commit };
        let earned =
            if earn { Some(EarnFigures::measure(&store, servers, &staff, earners, options).await?) } else { None };
        anyhow::Ok((fan_out, earned))
    }
    .await;
    let stopped = [inline.stop().await, after_commit.stop().await];
    let (fan_out, earned) = measured?;
    stopped.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    if let Some(earned) = earned {
        earned.print(earners, &config);
    }
    if let Some(fan_out) = fan_out {
        fan_out.print(options);
    }
    Ok(())
}

/// The two servers of the `earn` figures.
#[derive(Clone, Copy)]
struct Servers<'a> {
    /// (d): read models written inline.
    inline: &'a ServerProcess,
    /// (d'): read models written after commit.
    after_commit: &'a ServerProcess,
}

/// What the `earn` part measured.
struct EarnFigures {
    direct: Interleaved,
    over_http: Interleaved,
    by_hyper: Interleaved,
    after_commit: Interleaved,
    /// Inside (d)'s server and (d')'s.
    inside: [Inside; 2],
    /// `{ __typename }`: rate, p50, p99.
    ceiling: (f64, Duration, Duration),
}

impl EarnFigures {
    /// (c), (d), (d) over hyper and (d') in turns, then the `{ __typename }` ceiling on (d)'s server.
    async fn measure(
        store: &EventStore,
        servers: Servers<'_>,
        staff: &str,
        earners: Earners,
        options: &Options,
    ) -> anyhow::Result<Self> {
        let Servers { inline, after_commit } = servers;
        let concurrency = earners.concurrency;
        // (c), (d), (d) over hyper and (d') in turns, each with its own 32
        // callers; the clients over HTTP each on a keep-alive connection of their own.
        let rounds = earners.warm_up_rounds();
        let to_inline = connect_all(concurrency, || RawHttp::connect(&inline.address)).await?;
        let to_inline_by_hyper = connect_all(concurrency, || GraphqlHttp::connect(&inline.address)).await?;
        let to_after_commit = connect_all(concurrency, || RawHttp::connect(&after_commit.address)).await?;
        let contender =
            |op: Op, server: Option<u32>| Contender { op, concurrency, meter: Meter::new(server), from: rounds };
        let contenders = [
            contender(execute_op(store, earners, "d"), None),
            contender(earn_op(&to_inline, staff, earners, "h"), Some(inline.pid()?)),
            contender(earn_by_hyper_op(&to_inline_by_hyper, staff, earners, "k"), Some(inline.pid()?)),
            contender(earn_op(&to_after_commit, staff, earners, "n"), Some(after_commit.pid()?)),
        ];
        for contender in &contenders {
            warm_up(concurrency, rounds, &contender.op).await?;
        }
        let mut metrics = Vec::new();
        for server in [inline, after_commit] {
            metrics.push(GraphqlHttp::connect(&server.address).await?);
        }
        let mut before = Vec::new();
        for server in &mut metrics {
            before.push(server.get("/metrics").await?);
        }
        let figures = interleave(&contenders, options.seconds.max(1) as usize, SLICE).await?;
        let mut inside = Vec::new();
        for (server, before) in metrics.iter_mut().zip(before) {
            inside.push(Inside::between(&before, &server.get("/metrics").await?));
        }
        let inside = <[Inside; 2]>::try_from(inside).map_err(|_| anyhow::anyhow!("two servers' metrics expected"))?;

        let workers = to_inline.clone();
        let ceiling = throughput_and_latency(concurrency, Duration::from_secs(options.seconds), move |w, _| {
            let clients = workers.clone();
            async move {
                let mut client = clients[w].lock().await;
                check_typename(client.post(None, TYPENAME).await?)
            }
        })
        .await?;
        let [direct, over_http, by_hyper, after_commit] = <[Interleaved; 4]>::try_from(figures)
            .map_err(|figures| anyhow::anyhow!("{} figures measured, not 4", figures.len()))?;
        Ok(EarnFigures { direct, over_http, by_hyper, after_commit, inside, ceiling })
    }

    fn print(&self, earners: Earners, config: &EventStoreConfig) {
        let Self { direct, over_http, by_hyper, after_commit, inside, ceiling } = self;
        let Earners { concurrency, per_worker } = earners;
        println!("## API benchmark (MySQL, one run)");
        println!();
        println!(
            "Servers: `bench api-server`, processes of their own wired as `pointstream serve` (every projector and \
             the share distribution running), on 127.0.0.1, each on a database of its own. {concurrency} callers per \
             figure, over HTTP each on its own keep-alive HTTP/1.1 connection, earning for {} members ({per_worker} \
             each, no wallet shared), after one unmeasured earn per member (a steady state: aggregates cached, \
             balances kept); every event store with a pool of {} connections. The figures are measured in turns of {} \
             s, {} turns each, in the order c d d(hyper) d' then d' d(hyper) d c and so on: on a machine whose \
             speed drifts, all of them run in the same stretches of time. The clients over HTTP are the load \
             generator's own (`raw_http.rs`: one write per request, the answer parsed in place), except for \
             d(hyper), the same as (d) over hyper's client. The servers' tokens are HS256 and they limit no \
             caller's rate (the `checks` part measures both).",
            concurrency * per_worker,
            config.max_connections,
            SLICE.as_secs(),
            direct.slices.len()
        );
        println!();
        println!("(c) pointstream EventStore::execute of the earn command, in process (the eventstore mode's (c))");
        println!(
            "(d) `earnPoints` over HTTP: token check, the same command (the read models written in its append \
             transaction: `--inline-projections`, the default), then read the balance"
        );
        println!(
            "(d') the same on a server with `--inline-projections none`: the command, then wait for the wallets \
             projector's commit, then read the balance"
        );
        println!();
        println!("| at concurrency {concurrency} | per second | latency p50 / p99 |");
        println!("|---|---|---|");
        let row = |name: &str, figure: &Interleaved| {
            println!("| {name} | {:.0} | {} / {} |", figure.rate, ms(figure.p50), ms(figure.p99));
        };
        row("(c) EventStore::execute (commands)", direct);
        row("(d) `earnPoints` over HTTP (mutations)", over_http);
        row("(d) the same over hyper's client", by_hyper);
        row("(d') the same, every projection after commit", after_commit);
        println!(
            "| `{{ __typename }}` over HTTP (the server's ceiling) | {:.0} | {} / {} |",
            ceiling.0,
            ms(ceiling.1),
            ms(ceiling.2)
        );
        println!();
        let turns: Vec<String> = over_http
            .slices
            .iter()
            .zip(&direct.slices)
            .map(|(d, c)| format!("{:.2}", d / c.max(f64::MIN_POSITIVE)))
            .collect();
        println!(
            "d/c = {:.2} (target ≥ 0.5); over hyper's client {:.2}; d'/c = {:.2}; d/ceiling = {:.2}. d/c turn by \
             turn (each (d) turn against the (c) turn of the same round): {}",
            over_http.rate / direct.rate,
            by_hyper.rate / direct.rate,
            after_commit.rate / direct.rate,
            over_http.rate / ceiling.0,
            turns.join(", ")
        );
        for (name, inside) in [("(d) (either client)", &inside[0]), ("(d')", &inside[1])] {
            if let Some((command, wait)) = inside.command.zip(inside.wait) {
                println!();
                println!(
                    "Inside the server, per {name} mutation on average: the command (`pointstream_command_seconds`) \
                     {}, the wait for the wallets read model (`pointstream_read_wait_seconds`) {}; the rest of the \
                     latency is HTTP, GraphQL and the balance read. Group commits meanwhile: {}.",
                    ms(command),
                    ms(wait),
                    inside.commits.describe()
                );
            }
        }
        println!();
        println!(
            "CPU time per operation ({} cores; `/proc`): this process (the callers: for (c) the event store, for (d) \
             and (d') the HTTP clients), the figure's server process, MariaDB, and the machine's idle time:",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!();
        print_cpu(&[("(c)", direct), ("(d)", over_http), ("(d) over hyper", by_hyper), ("(d')", after_commit)]);
        println!();
    }
}

/// A table of each figure's CPU time per operation: this process, the
/// figure's server, MariaDB, the idle machine, and all three busy ones.
pub(crate) fn print_cpu(figures: &[(&str, &Interleaved)]) {
    println!("| | this process | server | MariaDB | idle | all busy |");
    println!("|---|---|---|---|---|---|");
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    for (name, figure) in figures {
        let cpu = figure.cpu;
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            us(cpu.clients),
            us(cpu.server),
            us(cpu.database),
            us(cpu.idle),
            us(cpu.clients + cpu.server + cpu.database)
        );
    }
}

/// Who earns: client `w`'s `i`th earn is for `member(w, i)`, cycling through
/// `per_worker` members of its own (no wallet shared between clients).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Earners {
    pub(crate) concurrency: usize,
    pub(crate) per_worker: usize,
}

impl Earners {
    pub(crate) fn member(self, w: usize, i: u64) -> String {
        format!("m{:05}", w + self.concurrency * (i as usize % self.per_worker))
    }

    /// Every client's members.
    pub(crate) fn members(self) -> Vec<String> {
        (0..self.concurrency * self.per_worker).map(|k| format!("m{k:05}")).collect()
    }

    /// Earns before a measurement: one for each member, so that it measures
    /// a steady state (the aggregates cached, the server keeping the balances
    /// it writes) rather than a process's first touch of each wallet.
    pub(crate) fn warm_up_rounds(self) -> u64 {
        self.per_worker as u64
    }

    /// Every event store's configuration: a pool of the callers plus 4, as
    /// the eventstore mode sizes it.
    pub(crate) fn store_config(self, append_scripts: bool) -> EventStoreConfig {
        EventStoreConfig { max_connections: self.concurrency as u32 + 4, append_scripts, ..EventStoreConfig::default() }
    }
}

/// What a server's metrics say of the mutations between two readings: the
/// mean time of the command and of the wait for the wallets read model, and
/// its group commits.
struct Inside {
    command: Option<Duration>,
    wait: Option<Duration>,
    commits: GroupCommits,
}

impl Inside {
    fn between(before: &str, after: &str) -> Self {
        let mean = |name: &str, label: &str| {
            mean_between(histogram_totals(before, name, label), histogram_totals(after, name, label))
        };
        Inside {
            command: mean("pointstream_command_seconds", "command=\"earn\""),
            wait: mean("pointstream_read_wait_seconds", "projection=\"wallets\""),
            commits: GroupCommits::between(before, after),
        }
    }
}

/// `earnPoints` over HTTP: client `w`'s `i`th for `earners.member(w, i)`
/// under purchase ref `{prefix}{w}-{i}`; an answer without its position
/// and balance, or with errors, fails it.
fn earn_op(clients: &Arc<Vec<Mutex<RawHttp>>>, staff: &str, earners: Earners, prefix: &'static str) -> Op {
    let (clients, staff) = (clients.clone(), Arc::<str>::from(staff));
    Arc::new(move |w, i| {
        let (clients, staff) = (clients.clone(), staff.clone());
        let (member, purchase) = (earners.member(w, i), format!("{prefix}{w}-{i}"));
        Box::pin(async move {
            let body = earn_body(&member, &purchase)?;
            let mut client = clients[w].lock().await;
            check_earned(client.post(Some(&staff), &body).await?)
        })
    })
}

/// The body of an `earnPoints` request for `member` under `purchase_ref`.
pub(crate) fn earn_body(member: &str, purchase_ref: &str) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&Request { query: EARN, variables: EarnVariables { m: member, r: purchase_ref } })?)
}

/// `Ok` if `answer` (a 200 answer's body) to an [`earn_body`] request has
/// the position and balance and no errors.
pub(crate) fn check_earned(answer: &[u8]) -> anyhow::Result<()> {
    let parsed: Answer<Earned> = serde_json::from_slice(answer)
        .with_context(|| format!("earnPoints answered {}", String::from_utf8_lossy(answer)))?;
    anyhow::ensure!(parsed.succeeded().is_some(), "earnPoints failed: {}", String::from_utf8_lossy(answer));
    Ok(())
}

/// The body of a `{ __typename }` request.
pub(crate) const TYPENAME: &[u8] = br#"{"query":"{ __typename }"}"#;

/// `Ok` if `answer` (a 200 answer's body) to [`TYPENAME`] names a type and has no errors.
pub(crate) fn check_typename(answer: &[u8]) -> anyhow::Result<()> {
    let parsed: Answer<Typename> = serde_json::from_slice(answer)
        .with_context(|| format!("{{ __typename }} answered {}", String::from_utf8_lossy(answer)))?;
    anyhow::ensure!(
        parsed.succeeded().is_some(),
        "unexpected answer to {{ __typename }}: {}",
        String::from_utf8_lossy(answer)
    );
    Ok(())
}

/// [`earn_op`] over hyper's client, the answer read into a `serde_json::Value`.
fn earn_by_hyper_op(clients: &Arc<Vec<Mutex<GraphqlHttp>>>, staff: &str, earners: Earners, prefix: &'static str) -> Op {
    let (clients, staff) = (clients.clone(), Arc::<str>::from(staff));
    Arc::new(move |w, i| {
        let (clients, staff) = (clients.clone(), staff.clone());
        let request = earn_request(&earners.member(w, i), &format!("{prefix}{w}-{i}"));
        Box::pin(async move {
            let data = clients[w].lock().await.post(Some(&staff), &request).await?;
            earned_position(&data)?;
            Ok(())
        })
    })
}

/// A GraphQL request's body.
#[derive(serde::Serialize)]
struct Request<V> {
    query: &'static str,
    variables: V,
}

#[derive(serde::Serialize)]
struct EarnVariables<'a> {
    m: &'a str,
    r: &'a str,
}

/// A GraphQL answer: its data, unless it has errors.
#[derive(serde::Deserialize)]
struct Answer<T> {
    data: Option<T>,
    errors: Option<serde::de::IgnoredAny>,
}

impl<T> Answer<T> {
    fn succeeded(&self) -> Option<&T> {
        self.data.as_ref().filter(|_| self.errors.is_none())
    }
}

/// What [`EARN`] asks for.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Earned {
    #[allow(dead_code, reason = "read to check that the answer has it")]
    earn_points: EarnedPoints,
}

#[derive(serde::Deserialize)]
#[allow(dead_code, reason = "read to check that the answer has them")]
struct EarnedPoints {
    position: u64,
    balance: EarnedBalance,
}

#[derive(serde::Deserialize)]
#[allow(dead_code, reason = "read to check that the answer has it")]
struct EarnedBalance {
    balance: i64,
}

/// The answer to `{ __typename }`.
#[derive(serde::Deserialize)]
struct Typename {
    #[serde(rename = "__typename")]
    #[allow(dead_code, reason = "read to check that the answer has it")]
    typename: String,
}

/// `EventStore::execute` of earns on `store`: caller `w`'s `i`th for
/// `earners.member(w, i)` under purchase ref `{prefix}{w}-{i}`.
fn execute_op(store: &EventStore, earners: Earners, prefix: &'static str) -> Op {
    let store = store.clone();
    Arc::new(move |w, i| {
        let store = store.clone();
        let (id, purchase) = (earners.member(w, i), format!("{prefix}{w}-{i}"));
        Box::pin(async move {
            store.execute::<Wallet>(&id, earn(&id, &purchase)?, CommandContext::default()).await?;
            Ok(())
        })
    })
}

/// Waits until every projection has applied the whole log of the database at `url`.
pub(crate) async fn caught_up(url: &str) -> anyhow::Result<()> {
    let db = eventstore::connect(url, 2).await?;
    let head = eventstore::read_head(&db).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for name in projections::PROJECTIONS {
        while checkpoint::read(&db, name, &Names::LIVE).await? < head {
            anyhow::ensure!(Instant::now() < deadline, "the {name} projection did not catch up with {head} in 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    db.close().await?;
    Ok(())
}

/// `count` clients, each on a connection of its own that `connect` opens.
pub(crate) async fn connect_all<C, Fut>(count: usize, connect: impl Fn() -> Fut) -> anyhow::Result<Arc<Vec<Mutex<C>>>>
where
    Fut: std::future::Future<Output = anyhow::Result<C>>,
{
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(Mutex::new(connect().await?));
    }
    Ok(Arc::new(clients))
}

/// What the fan-out measured.
struct FanOut {
    /// Subscribers measured (fewer than asked when the open-file limit is too low).
    subscribers: usize,
    /// The open-file limit in force.
    files: u64,
    /// Files the server had open with every subscriber connected.
    server_files: usize,
    connect: Duration,
    warm_ups: usize,
    resident_before: u64,
    resident_after: u64,
    rounds: Vec<Round>,
}

/// One timed mutation: times from sending it.
struct Round {
    answered: Duration,
    p50: Duration,
    p99: Duration,
    all: Duration,
}

/// `subscribers` clients follow one member's wallet; then each round earns
/// for that member once and times its delivery to every subscriber.
async fn fan_out(
    server: &ServerProcess,
    staff: &str,
    follower: &str,
    (subscribers, files): (usize, u64),
    options: &Options,
) -> anyhow::Result<FanOut> {
    let mut http = GraphqlHttp::connect(&server.address).await?;
    // The first request initialises what a server initialises lazily: not per subscriber.
    http.post(Some(staff), &earn_request(FOLLOWED, "warm-0")).await?;
    let resident_before = server.resident_bytes()?;
    let files_before = server.open_files()?;

    let started = Instant::now();
    let mut clients =
        Subscribers::connect(&server.address, follower, FOLLOWED, subscribers, options.connect_concurrency).await?;
    let connect = started.elapsed();
    eprintln!("({subscribers} subscribers connected in {connect:.1?})");

    // A subscribe has no acknowledgement: every subscription is live once every
    // subscriber has received the same update; until then, earn again.
    let mut warm_ups = 0;
    loop {
        warm_ups += 1;
        let data = http.post(Some(staff), &earn_request(FOLLOWED, &format!("warm-{warm_ups}"))).await?;
        let arrivals = clients.arrivals(earned_position(&data)?, Duration::from_secs(30)).await?;
        let missing = arrivals.iter().filter(|at| at.is_none()).count();
        if missing == 0 {
            break;
        }
        anyhow::ensure!(warm_ups < 5, "{missing} of {subscribers} subscribers received none of {warm_ups} updates");
        eprintln!("({missing} of {subscribers} subscribers did not receive warm-up update {warm_ups}; another)");
    }
    let resident_after = server.resident_bytes()?;
    let server_files = server.open_files()?;

    let mut rounds = Vec::new();
    for round in 1..=options.rounds.max(1) {
        let request = earn_request(FOLLOWED, &format!("fan-{round}"));
        let sent = Instant::now();
        let data = http.post(Some(staff), &request).await?;
        let answered = sent.elapsed();
        let arrivals = clients.arrivals(earned_position(&data)?, Duration::from_secs(60)).await?;
        let latencies: Vec<Duration> = arrivals.iter().flatten().map(|at| at.saturating_duration_since(sent)).collect();
        anyhow::ensure!(
            latencies.len() == subscribers,
            "round {round}: only {} of {subscribers} subscribers received the update within 60 s",
            latencies.len()
        );
        let all = latencies.iter().copied().max().unwrap_or_default();
        let (p50, p99) = percentiles(latencies);
        rounds.push(Round { answered, p50, p99, all });
    }
    clients.close();
    // Let the server close every subscriber's socket before anything else is
    // measured on it (its database pool may have grown meanwhile: some slack).
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.open_files()? > files_before + 100 {
        anyhow::ensure!(Instant::now() < deadline, "the server still holds the subscribers' sockets after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(FanOut { subscribers, files, server_files, connect, warm_ups, resident_before, resident_after, rounds })
}

impl FanOut {
    fn print(&self, options: &Options) {
        let n = self.subscribers;
        println!(
            "Subscription fan-out: {n} WebSocket subscribers (graphql-transport-ws, one connection each, \
             token in connection_init) to `walletUpdates` of one member, on the one server; connected \
             {} at a time in {:.1} s ({:.0}/s); all live after {} warm-up update(s). Then one `earnPoints` \
             for that member per round; times from sending the mutation:",
            options.connect_concurrency,
            self.connect.as_secs_f64(),
            n as f64 / self.connect.as_secs_f64(),
            self.warm_ups
        );
        if n < options.subscribers {
            println!();
            println!(
                "**Only {n} of the {} subscribers asked for: the open-file limit is {} per process \
                 (`ulimit -Hn`), and each process needs one file per subscriber plus {SPARE_FILES}.**",
                options.subscribers, self.files
            );
        }
        println!();
        println!("| round | mutation answered | p50 delivery | p99 delivery | all {n} delivered |");
        println!("|---|---|---|---|---|");
        for (k, round) in self.rounds.iter().enumerate() {
            println!(
                "| {} | {} | {} | {} | {} |",
                k + 1,
                ms(round.answered),
                ms(round.p50),
                ms(round.p99),
                ms(round.all)
            );
        }
        let worst = self.rounds.iter().map(|r| r.p99).max().unwrap_or_default();
        println!();
        println!(
            "p99 target < 1 s: {} (worst round {})",
            if worst < Duration::from_secs(1) { "met" } else { "missed" },
            ms(worst)
        );
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let per = self.resident_after.saturating_sub(self.resident_before) as f64 / n.max(1) as f64 / 1024.0;
        println!();
        println!(
            "Server memory (VmRSS): {:.1} MiB before connecting, {:.1} MiB with {n} live subscriptions: \
             {per:.1} KiB per subscriber ({} files open in the server; limit {} per process).",
            mib(self.resident_before),
            mib(self.resident_after),
            self.server_files,
            self.files
        );
        println!();
    }
}
