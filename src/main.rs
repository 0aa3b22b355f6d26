//! The `pointstream` command: configuration and wiring only.

mod demo;

/// mimalloc: the group commit and the HTTP workers allocate and free many
/// short-lived buffers, which glibc's allocator serves at several times the cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::auth::{self, Claims, Role};
use api::{ApiState, Limits};
use clap::{Parser, Subcommand};
use eventstore::{DEFAULT_DATABASE_URL, EventStore, EventStoreConfig};
use indicatif::{ProgressBar, ProgressStyle};
use projections::rebuild::rebuild;
use projections::{Members, Posts, ProjectorConfig, Shares, Stores, Wallets};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

use domain::values::Provider;
use fred::prelude::{Client, ClientLike};
use workers::providers::{Facebook, LoggingNetwork, SocialNetwork, Twitter, http_client};
use workers::relay::RelayConfig;
use workers::social::{SocialConfig, SocialWorker};
use workers::tokens::TokenVault;

use media::{FsStore, MediaStore, S3Config, S3Store, UrlSigner};

/// Event-sourced loyalty points backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where the event store lives: `sqlite://FILE` or `mysql://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,
    /// Take a snapshot of an aggregate every this many events.
    #[arg(long, env = "POINTSTREAM_SNAPSHOT_EVERY", default_value_t = 100, global = true)]
    snapshot_every: u64,
    /// On MySQL, send each append's statements as one script (one round
    /// trip) when it can; false for a proxy that refuses multi-statement queries.
    #[arg(long, env = "POINTSTREAM_APPEND_SCRIPTS", default_value_t = EventStoreConfig::default().append_scripts, action = clap::ArgAction::Set, global = true)]
    append_scripts: bool,
    /// Projector lease lifetime in milliseconds: how soon a dead projector is taken over.
    #[arg(long, env = "POINTSTREAM_LEASE_TTL_MS", default_value_t = 10_000, global = true)]
    lease_ttl_ms: u64,
    /// Events per projector batch (and transaction).
    #[arg(long, env = "POINTSTREAM_PROJECTOR_BATCH", default_value_t = 1_000, global = true)]
    projector_batch: u64,
    /// Projections written in the append transaction itself (comma-separated;
    /// `none` for none): a mutation's answer then needs no wait for a
    /// projector. The others are applied by their projectors, after commit.
    #[arg(
        long,
        env = "POINTSTREAM_INLINE_PROJECTIONS",
        value_delimiter = ',',
        default_value = projections::ALL_INLINE,
        global = true
    )]
    inline_projections: Vec<String>,
    /// Address the API listens on (port 0: any free port).
    #[arg(long, env = "POINTSTREAM_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    listen: String,
    /// Secret that signs and checks bearer tokens (HS256). Without it (and
    /// without `--oidc-jwks-url`) a fixed development secret is used, `serve`
    /// says so, and refuses to listen beyond loopback.
    #[arg(long, env = "POINTSTREAM_JWT_SECRET", global = true, hide_env_values = true)]
    jwt_secret: Option<String>,
    /// An OpenID Connect provider's JWKS URL: bearer tokens are checked
    /// against its keys (RS256, ES256, EdDSA), and HS256 tokens are refused.
    #[arg(long, env = "POINTSTREAM_OIDC_JWKS_URL", global = true)]
    oidc_jwks_url: Option<String>,
    /// The issuer (`iss`) every provider token must carry.
    #[arg(long, env = "POINTSTREAM_OIDC_ISSUER", global = true)]
    oidc_issuer: Option<String>,
    /// The audience every provider token's `aud` must name.
    #[arg(long, env = "POINTSTREAM_OIDC_AUDIENCE", global = true)]
    oidc_audience: Option<String>,
    /// The claim that holds the caller's role (a string, or an array whose
    /// first pointstream role counts); a dotted path reaches into objects.
    #[arg(long, env = "POINTSTREAM_OIDC_ROLE_CLAIM", default_value = "role", global = true)]
    oidc_role_claim: String,
    /// The claim that holds the member a member token acts as.
    #[arg(long, env = "POINTSTREAM_OIDC_MEMBER_CLAIM", default_value = "member", global = true)]
    oidc_member_claim: String,
    /// The claim that holds the store a staff token works at.
    #[arg(long, env = "POINTSTREAM_OIDC_STORE_CLAIM", default_value = "store", global = true)]
    oidc_store_claim: String,
    /// How far the provider's clock may be off, in seconds (`exp`, `nbf`, `iat`).
    #[arg(long, env = "POINTSTREAM_OIDC_LEEWAY_SECS", default_value_t = auth::jwks::DEFAULT_LEEWAY_SECS, global = true)]
    oidc_leeway_secs: u64,
    /// How often the provider's keys are fetched again, in seconds.
    #[arg(long, env = "POINTSTREAM_OIDC_REFRESH_SECS", default_value_t = auth::jwks::DEFAULT_REFRESH_SECS, global = true)]
    oidc_refresh_secs: u64,
    /// The least time between two fetches of the keys for tokens that name
    /// an unknown key (and before retrying a failed fetch), in seconds.
    #[arg(long, env = "POINTSTREAM_OIDC_MIN_REFRESH_SECS", default_value_t = auth::jwks::DEFAULT_MIN_REFRESH_SECS, global = true)]
    oidc_min_refresh_secs: u64,
    /// The longest a bearer token may live, in seconds: `exp` − `iat`, or
    /// `exp` − now for a token without `iat`.
    #[arg(long, env = "POINTSTREAM_MAX_TOKEN_LIFETIME_SECS", default_value_t = auth::DEFAULT_MAX_TOKEN_LIFETIME_SECS, global = true)]
    max_token_lifetime_secs: u64,
    /// How long a mutation waits for its read model to show the change, in milliseconds.
    #[arg(long, env = "POINTSTREAM_READ_TIMEOUT_MS", default_value_t = 5_000, global = true)]
    read_timeout_ms: u64,
    /// Deepest GraphQL selection nesting accepted.
    #[arg(long, env = "POINTSTREAM_MAX_DEPTH", default_value_t = 12, global = true)]
    max_depth: usize,
    /// Highest GraphQL query complexity accepted.
    #[arg(long, env = "POINTSTREAM_MAX_COMPLEXITY", default_value_t = 5_000, global = true)]
    max_complexity: usize,
    /// Largest page a paginated field returns.
    #[arg(long, env = "POINTSTREAM_MAX_PAGE", default_value_t = 100, global = true)]
    max_page: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "POINTSTREAM_MAX_BODY_BYTES", default_value_t = 1 << 20, global = true)]
    max_body_bytes: usize,
    /// Whether the API answers introspection (`__schema`, `__type`): turn it
    /// off in production if the schema is not to be public.
    #[arg(long, env = "POINTSTREAM_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    introspection: bool,
    /// Browser origins allowed to call the API, comma-separated
    /// (`https://app.example.com,https://admin.example.com`, or `loopback`).
    /// Unset: loopback origins when listening on loopback, none otherwise.
    #[arg(long, env = "POINTSTREAM_CORS_ORIGINS", global = true)]
    cors_origins: Option<String>,
    /// Requests per minute each caller (a token's subject, else an address)
    /// may make, sustained; 0 turns rate limiting off.
    #[arg(long, env = "POINTSTREAM_RATE_LIMIT_PER_MINUTE", default_value_t = api::rate::RateLimit::default().per_minute, global = true)]
    rate_limit_per_minute: u32,
    /// Requests a caller may make at once on top of the sustained rate.
    #[arg(long, env = "POINTSTREAM_RATE_LIMIT_BURST", default_value_t = api::rate::RateLimit::default().burst, global = true)]
    rate_limit_burst: u32,
    /// How long a mutation's command may take, in milliseconds, before the
    /// client is told its outcome is unknown (`OUTCOME_UNKNOWN`; a retry with
    /// the same idempotency key is safe).
    #[arg(long, env = "POINTSTREAM_MUTATION_DEADLINE_MS", default_value_t = 10_000, global = true)]
    mutation_deadline_ms: u64,
    /// How long `/readyz` waits for each dependency (database, photo store,
    /// Redis), in milliseconds.
    #[arg(long, env = "POINTSTREAM_READY_TIMEOUT_MS", default_value_t = 2_000, global = true)]
    ready_timeout_ms: u64,
    /// How long a WebSocket may take to send `connection_init`, in milliseconds.
    #[arg(long, env = "POINTSTREAM_WS_INIT_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    ws_init_timeout_ms: u64,
    /// How often (ms) this process looks for events other processes committed;
    /// with Redis it also wakes as soon as the events stream grows.
    #[arg(long, env = "POINTSTREAM_FOLLOW_INTERVAL_MS", default_value_t = 100, global = true)]
    follow_interval_ms: u64,
    /// Redis to fan events out through (`redis://host:port`). Without it
    /// nothing is relayed.
    #[arg(long, env = "REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Prefix of pointstream's Redis keys: events go to `{prefix}:events`.
    #[arg(long, env = "POINTSTREAM_STREAM_PREFIX", default_value = "pointstream", global = true)]
    stream_prefix: String,
    /// 64 hex digits: the key that seals linked accounts' access tokens. Without
    /// it no token is kept and the social workers' networks only log.
    #[arg(long, env = "POINTSTREAM_TOKEN_KEY", global = true, hide_env_values = true)]
    token_key: Option<String>,
    /// Facebook Graph API base URL.
    #[arg(long, env = "POINTSTREAM_FACEBOOK_URL", default_value = "https://graph.facebook.com/v19.0", global = true)]
    facebook_url: String,
    /// Twitter API base URL.
    #[arg(long, env = "POINTSTREAM_TWITTER_URL", default_value = "https://api.twitter.com", global = true)]
    twitter_url: String,
    /// The app's public URL: cross-posts link to `{url}/posts/{id}`.
    #[arg(long, env = "POINTSTREAM_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// This API's URL as clients reach it: photo URLs of the filesystem store
    /// point at `{url}/media/...` (default: the address it listens on).
    #[arg(long, env = "POINTSTREAM_API_URL", global = true)]
    api_url: Option<String>,
    /// Attempts per network before a post goes to the dead letters.
    #[arg(long, env = "POINTSTREAM_SOCIAL_ATTEMPTS", default_value_t = 5, global = true)]
    social_attempts: u32,
    /// A worker's entries idle this long (ms) are taken over by another.
    #[arg(long, env = "POINTSTREAM_CLAIM_IDLE_MS", default_value_t = 30_000, global = true)]
    claim_idle_ms: u64,
    /// This worker's name in its consumer group (default: host and process id).
    #[arg(long, env = "POINTSTREAM_CONSUMER", global = true)]
    consumer: Option<String>,
    /// Most subscriptions one WebSocket connection may hold at once.
    #[arg(long, env = "POINTSTREAM_MAX_SUBSCRIPTIONS", default_value_t = 32, global = true)]
    max_subscriptions: usize,
    /// Largest photo upload accepted, in bytes.
    #[arg(long, env = "POINTSTREAM_MAX_UPLOAD_BYTES", default_value_t = 10 << 20, global = true)]
    max_upload_bytes: usize,
    /// Most files one request may upload.
    #[arg(long, env = "POINTSTREAM_MAX_UPLOADS", default_value_t = 10, global = true)]
    max_uploads: usize,
    /// Uploads of a request up to this many bytes are held in memory rather
    /// than in temporary files (a file is, while it is within this size).
    #[arg(long, env = "POINTSTREAM_UPLOAD_MEMORY_BYTES", default_value_t = Limits::default().upload_memory_bytes, global = true)]
    upload_memory_bytes: usize,
    /// Memory all uploads held in memory may take together, in bytes.
    #[arg(long, env = "POINTSTREAM_UPLOAD_MEMORY_TOTAL", default_value_t = Limits::default().upload_memory_total, global = true)]
    upload_memory_total: usize,
    /// Put a request's only photo into S3 while it arrives (when the request
    /// declares its length), rather than once it is all in.
    #[arg(long, env = "POINTSTREAM_STREAM_UPLOADS", default_value_t = Limits::default().stream_uploads, action = clap::ArgAction::Set, global = true)]
    stream_uploads: bool,
    /// How long a photo URL handed out stays good, in seconds.
    #[arg(long, env = "POINTSTREAM_PHOTO_URL_TTL_SECS", default_value_t = 900, global = true)]
    photo_url_ttl_secs: u64,
    /// Directory of the filesystem photo store (used when no S3 bucket is configured).
    #[arg(long, env = "POINTSTREAM_MEDIA_DIR", default_value = "pointstream-media", global = true)]
    media_dir: std::path::PathBuf,
    /// S3 bucket for photos; setting it stores photos in S3 instead of
    /// `--media-dir`. Credentials come from the usual AWS variables.
    #[arg(long, env = "S3_BUCKET", global = true)]
    s3_bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible services (default: AWS).
    #[arg(long, env = "S3_ENDPOINT", global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "S3_REGION", global = true)]
    s3_region: Option<String>,
    /// Address buckets in the URL path, as most S3-compatible services need.
    #[arg(long, env = "S3_PATH_STYLE", global = true)]
    s3_path_style: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Signs development tokens when no secret is configured; never for production.
