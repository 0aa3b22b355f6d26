//! `bench reads`: a front end's screens as GraphQL documents over HTTP,
//! against the same SQL statements the resolvers issue, run through sqlx on
//! the same database in the same run.
//!
//! The dataset ([`crate::reads_dataset`]) is written through pointstream's
//! own commands with every projection inline. The server is `bench
//! api-server` (wired as `pointstream serve`), a process of its own. Each
//! screen's statements are captured from a second, in-process server on the
//! same database whose connection records every statement it runs (sea-orm's
//! metric callback: the SQL and its bound values), one request per variant
//! and page size; the baseline replays exactly those statements, one after
//! the other on one pooled connection, with the same values bound as
//! prepared-statement parameters.

use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::auth::Role;
use api::server::HttpConfig;
use api::{ApiState, Limits};
use eventstore::{EventStore, EventStoreConfig};
use sea_orm::Value;
use serde_json::{Value as Json, json};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySql, Pool};
use tokio::sync::{Mutex, watch};

use crate::api_bench::{caught_up, connect_all, token};
use crate::api_server::ServerProcess;
use crate::cpu::Meter;
use crate::measure::{Contender, Interleaved, Op, interleave, ms, warm_up};
use crate::raw_http::RawHttp;
use crate::reads_dataset::{self, Size, member_id, store_id};
use crate::run::{Scratch, server_variable};

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds of each turn.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Turns of each side (GraphQL, sqlx) per screen and concurrency.
    #[arg(long, default_value_t = 2)]
    pub turns: usize,
    /// Concurrent clients (and baseline callers), one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    pub concurrency: Vec<usize>,
    /// Rows per page of every screen's lists.
    #[arg(long, default_value_t = 20)]
    pub page: usize,
    /// The larger page size statements are also counted at.
    #[arg(long, default_value_t = 100)]
    pub large_page: usize,
    #[command(flatten)]
    pub size: Size,
}

/// A screen of the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screen {
    Home,
    Store,
    DeepLedger,
}

const SCREENS: [Screen; 3] = [Screen::Home, Screen::Store, Screen::DeepLedger];

/// The member's home screen: who they are, their balances, the feed's first page.
const HOME: &str = "query Home($member: String!, $first: Int!) { \
    me { role subject storeId member { id handle displayName } } \
    balances(member: $member) { storeId balance earned redeemed } \
    feed(first: $first) { pageInfo { hasNextPage endCursor } edges { cursor node { \
      id body createdAt position \
      author { id handle displayName } store { id name } \
      photos { index key contentType url } social { provider status url } } } } }";

/// A store's screen for its staff: the store, its posts, a customer's ledger page there.
const STORE: &str = "query Store($store: String!, $member: String!, $first: Int!) { \
    store(id: $store) { id name ownerId open rateBasisPoints cap minPurchase policyVersion } \
    posts(store: $store, first: $first) { pageInfo { hasNextPage endCursor } edges { cursor node { \
      id body createdAt author { id handle displayName } photos { index key contentType url } \
      social { provider status } } } } \
    ledger(member: $member, first: $first) { pageInfo { hasNextPage endCursor } edges { cursor node { \
      position memberId storeId kind delta balanceAfter purchaseRef amountPaid recordedAt } } } }";

/// A page of a member's own ledger deep in a long history.
const DEEP_LEDGER: &str = "query Ledger($member: String!, $first: Int!, $after: String!) { \
    ledger(member: $member, first: $first, after: $after) { pageInfo { hasNextPage endCursor } \
      edges { cursor node { position storeId kind delta balanceAfter purchaseRef amountPaid recordedAt } } } }";

