//! pointstream benchmarks. Every figure is printed next to a baseline measured
//! in the same run, as a ratio, because absolute figures on shared machines
//! are noise.
//!
//! ```sh
//! cargo run --release -p bench -- eventstore
//! cargo run --release -p bench -- api
//! cargo run --release -p bench -- fanout
//! cargo run --release -p bench -- streams
//! cargo run --release -p bench -- media
//! cargo run --release -p bench -- ledger
//! cargo run --release -p bench -- growth
//! cargo run --release -p bench -- reads
//! ```

mod api_bench;
mod api_checks;
mod api_peer;
mod api_server;
mod api_tracing;
mod cpu;
mod cqrs_baseline;
mod fanout_bench;
mod fanout_clients;
mod graphql_http;
mod growth_bench;
mod ledger_bench;
mod measure;
mod media_bench;
mod peer_server;
mod pointstream;
mod projection_bench;
mod raw_http;
mod raw_inserts;
mod reads_bench;
mod reads_dataset;
mod run;
mod streams_bench;
mod subscribers;

/// The allocator of the `pointstream` binary, for every side of every figure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// pointstream benchmarks.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Event store append throughput and latency against raw inserts and cqrs-es + mysql-es.
    Eventstore {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        /// Seconds per throughput measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Concurrency levels to measure throughput at.
        #[arg(long, value_delimiter = ',', default_value = "8,32,64")]
        concurrency: Vec<usize>,
        /// Prior events on the aggregate for the latency measurement.
        #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
        history: Vec<u64>,
    },
    /// Rebuild rate and live projection lag, against cqrs-es's GenericQuery.
    Projections {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        /// Events in the log to rebuild from.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events fed to GenericQuery (a prefix of the same log).
        #[arg(long, default_value_t = 100_000)]
        generic_prefix: u64,
        /// Commands per second during the lag measurement.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Seconds of the lag measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Events per page of the rebuild (what `pointstream replay --batch-size` sets).
        #[arg(long, default_value_t = 20_000)]
        rebuild_batch: u64,
    },
    /// The GraphQL API over HTTP and WebSockets: earnPoints against EventStore::execute, subscription fan-out, and the cost of rate limiting and JWKS verification.
    Api {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        #[command(flatten)]
        options: api_bench::Options,
    },
    /// Subscriptions at one server process's limit: 19,000 WebSockets from several client processes, 50,000 subscriptions over them; one update to all, 1,000 updates/s over distinct wallets, memory per idle connection and subscription.
    Fanout {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        #[command(flatten)]
        options: fanout_bench::Options,
    },
    /// A share of the `fanout` mode's subscriber connections, in a process of its own (started by `fanout`; driven over stdin).
    #[command(hide = true)]
    FanoutClients {
        #[command(flatten)]
        options: fanout_clients::Options,
    },
    /// The relay against a raw pipelined XADD loop, and social workers (1, 2, 4) against a fake network.
    Streams {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        /// Redis to measure against (the bench's streams are deleted afterwards).
        #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Events in the log.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Posts per worker measurement.
        #[arg(long, default_value_t = 1_000)]
        posts: usize,
    },
    /// 1 MiB photo uploads through GraphQL against direct aws-sdk-s3 PutObject, and server memory under 5 and 10 MiB uploads.
    Media {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        #[command(flatten)]
        options: media_bench::Options,
    },
    /// The Merkle tree over the log: appends with the notary running against without, proofs at 10^6 events against a point read, offline verification against parsing alone.
    Ledger {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        /// Events in the log the proofs and the offline verification are measured on.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Seconds of each turn of the append figures.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Closed-loop workers of the append figures.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Turns of each append figure (notary on, notary off).
        #[arg(long, default_value_t = 4)]
        turns: usize,
        /// Random inclusion and consistency proofs timed (and as many point reads).
        #[arg(long, default_value_t = 2_000)]
        proofs: usize,
        /// Rounds of each offline figure (verification, parsing, SHA-256).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// How each figure moves as the log grows: appends, mutations, projector lag, rebuild and audit at each size, against the smallest.
    Growth {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        /// Sizes of the log the figures are measured at, in events.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
        sizes: Vec<u64>,
        /// Seconds of each rate figure.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Seconds of the same load between a figure's first window and its steady one.
        #[arg(long, default_value_t = 15)]
        warmup: u64,
        /// Closed-loop callers of the append and mutation figures.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Commands per second during the lag figure.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// MariaDB's buffer pool for the run, in MiB (set with `SET GLOBAL
        /// innodb_buffer_pool_size`, put back afterwards); the server's own when not given.
        #[arg(long)]
        buffer_pool_mib: Option<u64>,
    },
    /// A front end's screens as GraphQL over HTTP (member and staff tokens) against the same SQL statements through sqlx, at 8/32/128 clients, on 10^5 members, 10^3 stores, 10^6 ledger rows and 5·10^4 posts.
    Reads {
        /// MySQL server to run on (a scratch database is created and dropped).
        #[arg(long, env = "POINTSTREAM_TEST_MYSQL_URL", default_value = "mysql://root@127.0.0.1:3306")]
        mysql: String,
        #[command(flatten)]
        options: reads_bench::Options,
    },
    /// The server the `api` mode measures, in a process of its own (started by `api`; stops when stdin closes).
    #[command(hide = true)]
    ApiServer {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        secret: String,
        #[arg(long)]
        max_connections: u32,
        #[arg(long)]
        s3_endpoint: Option<String>,
        #[arg(long)]
        s3_bucket: Option<String>,
        /// As `pointstream serve --inline-projections` (`none`: every projection after commit).
        #[arg(long, value_delimiter = ',', default_value = projections::ALL_INLINE)]
        inline_projections: Vec<String>,
        /// As `pointstream serve --upload-memory-bytes`.
        #[arg(long, default_value_t = api::Limits::default().upload_memory_bytes)]
        upload_memory_bytes: usize,
        /// As `pointstream serve --stream-uploads`.
        #[arg(long, default_value_t = api::Limits::default().stream_uploads, action = clap::ArgAction::Set)]
        stream_uploads: bool,
        /// As `pointstream serve --append-scripts`.
        #[arg(long, default_value_t = eventstore::EventStoreConfig::default().append_scripts, action = clap::ArgAction::Set)]
        append_scripts: bool,
        /// As `pointstream serve --rate-limit-per-minute`, but 0 (off) unless
        /// given: most figures' callers share one token, which `serve`'s
        /// default limit would throttle.
        #[arg(long, default_value_t = 0)]
        rate_limit_per_minute: u32,
        /// As `pointstream serve --rate-limit-burst`.
        #[arg(long, default_value_t = api::rate::RateLimit::default().burst)]
        rate_limit_burst: u32,
        /// As `pointstream serve --oidc-jwks-url`: tokens are checked against
        /// the keys published there instead of the secret.
        #[arg(long)]
        oidc_jwks_url: Option<String>,
        /// As `pointstream serve --oidc-issuer`.
        #[arg(long, requires = "oidc_jwks_url")]
        oidc_issuer: Option<String>,
        /// As `pointstream serve --oidc-audience`.
        #[arg(long, requires = "oidc_jwks_url")]
        oidc_audience: Option<String>,
    },
    /// The peer the `api` mode's `peer` part measures pointstream against, in a process of its own (started by `api`; stops when stdin closes).
    #[command(hide = true)]
    PeerServer {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        secret: String,
        #[arg(long)]
        max_connections: u32,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let command = Cli::parse().command;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    // The API server exports traces as `pointstream serve` does, when its environment asks for them.
    let traces =
        if matches!(command, Command::ApiServer { .. }) { api::traces::Traces::from_env("serve")? } else { None };
    match &traces {
        Some(traces) => tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
            .with(traces.layer())
            .init(),
        None => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
    }
    let result = run(command).await;
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    result
}

/// Runs one mode of the benchmark.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Eventstore { mysql, seconds, concurrency, history } => {
            let options = run::Options { seconds, concurrency, history };
            run::eventstore(&mysql, &options).await
        }
        Command::Projections { mysql, events, generic_prefix, rate, seconds, rebuild_batch } => {
            let options = projection_bench::Options { events, generic_prefix, rate, seconds, rebuild_batch };
            projection_bench::run(&mysql, &options).await
        }
        Command::Api { mysql, options } => api_bench::run(&mysql, &options).await,
        Command::Fanout { mysql, options } => fanout_bench::run(&mysql, &options).await,
        Command::FanoutClients { options } => fanout_clients::run(&options).await,
        Command::Streams { mysql, redis, events, posts } => {
            streams_bench::run(&mysql, &streams_bench::Options { events, posts, redis }).await
        }
        Command::Media { mysql, options } => media_bench::run(&mysql, &options).await,
        Command::Ledger { mysql, events, seconds, concurrency, turns, proofs, rounds } => {
            let options = ledger_bench::Options { events, seconds, concurrency, turns, proofs, rounds };
            ledger_bench::run(&mysql, &options).await
        }
        Command::Growth { mysql, mut sizes, seconds, warmup, concurrency, rate, buffer_pool_mib } => {
            sizes.sort_unstable();
            let options = growth_bench::Options { sizes, seconds, warmup, concurrency, rate, buffer_pool_mib };
            growth_bench::run(&mysql, &options).await
        }
        Command::Reads { mysql, options } => reads_bench::run(&mysql, &options).await,
        Command::ApiServer {
            database_url,
            secret,
            max_connections,
            s3_endpoint,
            s3_bucket,
            inline_projections,
            upload_memory_bytes,
            stream_uploads,
            append_scripts,
            rate_limit_per_minute,
            rate_limit_burst,
            oidc_jwks_url,
            oidc_issuer,
            oidc_audience,
        } => {
            let photos = api_server::Photos { s3_endpoint, s3_bucket };
            let limits = api::Limits { upload_memory_bytes, stream_uploads, ..api::Limits::default() };
            let config = eventstore::EventStoreConfig {
                max_connections,
                append_scripts,
                ..eventstore::EventStoreConfig::default()
            };
            let access = api_server::Access {
                rate_limit: api::rate::RateLimit { per_minute: rate_limit_per_minute, burst: rate_limit_burst },
                oidc: oidc_jwks_url.map(|jwks_url| api_server::Oidc {
                    jwks_url,
                    issuer: oidc_issuer,
                    audience: oidc_audience,
                }),
            };
            api_server::serve(&database_url, &secret, config, photos, &inline_projections, limits, access).await
        }
        Command::PeerServer { database_url, secret, max_connections, listen } => {
            peer_server::serve(&database_url, &secret, max_connections, &listen).await
        }
    }
}