const DEV_SECRET: &str = "pointstream-development-secret";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default): the event store, the projectors and the share distribution.
    Serve,
    /// Run only the projectors and the share distribution (one active per projection across processes).
    Projector,
    /// Run only the relay: copy the log into the Redis stream `{prefix}:events`
    /// (one active across processes). Needs `--redis-url`.
    Relay,
    /// Run a worker (any number of instances). Needs `--redis-url`.
    Worker {
        /// Which: `social` cross-posts posts to Facebook and Twitter.
        #[arg(value_enum)]
        kind: WorkerKind,
    },
    /// Print where everything stands as JSON: the log head, each projection's
    /// checkpoint and lag, and (with `--redis-url`) the streams.
    Status,
    /// The social workers' dead letters. Needs `--redis-url`.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Print a bearer token (signed with the configured secret) for development.
    Token {
        /// The role: member, staff, admin or auditor.
        #[arg(long)]
        role: String,
        /// The member a member token acts as.
        #[arg(long)]
        member: Option<String>,
        /// The store a staff token works at.
        #[arg(long)]
        store: Option<String>,
        /// Hours until it expires (within --max-token-lifetime-secs).
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Print the GraphQL schema (SDL); `schema.graphql` is this output.
    Schema,
    /// Load the demo data: stores, members, purchases, shares, redemptions and
    /// posts with photos, the photos into the photo store (idempotent; see docs/demo.md).
    Demo,
    /// Rebuild read models from position 0 into shadow tables, then swap them in.
    Replay {
        /// Rebuild only this projection (members, stores, wallets, shares, posts).
        #[arg(long)]
        projection: Option<String>,
        /// Events per batch.
        #[arg(long, default_value_t = 5_000)]
        batch_size: u64,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Audits of the log.
    #[command(subcommand)]
    Audit(Audit),
    /// The photo store.
    #[command(subcommand)]
    Media(Media),
    /// Print events after a global position as JSON lines.
    Log {
        /// Print events with a position greater than this.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Print at most this many events (without --follow).
        #[arg(long, default_value_t = 1_000)]
        limit: u64,
        /// Keep printing new events as they are committed.
        #[arg(long)]
        follow: bool,
    },
}

/// Kinds of worker.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorkerKind {
    /// Cross-posts posts to the networks they target.
    Social,
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// Print every dead letter as a JSON line.
    List,
    /// Requeue dead letters (all, or the ids given) with a fresh budget of attempts.
    Retry {
        /// Dead letter ids (as `dlq list` prints them); none: all.
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Media {
    /// Remove stored photos that no live post refers to (left by a crash
    /// between upload and command, or a failed removal) and print a JSON report.
    Gc {
        /// Leave objects younger than this many seconds: their command may be in flight.
        #[arg(long, default_value_t = 3_600)]
        grace_secs: u64,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Audit {
    /// Recompute every hash chain, replay the log in memory and compare it with
    /// every read model; exit 1 if anything is wrong.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let secret = cli.jwt_secret.clone().unwrap_or_else(|| DEV_SECRET.to_string()).into_bytes();
    let max_token_lifetime = Duration::from_secs(cli.max_token_lifetime_secs.max(1));
    match &cli.command {
        Some(Command::Schema) => {
            print!("{}", api::sdl());
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Token { role, member, store, hours }) => {
            if let Some(url) = &cli.oidc_jwks_url {
                anyhow::bail!(
                    "tokens come from the identity provider (--oidc-jwks-url {url}): the server refuses HS256 tokens"
                );
            }
            let lifetime = Duration::from_secs(hours.saturating_mul(3_600));
            if lifetime > max_token_lifetime {
                anyhow::bail!(
                    "--hours {hours} is over the maximum token lifetime of {} s (--max-token-lifetime-secs, \
                     POINTSTREAM_MAX_TOKEN_LIFETIME_SECS): the server would refuse the token",
                    max_token_lifetime.as_secs()
                );
            }
            println!("{}", token(&secret, role, member.clone(), store.clone(), lifetime)?);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // Checked before anything is opened: a server that must not start does not wait for a database first.
    let identity = match &cli.command {
        None | Some(Command::Serve) => Some(token_config(&cli, &secret, max_token_lifetime)?),
        _ => None,
    };
    let config = EventStoreConfig {
        snapshot_every: cli.snapshot_every,
        append_scripts: cli.append_scripts,
        follow_interval: Duration::from_millis(cli.follow_interval_ms.max(1)),
        ..EventStoreConfig::default()
    };
    let store = EventStore::open(&cli.database_url, config)
        .await
        .with_context(|| format!("cannot open the event store at {}", cli.database_url))?;
    projections::write_inline(&store, &cli.inline_projections)?;
    let projector = ProjectorConfig {
        batch_size: cli.projector_batch.max(1),
        lease_ttl: Duration::from_millis(cli.lease_ttl_ms.max(100)),
        ..ProjectorConfig::default()
    };
    // Only the roles that use Redis connect to it.
    let uses_redis = matches!(
        cli.command,
        None | Some(Command::Serve)
            | Some(Command::Relay)
            | Some(Command::Worker { .. })
            | Some(Command::Dlq(_))
            | Some(Command::Status)
    );
    let redis = match (&cli.redis_url, uses_redis) {
        (Some(url), true) => {
            Some(workers::redis::connect(url).await.with_context(|| format!("cannot connect to Redis at {url}"))?)
        }
        _ => None,
    };
    let vault = cli.token_key.as_deref().map(TokenVault::from_hex).transpose()?;
    let relay = RelayConfig {
        lease_ttl: Duration::from_millis(cli.lease_ttl_ms.max(100)),
        ..RelayConfig::new(&cli.stream_prefix)
    };
    let media =
        media_store(&cli, &secret, &cli.api_url.clone().unwrap_or_else(|| format!("http://{}", cli.listen))).await;
    let social = social_worker(&cli, &store, redis.clone(), vault.clone(), media.clone());
    let social_streams = social_config(&cli);
    let needs_redis = |what: &str| anyhow::anyhow!("`pointstream {what}` needs --redis-url (or REDIS_URL)");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let origins =
                api::cors::AllowedOrigins::parse(cli.cors_origins.as_deref(), listens_on_loopback(&cli.listen))
                    .map_err(|e| anyhow::anyhow!("--cors-origins: {e}"))?;
            let api = Api {
                origins,
                ws_init_timeout: Duration::from_millis(cli.ws_init_timeout_ms.max(1)),
                rate_limit: api::rate::RateLimit { per_minute: cli.rate_limit_per_minute, burst: cli.rate_limit_burst },
                ready_timeout: Duration::from_millis(cli.ready_timeout_ms.max(1)),
                listen: cli.listen.clone(),
                secret,
                dev_secret: cli.jwt_secret.is_none() && cli.oidc_jwks_url.is_none(),
                identity: identity.context("the token configuration is made for serve")?,
                read_timeout: Duration::from_millis(cli.read_timeout_ms),
                limits: Limits {
                    max_depth: cli.max_depth,
                    max_complexity: cli.max_complexity,
                    max_page: cli.max_page.max(1),
                    max_body_bytes: cli.max_body_bytes,
                    max_subscriptions: cli.max_subscriptions,
                    max_upload_bytes: cli.max_upload_bytes.max(1),
                    max_uploads: cli.max_uploads,
                    upload_memory_bytes: cli.upload_memory_bytes,
                    upload_memory_total: cli.upload_memory_total,
                    stream_uploads: cli.stream_uploads,
                    introspection: cli.introspection,
                    mutation_deadline: Duration::from_millis(cli.mutation_deadline_ms.max(1)),
                },
                tokens: vault,
                media,
                api_url: cli.api_url.clone(),
                photo_url_ttl: Duration::from_secs(cli.photo_url_ttl_secs.max(1)),
            };
            let background = Background {
                relay: redis.map(|redis| (redis, relay)),
                social: Some(social),
                streams: Some(social_streams),
            };
            serve(store, projector, Some(api), background).await
        }
        Command::Projector => serve(store, projector, None, Background::default()).await,
        Command::Relay => {
            let redis = redis.ok_or_else(|| needs_redis("relay"))?;
            until_ctrl_c("relay", |shutdown| tokio::spawn(workers::relay::run(store, redis, relay, shutdown))).await
        }
        Command::Worker { kind: WorkerKind::Social } => {
            redis.ok_or_else(|| needs_redis("worker social"))?;
            until_ctrl_c("social worker", |shutdown| tokio::spawn(async move { social.run(shutdown).await })).await
        }
        Command::Status => {
            let head = store.read_head().await?;
            let mut projections = Vec::new();
            for name in projections::PROJECTIONS.iter().chain(["share_distribution", "social"].iter()) {
                let at = projections::checkpoint::read(store.db(), name, &projections::Names::LIVE).await?;
                projections.push(serde_json::json!({ "name": name, "checkpoint": at, "lag": head.saturating_sub(at) }));
            }
            let streams = match &redis {
                Some(redis) => Some(workers::status::read(redis, &relay, &social_streams).await?),
                None => None,
            };
            let social = workers::status::social_tally(store.db(), workers::status::Tallied::Posts).await?;
            let photos = workers::status::social_tally(store.db(), workers::status::Tallied::LaterPhotos).await?;
            let status = serde_json::json!({
                "head": head, "projections": projections, "streams": streams, "social": social, "social_photos": photos,
            });
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(command) => {
            let redis = redis.ok_or_else(|| needs_redis("dlq"))?;
            let config = social_streams;
            match command {
                Dlq::List => {
                    for (id, fields) in workers::dlq::list(&redis, &config).await? {
                        println!("{}", serde_json::json!({ "id": id, "fields": fields }));
                    }
                }
                Dlq::Retry { ids } => {
                    let requeued = workers::dlq::retry(&redis, &config, &ids).await?;
                    println!("{requeued} dead letter(s) requeued");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            let summary = demo::load(&store, &media).await?;
            println!("demo data loaded: {summary} (try `pointstream serve`)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema | Command::Token { .. } => Ok(ExitCode::SUCCESS),
        Command::Replay { projection, batch_size } => replay(store, projection, batch_size).await,
        Command::Migrate => {
            tracing::info!(database = %cli.database_url, head = store.head(), "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(Audit::Verify { json }) => verify(store, json).await,
        Command::Media(Media::Gc { grace_secs, dry_run }) => {
            let live = media::gc::live_photos(&store).await?;
            let sweep = media::gc::sweep(&media, &live, Duration::from_secs(grace_secs), dry_run).await?;
            println!("{}", serde_json::json!({ "store": media.kind(), "dry_run": dry_run, "sweep": sweep }));
            Ok(ExitCode::SUCCESS)
        }
        Command::Log { after, limit, follow } => log(store, after, limit, follow).await,
    }
}

/// How `serve` runs the API.
struct Api {
    /// Browser origins allowed to call the API.
    origins: api::cors::AllowedOrigins,
    /// How long a WebSocket may take to send `connection_init`.
    ws_init_timeout: Duration,
    /// How many requests each caller may make.
    rate_limit: api::rate::RateLimit,
    /// How long `/readyz` waits for each dependency.
    ready_timeout: Duration,
    listen: String,
    secret: Vec<u8>,
    dev_secret: bool,
    /// How bearer tokens are checked.
    identity: auth::TokenConfig,
    read_timeout: Duration,
    limits: Limits,
    tokens: Option<TokenVault>,
    media: MediaStore,
    /// The API's URL, if configured; else photo URLs of the filesystem
    /// store point at the bound address.
    api_url: Option<String>,
    photo_url_ttl: Duration,
}

/// How `serve` checks bearer tokens: against the provider's keys with a
/// JWKS URL, else with `secret`. Refuses the development secret beyond
/// loopback, where anyone who has read the source could mint an admin token.
fn token_config(cli: &Cli, secret: &[u8], max_lifetime: Duration) -> anyhow::Result<auth::TokenConfig> {
    let Some(url) = &cli.oidc_jwks_url else {
        if cli.oidc_issuer.is_some() || cli.oidc_audience.is_some() {
            anyhow::bail!("--oidc-issuer and --oidc-audience need --oidc-jwks-url (POINTSTREAM_OIDC_JWKS_URL)");
        }
        if cli.jwt_secret.is_none() && !listens_on_loopback(&cli.listen) {
            anyhow::bail!(
                "refusing to serve on {} with the development secret, with which anyone can mint an admin token: \
                 set --jwt-secret (POINTSTREAM_JWT_SECRET) or --oidc-jwks-url (POINTSTREAM_OIDC_JWKS_URL), \
                 or listen on a loopback address (--listen 127.0.0.1:8080)",
                cli.listen
            );
        }
        return Ok(auth::TokenConfig { source: auth::TokenSource::Secret(secret.to_vec()), max_lifetime });
    };
    let mut oidc = auth::OidcConfig::new(url).map_err(|e| anyhow::anyhow!("--oidc-jwks-url: {e}"))?;
    oidc.issuer = cli.oidc_issuer.clone();
    oidc.audience = cli.oidc_audience.clone();
    oidc.claims = auth::ClaimNames {
        role: cli.oidc_role_claim.clone(),
        member: cli.oidc_member_claim.clone(),
        store: cli.oidc_store_claim.clone(),
    };
    oidc.leeway = Duration::from_secs(cli.oidc_leeway_secs);
    // Never zero: the keys would be fetched without pause.
    oidc.refresh = Duration::from_secs(cli.oidc_refresh_secs.max(1));
    oidc.min_refresh = Duration::from_secs(cli.oidc_min_refresh_secs);
    tracing::info!(jwks = url, issuer = ?oidc.issuer, audience = ?oidc.audience, "bearer tokens are checked against the identity provider's keys");
    if cli.jwt_secret.is_none() && cli.s3_bucket.is_none() && !listens_on_loopback(&cli.listen) {
        tracing::warn!(
            "no POINTSTREAM_JWT_SECRET: the photo URLs of the directory store are signed with the development secret"
        );
    }
    Ok(auth::TokenConfig { source: auth::TokenSource::Oidc(oidc), max_lifetime })
}

/// Whether `listen` (`host:port`) is a loopback address only.
fn listens_on_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The photo store: S3 when a bucket is configured, else the directory.
/// Filesystem photo URLs are signed with a key derived from the JWT secret
/// and point at `base_url`.
async fn media_store(cli: &Cli, secret: &[u8], base_url: &str) -> MediaStore {
    match &cli.s3_bucket {
        Some(bucket) => MediaStore::S3(
            S3Store::connect(&S3Config {
                bucket: bucket.clone(),
                endpoint: cli.s3_endpoint.clone(),
                region: cli.s3_region.clone(),
                path_style: cli.s3_path_style,
            })
            .await,
        ),
        None => MediaStore::Fs(FsStore::new(cli.media_dir.clone(), UrlSigner::new(secret), base_url)),
    }
}

/// A development token for `role`, signed with `secret`, that expires `lifetime` from now.
fn token(
    secret: &[u8],
    role: &str,
    member: Option<String>,
    store: Option<String>,
    lifetime: Duration,
) -> anyhow::Result<String> {
    let role = Role::from_name(role)
        .ok_or_else(|| anyhow::anyhow!("unknown role {role:?}: member, staff, admin or auditor"))?;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + lifetime.as_secs();
    let sub = member.clone().or_else(|| store.clone()).unwrap_or_else(|| format!("{role:?}").to_lowercase());
    let claims = Claims { sub, role, member, store, exp };
    // Refuses what the server would refuse (a member token without a member ...).
    claims.check_binding().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(auth::mint(secret, &claims)?)
}

/// The social workers' streams and limits, from the configuration.
fn social_config(cli: &Cli) -> SocialConfig {
    let consumer = cli.consumer.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        format!("{host}-{}", std::process::id())
    });
    SocialConfig {
        max_attempts: cli.social_attempts.max(1),
        claim_idle: Duration::from_millis(cli.claim_idle_ms.max(100)),
        public_url: cli.public_url.clone(),
        ..SocialConfig::new(&cli.stream_prefix, &consumer)
    }
}

/// The social worker: real networks when tokens can be read, else ones that log.
fn social_worker(
    cli: &Cli,
    store: &EventStore,
    redis: Option<Client>,
    vault: Option<TokenVault>,
    media: MediaStore,
) -> SocialWorker {
    let mut networks: BTreeMap<Provider, Arc<dyn SocialNetwork>> = BTreeMap::new();
    if vault.is_some() {
        let http = http_client(Duration::from_secs(10));
        networks.insert(Provider::Facebook, Arc::new(Facebook::new(http.clone(), cli.facebook_url.clone())));
        networks.insert(Provider::Twitter, Arc::new(Twitter::new(http, cli.twitter_url.clone())));
    } else {
        networks.insert(Provider::Facebook, Arc::new(LoggingNetwork { name: "facebook" }));
        networks.insert(Provider::Twitter, Arc::new(LoggingNetwork { name: "twitter" }));
    }
    SocialWorker::new(store.clone(), redis, vault, media, networks, social_config(cli))
}

/// Runs one role until Ctrl-C.
async fn until_ctrl_c(
    role: &str,
    start: impl FnOnce(watch::Receiver<bool>) -> tokio::task::JoinHandle<Result<(), workers::WorkerError>>,
) -> anyhow::Result<ExitCode> {
    let (stop, shutdown) = watch::channel(false);
    tracing::info!("{role} is running; Ctrl-C stops it");
    let task = start(shutdown);
    tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
    stop.send_replace(true);
    task.await??;
    Ok(ExitCode::SUCCESS)
}

/// Refreshes the stream gauges of `/metrics` every 5 s.
async fn stream_gauges(redis: Client, relay: RelayConfig, streams: SocialConfig, mut shutdown: watch::Receiver<bool>) {
    loop {
        match workers::status::read(&redis, &relay, &streams).await {
            Ok(status) => workers::status::publish(&status),
            Err(error) => tracing::warn!(%error, "cannot read the streams' status"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// What `serve` runs besides the API and the projectors.
#[derive(Default)]
struct Background {
    /// The relay, when Redis is configured.
    relay: Option<(Client, RelayConfig)>,
    /// The social worker: on Redis when configured, else on the log itself.
    social: Option<SocialWorker>,
    /// The social streams, for the stream gauges.
    streams: Option<SocialConfig>,
}

async fn serve(
    store: EventStore,
    config: ProjectorConfig,
    api: Option<Api>,
    background: Background,
) -> anyhow::Result<ExitCode> {
    let (stop, shutdown) = watch::channel(false);
    let running = projections::spawn_all(&store, &config, &shutdown);
    let mut tasks = Vec::new();
    let on_redis = background.relay.is_some();
    let ready_redis = background.relay.as_ref().map(|(redis, _)| redis.clone());
    if let Some((redis, relay)) = background.relay {
        if let Some(streams) = background.streams {
            tokio::spawn(stream_gauges(redis.clone(), relay.clone(), streams, shutdown.clone()));
        }
        // Other instances' commits wake this one as soon as they are relayed.
        let reader = redis.clone_new();
        reader.init().await.context("cannot open a second Redis connection")?;
        tasks.push(tokio::spawn(workers::relay::follow_stream(
            store.clone(),
            reader,
            relay.stream.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(workers::relay::run(store.clone(), redis, relay, shutdown.clone())));
    }
    if let Some(social) = background.social {
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if on_redis { social.run(shutdown).await } else { social.run_local(shutdown).await }
        }));
    }
    let server = match api {
        Some(api) => {
            let mut state = ApiState {
                store: store.clone(),
                read_timeout: api.read_timeout,
                limits: api.limits,
                tokens: api.tokens,
                redis: ready_redis,
                media: api.media,
                photo_url_ttl: api.photo_url_ttl,
                projectors: running.statuses.clone(),
            };
            let mut stopped = shutdown.clone();
            let signal = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let listen = api.listen.clone();
            // Only a server on the development secret hands its token to GraphiQL.
            let dev_token = if api.dev_secret {
                let lifetime = api.identity.max_lifetime.min(Duration::from_secs(24 * 3_600));
                Some(token(&api.secret, "admin", None, None, lifetime)?)
            } else {
                None
            };
            let http = api::server::HttpConfig {
                tokens: api.identity,
                origins: api.origins,
                playground: api::graphiql::Playground {
                    dev_token: dev_token.clone(),
                    introspection: api.limits.introspection,
                },
                ws_init_timeout: api.ws_init_timeout,
                rate_limit: api.rate_limit,
                ready_timeout: api.ready_timeout,
            };
            let api_url = api.api_url;
            let app = move |address: &str| {
                if let (MediaStore::Fs(store), None) = (&state.media, &api_url) {
                    state.media = MediaStore::Fs(store.serving_at(format!("http://{address}")));
                }
                api::server::app(api::build(state.clone()), state, http)
            };
            let (address, server) = api::server::bind(listen.clone(), app, signal)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("pointstream is listening: GraphiQL at http://{address}/graphql");
            if let Some(dev_token) = dev_token {
                tracing::warn!("no POINTSTREAM_JWT_SECRET: tokens are signed with the development secret");
                println!("development admin token: {dev_token}");
                println!("  (GraphiQL's Headers tab has it already)");
            }
            if store.head() == 0 {
                println!("the database is empty: `pointstream demo` loads stores, members, purchases and posts to try");
            }
            Some(tokio::spawn(server))
        }
        None => {
            tracing::info!(head = store.head(), "projector is running; Ctrl-C stops it");
            None
        }
    };
    let mut report = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.context("cannot listen for Ctrl-C")?;
                tracing::info!("stopping");
                break;
            }
            _ = report.tick() => {
                for status in &running.statuses {
                    let status = status.borrow();
                    tracing::info!(
                        projection = status.name,
                        active = status.active,
                        checkpoint = status.checkpoint,
                        lag = status.lag(),
                        events_per_second = status.events_per_second.round(),
                        "projector status"
                    );
                }
            }
        }
    }
    stop.send_replace(true);
    if let Some(server) = server {
        server.await??;
    }
    for task in running.tasks {
        task.await??;
    }
    for task in tasks {
        task.await??;
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(store: EventStore, only: Option<String>, batch_size: u64) -> anyhow::Result<ExitCode> {
    let names: Vec<&str> = match &only {
        Some(name) => vec![
            *projections::PROJECTIONS
                .iter()
                .find(|p| **p == name.as_str())
                .ok_or_else(|| projections::ProjectionError::UnknownProjection(name.clone()))?,
        ],
        None => projections::PROJECTIONS.to_vec(),
    };
    for name in names {
        let bar = ProgressBar::new(store.read_head().await?);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} events  {per_sec}  eta {eta}")
                .context("progress bar template")?
                .progress_chars("=> "),
        );
        bar.set_prefix(name);
        let progress = |position: u64, head: u64| {
            bar.set_length(head);
            bar.set_position(position);
        };
        let report = match name {
            "members" => rebuild::<Members>(&store, batch_size, progress).await?,
            "stores" => rebuild::<Stores>(&store, batch_size, progress).await?,
            "wallets" => rebuild::<Wallets>(&store, batch_size, progress).await?,
            "shares" => rebuild::<Shares>(&store, batch_size, progress).await?,
            _ => rebuild::<Posts>(&store, batch_size, progress).await?,
        };
        bar.finish_and_clear();
        println!(
            "{name}: rebuilt {} events up to position {} in {:.1?} ({:.0} events/s), swapped in",
            report.events,
            report.position,
            report.took,
            report.rate()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(store: EventStore, json: bool) -> anyhow::Result<ExitCode> {
    let report = projections::audit(&store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let problems = report.problems();
        for problem in &problems {
            println!("{problem}");
        }
        println!(
            "{} events in {} streams checked, {} read models compared, {} problems",
            report.chain.events,
            report.chain.streams,
            report.projections.len(),
            problems.len()
        );
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn log(store: EventStore, mut after: u64, limit: u64, follow: bool) -> anyhow::Result<ExitCode> {
    let mut remaining = if follow { u64::MAX } else { limit };
    while remaining > 0 {
        let page = remaining.min(1_000);
        let events = store.read_from(after, page).await?;
        for event in &events {
            let line = serde_json::json!({
                "position": event.position,
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
                "sequence": event.sequence,
                "event_type": event.event_type,
                "event_version": event.event_version,
                "payload": event.payload_json()?,
                "metadata": event.metadata()?,
                "recorded_at_us": event.recorded_at_us,
                "hash": event.hash,
            });
            println!("{line}");
            after = event.position;
        }
        remaining -= events.len() as u64;
        if (events.len() as u64) < page {
            if !follow {
                break;
            }
            store.wait_for(after, Duration::from_secs(30)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