impl Screen {
    fn name(self) -> &'static str {
        match self {
            Screen::Home => "home (me, balances, feed with authors, stores, photos, social)",
            Screen::Store => "store (store, its posts, staff ledger page)",
            Screen::DeepLedger => "ledger page deep in a long history",
        }
    }

    /// The request body and the bearer token of variant `v`.
    fn request(self, variant: &Variant, page: usize) -> anyhow::Result<(Vec<u8>, String)> {
        let body = match self {
            Screen::Home => json!({ "query": HOME, "variables": { "member": variant.member, "first": page } }),
            Screen::Store => json!({ "query": STORE, "variables": {
                "store": variant.store, "member": variant.member, "first": page } }),
            Screen::DeepLedger => json!({ "query": DEEP_LEDGER, "variables": {
                "member": variant.member, "first": page, "after": variant.deep_cursor } }),
        };
        let token = match self {
            Screen::Store => variant.staff_token.clone(),
            Screen::Home | Screen::DeepLedger => variant.member_token.clone(),
        };
        Ok((serde_json::to_vec(&body)?, token))
    }

    /// Checks that `data` holds full pages of `page` rows.
    fn check(self, data: &Json, page: usize) -> anyhow::Result<()> {
        let rows = |path: &[&str]| path.iter().fold(data, |at, key| &at[*key])["edges"].as_array().map(Vec::len);
        let full = match self {
            Screen::Home => rows(&["feed"]) == Some(page) && data["me"]["member"]["id"].is_string(),
            Screen::Store => {
                rows(&["posts"]).is_some_and(|n| n > 0)
                    && rows(&["ledger"]) == Some(page)
                    && data["store"]["id"].is_string()
            }
            Screen::DeepLedger => rows(&["ledger"]) == Some(page),
        };
        anyhow::ensure!(full, "{self:?} at {page} answered short pages: {data}");
        Ok(())
    }
}

/// One variant of every screen: a member with a long history and the store they shop at.
struct Variant {
    member: String,
    store: String,
    /// The cursor of the entry halfway down the member's history.
    deep_cursor: String,
    member_token: String,
    staff_token: String,
}

/// One statement as the resolvers ran it: its SQL and bound values.
#[derive(Clone, Debug)]
struct Statement {
    sql: String,
    params: Vec<Param>,
}

#[derive(Clone, Debug)]
enum Param {
    Str(String),
    Int(i64),
    Unsigned(u64),
    Bool(bool),
    Float(f64),
    Null,
}

impl Statement {
    fn of(statement: &sea_orm::Statement) -> Self {
        let params = statement
            .values
            .iter()
            .flat_map(|values| values.0.iter())
            .map(|value| match value {
                Value::String(Some(s)) => Param::Str(s.clone()),
                Value::Char(Some(c)) => Param::Str(c.to_string()),
                Value::Bool(Some(b)) => Param::Bool(*b),
                Value::TinyInt(Some(n)) => Param::Int(i64::from(*n)),
                Value::SmallInt(Some(n)) => Param::Int(i64::from(*n)),
                Value::Int(Some(n)) => Param::Int(i64::from(*n)),
                Value::BigInt(Some(n)) => Param::Int(*n),
                Value::TinyUnsigned(Some(n)) => Param::Unsigned(u64::from(*n)),
                Value::SmallUnsigned(Some(n)) => Param::Unsigned(u64::from(*n)),
                Value::Unsigned(Some(n)) => Param::Unsigned(u64::from(*n)),
                Value::BigUnsigned(Some(n)) => Param::Unsigned(*n),
                Value::Float(Some(f)) => Param::Float(f64::from(*f)),
                Value::Double(Some(f)) => Param::Float(*f),
                // The read models' queries bind strings, integers and
                // booleans only; anything else is bound as NULL and shows
                // as a failed check below.
                _ => Param::Null,
            })
            .collect();
        Statement { sql: statement.sql.clone(), params }
    }

    /// Runs it through sqlx on `connection`, as a prepared statement, fetching every row.
    async fn run(&self, connection: &mut sqlx::MySqlConnection) -> anyhow::Result<usize> {
        let mut query = sqlx::query(&self.sql);
        for param in &self.params {
            query = match param {
                Param::Str(s) => query.bind(s.as_str()),
                Param::Int(n) => query.bind(*n),
                Param::Unsigned(n) => query.bind(*n),
                Param::Bool(b) => query.bind(*b),
                Param::Float(f) => query.bind(*f),
                Param::Null => query.bind(None::<String>),
            };
        }
        Ok(query.fetch_all(connection).await?.len())
    }
}

/// What the capture found for one screen.
struct Captured {
    /// Each variant's statements at `--page`.
    statements: Vec<Vec<Statement>>,
    /// Statements per screen at `--page` and `--large-page` (variant 0).
    counts: (usize, usize),
}

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(server, "reads", |url| async move { measure(&url, options).await }).await
}

async fn measure(url: &str, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let size = options.size;
    let largest = options.concurrency.iter().copied().max().unwrap_or(32).max(1);
    let writer_config = EventStoreConfig {
        max_connections: (reads_dataset::WRITERS + 8) as u32,
        cache_capacity: (size.members + size.stores + size.posts) as usize + 1_000,
        ..EventStoreConfig::default()
    };
    {
        let store = EventStore::open(url, writer_config).await?;
        projections::write_inline(&store, &projections::PROJECTIONS)?;
        reads_dataset::write(&store, &size).await?;
    }
    let counts = table_counts(url).await?;

    let secret = uuid::Uuid::new_v4().simple().to_string();
    let variants = variants(url, &size, &secret).await?;
    let captured = capture(url, &secret, &variants, options).await?;

    // The server's pool and the baseline's, each as large as the highest
    // concurrency, besides the server's own (writer, projectors) and this
    // process's: MariaDB's default of 151 connections is too few at 128.
    let needed = 2 * (largest as u64 + 4) + 40;
    let was = server_variable(url, "max_connections", None).await?;
    let raised = (was < needed).then_some(was);
    if raised.is_some() {
        server_variable(url, "max_connections", Some(needed)).await?;
        eprintln!("(MariaDB's max_connections raised from {was} to {needed} for this run)");
    }
    let server_config = EventStoreConfig { max_connections: (largest + 4) as u32, ..EventStoreConfig::default() };
    let server = ServerProcess::spawn(url, &secret, &server_config).await?;
    let measured = async {
        // A projection written inline moves its checkpoint with its own
        // events only; the server's projectors move each to the head.
        caught_up(url).await?;
        let pool = MySqlPoolOptions::new()
            .max_connections((largest + 4) as u32)
            // As the peer server: loopback connections in constant use need no ping before each use.
            .test_before_acquire(false)
            .connect(url)
            .await?;
        let clients = connect_all(largest, || RawHttp::connect(&server.address)).await?;
        let mut levels = Vec::new();
        for &concurrency in &options.concurrency {
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let mut screens = Vec::new();
            for (screen, captured) in SCREENS.iter().zip(&captured) {
                let requests = variants
                    .iter()
                    .map(|variant| screen.request(variant, options.page))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let http = http_op(&clients, Arc::new(requests));
                let sql = sql_op(&pool, Arc::new(captured.statements.clone()));
                let mut contenders = Vec::new();
                for op in [http, sql] {
                    warm_up(concurrency.max(1), 2, &op).await?;
                    let meter = Meter::new(Some(server.pid()?));
                    contenders.push(Contender { op, concurrency: concurrency.max(1), meter, from: 2 });
                }
                let figures =
                    interleave(&contenders, options.turns.max(1), Duration::from_secs(options.seconds.max(1))).await?;
                let [graphql, sqlx] = <[Interleaved; 2]>::try_from(figures)
                    .map_err(|f| anyhow::anyhow!("{} figures measured, not 2", f.len()))?;
                screens.push((*screen, graphql, sqlx));
            }
            levels.push(Level { concurrency, load, screens });
        }
        pool.close().await;
        anyhow::Ok(levels)
    }
    .await;
    let stopped = server.stop().await;
    if let Some(was) = raised {
        server_variable(url, "max_connections", Some(was)).await?;
    }
    let levels = measured?;
    stopped?;
    print(options, &counts, &captured, &levels, started.elapsed());
    Ok(())
}

/// One concurrency's figures.
struct Level {
    concurrency: usize,
    load: String,
    screens: Vec<(Screen, Interleaved, Interleaved)>,
}

/// Rows of the read models the screens read.
async fn table_counts(url: &str) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let pool = MySqlPoolOptions::new().max_connections(1).connect(url).await?;
    let mut counts = Vec::new();
    for table in ["members", "stores", "balances", "ledger", "posts", "post_photos", "post_social", "events"] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `{table}`")).fetch_one(&pool).await?;
        counts.push((table, count));
    }
    pool.close().await;
    Ok(counts)
}

/// The long-history members, their stores, the cursors halfway down and their tokens.
async fn variants(url: &str, size: &Size, secret: &str) -> anyhow::Result<Vec<Variant>> {
    let pool = MySqlPoolOptions::new().max_connections(1).connect(url).await?;
    let mut variants = Vec::new();
    for v in 0..size.variants {
        let (member, store) = (member_id(v), store_id(size.variant_store(v)));
        let position: i64 = sqlx::query_scalar(
            "SELECT position FROM ledger WHERE member_id = ? ORDER BY position DESC LIMIT 1 OFFSET ?",
        )
        .bind(&member)
        .bind(size.history / 2)
        .fetch_one(&pool)
        .await
        .with_context(|| format!("{member} has no entry {} deep", size.history / 2))?;
        variants.push(Variant {
            member_token: token(secret, Role::Member, Some(&member), None)?,
            staff_token: token(secret, Role::Staff, None, Some(&store))?,
            member,
            store,
            deep_cursor: position.to_string(),
        });
    }
    pool.close().await;
    Ok(variants)
}

/// Every screen's statements, from an in-process server whose connection
/// records what it runs: one request per variant at `--page`, and one at
/// `--large-page`, each request alone.
async fn capture(url: &str, secret: &str, variants: &[Variant], options: &Options) -> anyhow::Result<Vec<Captured>> {
    let log = Arc::new(SyncMutex::new(Vec::<Statement>::new()));
    let mut connection = eventstore::connect(url, 8).await?;
    let recorder = log.clone();
    connection.set_metric_callback(move |info| {
        if let Ok(mut log) = recorder.lock() {
            log.push(Statement::of(info.statement));
        }
    });
    // No follower polling the log while statements are recorded.
    let config = EventStoreConfig { follow_interval: Duration::from_secs(3_600), ..EventStoreConfig::default() };
    let store = EventStore::with_connection(connection, config).await?;
    let reads = api::replicas::Reads::primary(&store);
    let state = ApiState {
        store,
        read_timeout: Duration::from_secs(5),
        limits: Limits::default(),
        tokens: None,
        redis: None,
        media: media::scratch::scratch_fs("http://127.0.0.1"),
        photo_url_ttl: Duration::from_secs(900),
        projectors: Vec::new(),
        notary_key: None,
        reads,
        links: None,
    };
    let app = api::server::app(api::build(state.clone()), state, HttpConfig::new(secret.as_bytes().to_vec()));
    let (stop, mut stopped) = watch::channel(false);
    let (address, server) = api::server::bind("127.0.0.1:0".to_string(), |_| app, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    })
    .await?;
    let server = tokio::spawn(server);
    let captured = async {
        let mut client = RawHttp::connect(&address).await?;
        let mut screens = Vec::new();
        for screen in SCREENS {
            let mut statements = Vec::new();
            for variant in variants {
                statements.push(capture_one(&mut client, &log, screen, variant, options.page).await?);
            }
            let large = capture_one(&mut client, &log, screen, &variants[0], options.large_page).await?.len();
            let counts = (statements[0].len(), large);
            screens.push(Captured { statements, counts });
        }
        anyhow::Ok(screens)
    }
    .await;
    stop.send_replace(true);
    server.await??;
    captured
}

/// The statements one request for `screen` runs.
async fn capture_one(
    client: &mut RawHttp,
    log: &SyncMutex<Vec<Statement>>,
    screen: Screen,
    variant: &Variant,
    page: usize,
) -> anyhow::Result<Vec<Statement>> {
    let poisoned = || anyhow::anyhow!("the statement log is poisoned");
    let (body, token) = screen.request(variant, page)?;
    log.lock().map_err(|_| poisoned())?.clear();
    let answer = client.post(Some(&token), &body).await?;
    let parsed: Json = serde_json::from_slice(answer)?;
    anyhow::ensure!(parsed.get("errors").is_none(), "{screen:?} answered {parsed}");
    screen.check(&parsed["data"], page)?;
    let statements = std::mem::take(&mut *log.lock().map_err(|_| poisoned())?);
    Ok(statements)
}

/// A screen over HTTP: client `w`'s `i`th request is variant `(w + i) mod n`'s.
fn http_op(clients: &Arc<Vec<Mutex<RawHttp>>>, requests: Arc<Vec<(Vec<u8>, String)>>) -> Op {
    let clients = clients.clone();
    Arc::new(move |w, i| {
        let (clients, requests) = (clients.clone(), requests.clone());
        Box::pin(async move {
            let (body, token) = &requests[(w + i as usize) % requests.len()];
            let mut client = clients[w].lock().await;
            let answer = client.post(Some(token), body).await?;
            let parsed: Answer = serde_json::from_slice(answer)?;
            anyhow::ensure!(
                parsed.errors.is_none() && parsed.data.is_some(),
                "the screen failed: {}",
                String::from_utf8_lossy(answer)
            );
            Ok(())
        })
    })
}

/// A GraphQL answer, checked for errors only.
#[derive(serde::Deserialize)]
struct Answer {
    data: Option<serde::de::IgnoredAny>,
    errors: Option<serde::de::IgnoredAny>,
}

/// A screen's statements through sqlx, one after the other on one pooled
/// connection: caller `w`'s `i`th screen is variant `(w + i) mod n`'s.
fn sql_op(pool: &Pool<MySql>, statements: Arc<Vec<Vec<Statement>>>) -> Op {
    let pool = pool.clone();
    Arc::new(move |w, i| {
        let (pool, statements) = (pool.clone(), statements.clone());
        Box::pin(async move {
            let screen = &statements[(w + i as usize) % statements.len()];
            let mut connection = pool.acquire().await?;
            for statement in screen {
                statement.run(&mut connection).await?;
            }
            Ok(())
        })
    })
}

fn print(options: &Options, counts: &[(&str, i64)], captured: &[Captured], levels: &[Level], took: Duration) {
    println!("## reads: a front end's screens over HTTP against their own SQL through sqlx (MySQL, one run)");
    println!();
    let rows: Vec<String> = counts.iter().map(|(table, n)| format!("{table} {n}")).collect();
    println!("Dataset (written through pointstream's commands, projections inline): {}.", rows.join(", "));
    println!(
        "{} variants of each screen (a member with a {}-entry history over four stores, staff of one of them); \
         page size {}; turns of {} s, {} per side, GraphQL and sqlx alternating.",
        options.size.variants, options.size.history, options.page, options.seconds, options.turns
    );
    println!();
    println!("| screen | statements at page {} | at page {} |", options.page, options.large_page);
    println!("|---|---|---|");
    for (screen, captured) in SCREENS.iter().zip(captured) {
        println!("| {} | {} | {} |", screen.name(), captured.counts.0, captured.counts.1);
    }
    println!();
    println!(
        "| concurrency | screen | GraphQL screens/s | p50 / p99 | sqlx screens/s | p50 / p99 | ratio (≥ 0.6) | \
         CPU per screen GraphQL: server / MariaDB / clients | sqlx: MariaDB / clients |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for level in levels {
        for (screen, graphql, sqlx) in &level.screens {
            let ratio = graphql.rate / sqlx.rate.max(f64::MIN_POSITIVE);
            let p99_note = if level.concurrency == 32 {
                if graphql.p99 < Duration::from_millis(20) { " (< 20 ms: met)" } else { " (**≥ 20 ms: not met**)" }
            } else {
                ""
            };
            let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
            println!(
                "| {} | {} | {:.0} | {} / {}{} | {:.0} | {} / {} | {:.2}{} | {} / {} / {} | {} / {} |",
                level.concurrency,
                screen.name(),
                graphql.rate,
                ms(graphql.p50),
                ms(graphql.p99),
                p99_note,
                sqlx.rate,
                ms(sqlx.p50),
                ms(sqlx.p99),
                ratio,
                if ratio >= 0.6 { "" } else { " **not met**" },
                us(graphql.cpu.server),
                us(graphql.cpu.database),
                us(graphql.cpu.clients),
                us(sqlx.cpu.database),
                us(sqlx.cpu.clients),
            );
        }
    }
    println!();
    for level in levels {
        println!("Load average before concurrency {}: {}", level.concurrency, level.load.trim());
    }
    println!("Whole run (dataset included): {:.0} s.", took.as_secs_f64());
}
