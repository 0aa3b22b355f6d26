//! The command line: every flag (with its environment variable and
//! default), one struct per concern (the database, the API, its limits,
//! Redis, the photo store, the social workers) flattened into [`Cli`], and
//! the subcommands. Every flag is global: it may come before or after the
//! subcommand. `config` turns what is parsed here into the libraries'
//! configurations.

use api::Limits;
use api::auth;
use clap::{Args, Parser, Subcommand};
use eventstore::{DEFAULT_DATABASE_URL, EventStoreConfig};

/// Event-sourced loyalty points backend.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub media: MediaArgs,
    #[command(flatten)]
    pub social: SocialArgs,
    #[command(flatten)]
    pub notary: NotaryArgs,
    /// How log lines are written (to stderr): `pretty` (coloured text, for a
    /// terminal), `json` (one JSON object per line, for a log collector), or
    /// `auto`: pretty on a terminal, JSON otherwise.
    #[arg(long, env = "POINTSTREAM_LOG_FORMAT", value_enum, default_value = "auto", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The event store and the projectors: where the log lives, how it is
/// written and how it is followed.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Where the event store lives: `sqlite://FILE` or `mysql://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Take a snapshot of an aggregate every this many events.
    #[arg(long, env = "POINTSTREAM_SNAPSHOT_EVERY", default_value_t = 100, global = true)]
    pub snapshot_every: u64,
    /// On MySQL, send each append's statements as one script (one round
    /// trip) when it can; false for a proxy that refuses multi-statement queries.
    #[arg(long, env = "POINTSTREAM_APPEND_SCRIPTS", default_value_t = EventStoreConfig::default().append_scripts, action = clap::ArgAction::Set, global = true)]
    pub append_scripts: bool,
    /// Projector lease lifetime in milliseconds: how soon a dead projector is taken over.
    #[arg(long, env = "POINTSTREAM_LEASE_TTL_MS", default_value_t = 10_000, global = true)]
    pub lease_ttl_ms: u64,
    /// Events per projector batch (and transaction).
    #[arg(long, env = "POINTSTREAM_PROJECTOR_BATCH", default_value_t = 1_000, global = true)]
    pub projector_batch: u64,
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
    pub inline_projections: Vec<String>,
    /// How often (ms) this process looks for events other processes committed;
    /// with Redis it also wakes as soon as the events stream grows.
    #[arg(long, env = "POINTSTREAM_FOLLOW_INTERVAL_MS", default_value_t = 100, global = true)]
    pub follow_interval_ms: u64,
    /// Replicas of the database (`mysql://...`, repeatable or
    /// comma-separated) that serve the API's queries and subscriptions'
    /// catch-up; commands and projectors stay on `--database-url`.
    #[arg(long, env = "POINTSTREAM_READ_DATABASE_URLS", value_delimiter = ',', global = true)]
    pub read_database_url: Vec<String>,
    /// A replica further behind than this (in milliseconds) leaves the rotation.
    #[arg(long, env = "POINTSTREAM_REPLICA_MAX_LAG_MS", default_value_t = 5_000, global = true)]
    pub replica_max_lag_ms: u64,
    /// How long a query carrying a client's position waits for a replica to
    /// apply it before the primary answers, in milliseconds.
    #[arg(long, env = "POINTSTREAM_REPLICA_WAIT_MS", default_value_t = 1_000, global = true)]
    pub replica_wait_ms: u64,
    /// How often the replicas' positions are read, in milliseconds.
    #[arg(long, env = "POINTSTREAM_REPLICA_POLL_MS", default_value_t = 20, global = true)]
    pub replica_poll_ms: u64,
}

/// The API: where it listens, how bearer tokens are checked, its timeouts,
/// who may call it and how often, and the URLs it hands out.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address the API listens on (port 0: any free port).
    #[arg(long, env = "POINTSTREAM_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: String,
    /// Secret that signs and checks bearer tokens (HS256). Without it (and
    /// without `--oidc-jwks-url`) a fixed development secret is used, `serve`
    /// says so, and refuses to listen beyond loopback.
    #[arg(long, env = "POINTSTREAM_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// An OpenID Connect provider's JWKS URL: bearer tokens are checked
    /// against its keys (RS256, ES256, EdDSA), and HS256 tokens are refused.
    #[arg(long, env = "POINTSTREAM_OIDC_JWKS_URL", global = true)]
    pub oidc_jwks_url: Option<String>,
    /// The issuer (`iss`) every provider token must carry.
    #[arg(long, env = "POINTSTREAM_OIDC_ISSUER", global = true)]
    pub oidc_issuer: Option<String>,
    /// The audience every provider token's `aud` must name.
    #[arg(long, env = "POINTSTREAM_OIDC_AUDIENCE", global = true)]
    pub oidc_audience: Option<String>,
    /// The claim that holds the caller's role (a string, or an array whose
    /// first pointstream role counts); a dotted path reaches into objects.
    #[arg(long, env = "POINTSTREAM_OIDC_ROLE_CLAIM", default_value = "role", global = true)]
    pub oidc_role_claim: String,
    /// The claim that holds the member a member token acts as.
    #[arg(long, env = "POINTSTREAM_OIDC_MEMBER_CLAIM", default_value = "member", global = true)]
    pub oidc_member_claim: String,
    /// The claim that holds the store a staff token works at.
    #[arg(long, env = "POINTSTREAM_OIDC_STORE_CLAIM", default_value = "store", global = true)]
    pub oidc_store_claim: String,
    /// How far the provider's clock may be off, in seconds (`exp`, `nbf`, `iat`).
    #[arg(long, env = "POINTSTREAM_OIDC_LEEWAY_SECS", default_value_t = auth::jwks::DEFAULT_LEEWAY_SECS, global = true)]
    pub oidc_leeway_secs: u64,
    /// How often the provider's keys are fetched again, in seconds.
    #[arg(long, env = "POINTSTREAM_OIDC_REFRESH_SECS", default_value_t = auth::jwks::DEFAULT_REFRESH_SECS, global = true)]
    pub oidc_refresh_secs: u64,
    /// The least time between two fetches of the keys for tokens that name
    /// an unknown key (and before retrying a failed fetch), in seconds.
    #[arg(long, env = "POINTSTREAM_OIDC_MIN_REFRESH_SECS", default_value_t = auth::jwks::DEFAULT_MIN_REFRESH_SECS, global = true)]
    pub oidc_min_refresh_secs: u64,
    /// The longest a bearer token may live, in seconds: `exp` − `iat`, or
    /// `exp` − now for a token without `iat`.
    #[arg(long, env = "POINTSTREAM_MAX_TOKEN_LIFETIME_SECS", default_value_t = auth::DEFAULT_MAX_TOKEN_LIFETIME_SECS, global = true)]
    pub max_token_lifetime_secs: u64,
    /// How long a mutation waits for its read model to show the change, in milliseconds.
    #[arg(long, env = "POINTSTREAM_READ_TIMEOUT_MS", default_value_t = 5_000, global = true)]
    pub read_timeout_ms: u64,
    /// Whether the API answers introspection (`__schema`, `__type`): turn it
    /// off in production if the schema is not to be public.
    #[arg(long, env = "POINTSTREAM_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub introspection: bool,
    /// Browser origins allowed to call the API, comma-separated
    /// (`https://app.example.com,https://admin.example.com`, or `loopback`).
    /// Unset: loopback origins when listening on loopback, none otherwise.
    #[arg(long, env = "POINTSTREAM_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// Requests per minute each caller (a token's subject, else an address)
    /// may make, sustained; 0 turns rate limiting off.
    #[arg(long, env = "POINTSTREAM_RATE_LIMIT_PER_MINUTE", default_value_t = api::rate::RateLimit::default().per_minute, global = true)]
    pub rate_limit_per_minute: u32,
    /// Requests a caller may make at once on top of the sustained rate.
    #[arg(long, env = "POINTSTREAM_RATE_LIMIT_BURST", default_value_t = api::rate::RateLimit::default().burst, global = true)]
    pub rate_limit_burst: u32,
    /// How long a mutation's command may take, in milliseconds, before the
    /// client is told its outcome is unknown (`OUTCOME_UNKNOWN`; a retry with
    /// the same idempotency key is safe).
    #[arg(long, env = "POINTSTREAM_MUTATION_DEADLINE_MS", default_value_t = 10_000, global = true)]
    pub mutation_deadline_ms: u64,
    /// How long `/readyz` waits for each dependency (database, photo store,
    /// Redis), in milliseconds.
    #[arg(long, env = "POINTSTREAM_READY_TIMEOUT_MS", default_value_t = 2_000, global = true)]
    pub ready_timeout_ms: u64,
    /// How long a stopping `serve` lets requests in flight finish, in
    /// milliseconds, once it has stopped accepting connections (on SIGTERM or Ctrl-C).
    #[arg(long, env = "POINTSTREAM_SHUTDOWN_GRACE_MS", default_value_t = 10_000, global = true)]
    pub shutdown_grace_ms: u64,
    /// How long a WebSocket may take to send `connection_init`, in milliseconds.
    #[arg(long, env = "POINTSTREAM_WS_INIT_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub ws_init_timeout_ms: u64,
    /// This API's URL as clients reach it: photo URLs of the filesystem store
    /// point at `{url}/media/...` (default: the address it listens on).
    #[arg(long, env = "POINTSTREAM_API_URL", global = true)]
    pub api_url: Option<String>,
    /// How long a photo URL handed out stays good, in seconds.
    #[arg(long, env = "POINTSTREAM_PHOTO_URL_TTL_SECS", default_value_t = 900, global = true)]
    pub photo_url_ttl_secs: u64,
}

/// What one request or connection may ask of the API: query depth and
/// complexity, page, body, subscriptions and uploads.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Deepest GraphQL selection nesting accepted.
    #[arg(long, env = "POINTSTREAM_MAX_DEPTH", default_value_t = 12, global = true)]
    pub max_depth: usize,
    /// Highest GraphQL query complexity accepted.
    #[arg(long, env = "POINTSTREAM_MAX_COMPLEXITY", default_value_t = 5_000, global = true)]
    pub max_complexity: usize,
    /// Largest page a paginated field returns.
    #[arg(long, env = "POINTSTREAM_MAX_PAGE", default_value_t = 100, global = true)]
    pub max_page: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "POINTSTREAM_MAX_BODY_BYTES", default_value_t = 1 << 20, global = true)]
    pub max_body_bytes: usize,
    /// Most subscriptions one WebSocket connection may hold at once.
    #[arg(long, env = "POINTSTREAM_MAX_SUBSCRIPTIONS", default_value_t = 32, global = true)]
    pub max_subscriptions: usize,
    /// Largest photo upload accepted, in bytes.
    #[arg(long, env = "POINTSTREAM_MAX_UPLOAD_BYTES", default_value_t = 10 << 20, global = true)]
    pub max_upload_bytes: usize,
    /// Most files one request may upload.
    #[arg(long, env = "POINTSTREAM_MAX_UPLOADS", default_value_t = 10, global = true)]
    pub max_uploads: usize,
    /// Uploads of a request up to this many bytes are held in memory rather
    /// than in temporary files (a file is, while it is within this size).
    #[arg(long, env = "POINTSTREAM_UPLOAD_MEMORY_BYTES", default_value_t = Limits::default().upload_memory_bytes, global = true)]
    pub upload_memory_bytes: usize,
    /// Memory all uploads held in memory may take together, in bytes.
    #[arg(long, env = "POINTSTREAM_UPLOAD_MEMORY_TOTAL", default_value_t = Limits::default().upload_memory_total, global = true)]
    pub upload_memory_total: usize,
    /// Put a request's only photo into S3 while it arrives (when the request
    /// declares its length), rather than once it is all in.
    #[arg(long, env = "POINTSTREAM_STREAM_UPLOADS", default_value_t = Limits::default().stream_uploads, action = clap::ArgAction::Set, global = true)]
    pub stream_uploads: bool,
}

/// Redis, through which events are fanned out and the social workers share
/// their work.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis to fan events out through: one server (`redis://host:port`),
    /// a primary behind Sentinel
    /// (`redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port`)
    /// or a cluster (`redis-cluster://host:port?node=host:port`). Without it
    /// nothing is relayed.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Prefix of pointstream's Redis keys, which are named `{prefix}:name`
    /// (braces included: one cluster hash tag), events going to `{prefix}:events`.
    #[arg(long, env = "POINTSTREAM_STREAM_PREFIX", default_value = "pointstream", global = true)]
    pub stream_prefix: String,
}

/// The photo store: an S3 bucket when one is configured, else a directory.
#[derive(Debug, Args)]
pub struct MediaArgs {
    /// Directory of the filesystem photo store (used when no S3 bucket is configured).
    #[arg(long, env = "POINTSTREAM_MEDIA_DIR", default_value = "pointstream-media", global = true)]
    pub media_dir: std::path::PathBuf,
    /// S3 bucket for photos; setting it stores photos in S3 instead of
    /// `--media-dir`. Credentials come from the usual AWS variables.
    #[arg(long, env = "S3_BUCKET", global = true)]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL, for S3-compatible services (default: AWS).
    #[arg(long, env = "S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// Address buckets in the URL path, as most S3-compatible services need.
    #[arg(long, env = "S3_PATH_STYLE", global = true)]
    pub s3_path_style: bool,
}

/// The social workers: the sealed access tokens, the networks, the posts'
/// links and the retries.
#[derive(Debug, Args)]
pub struct SocialArgs {
    /// 64 hex digits: the key that seals linked accounts' access tokens. Without
    /// it no token is kept and the social workers' networks only log.
    #[arg(long, env = "POINTSTREAM_TOKEN_KEY", global = true, hide_env_values = true)]
    pub token_key: Option<String>,
    /// Facebook Graph API base URL.
    #[arg(long, env = "POINTSTREAM_FACEBOOK_URL", default_value = "https://graph.facebook.com/v19.0", global = true)]
    pub facebook_url: String,
    /// Twitter API base URL.
    #[arg(long, env = "POINTSTREAM_TWITTER_URL", default_value = "https://api.twitter.com", global = true)]
    pub twitter_url: String,
    /// The app's public URL: cross-posts link to `{url}/posts/{id}`.
    #[arg(long, env = "POINTSTREAM_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Attempts per network before a post goes to the dead letters.
    #[arg(long, env = "POINTSTREAM_SOCIAL_ATTEMPTS", default_value_t = 5, global = true)]
    pub social_attempts: u32,
    /// A worker's entries idle this long (ms) are taken over by another.
    #[arg(long, env = "POINTSTREAM_CLAIM_IDLE_MS", default_value_t = 30_000, global = true)]
    pub claim_idle_ms: u64,
    /// This worker's name in its consumer group (default: host and process id).
    #[arg(long, env = "POINTSTREAM_CONSUMER", global = true)]
    pub consumer: Option<String>,
    /// Whether `serve` runs a social worker itself; `false` when
    /// `pointstream worker social` processes do all the cross-posting.
    #[arg(long, env = "POINTSTREAM_SERVE_SOCIAL", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub serve_social: bool,
    /// pointstream's OAuth 2.0 client id at X (linking, and refreshing tokens).
    #[arg(long, env = "POINTSTREAM_TWITTER_CLIENT_ID", global = true)]
    pub twitter_client_id: Option<String>,
    /// Its client secret.
    #[arg(long, env = "POINTSTREAM_TWITTER_CLIENT_SECRET", global = true, hide_env_values = true)]
    pub twitter_client_secret: Option<String>,
    /// X's authorization page.
    #[arg(
        long,
        env = "POINTSTREAM_TWITTER_AUTHORIZE_URL",
        default_value = "https://x.com/i/oauth2/authorize",
        global = true
    )]
    pub twitter_authorize_url: String,
    /// X's token endpoint.
    #[arg(
        long,
        env = "POINTSTREAM_TWITTER_TOKEN_URL",
        default_value = "https://api.x.com/2/oauth2/token",
        global = true
    )]
    pub twitter_token_url: String,
    /// pointstream's Facebook app id (linking Pages).
    #[arg(long, env = "POINTSTREAM_FACEBOOK_APP_ID", global = true)]
    pub facebook_app_id: Option<String>,
    /// Its app secret.
    #[arg(long, env = "POINTSTREAM_FACEBOOK_APP_SECRET", global = true, hide_env_values = true)]
    pub facebook_app_secret: Option<String>,
    /// Facebook Login's dialog.
    #[arg(
        long,
        env = "POINTSTREAM_FACEBOOK_DIALOG_URL",
        default_value = "https://www.facebook.com/v19.0/dialog/oauth",
        global = true
    )]
    pub facebook_dialog_url: String,
    /// The front end's page the browser returns to after linking (with
    /// `?linked=`, `?choose=` or `?error=`); without it the callback shows a
    /// short page of its own.
    #[arg(long, env = "POINTSTREAM_OAUTH_RETURN_URL", global = true)]
    pub oauth_return_url: Option<String>,
    /// How long a started link stays good (seconds).
    #[arg(long, env = "POINTSTREAM_OAUTH_STATE_TTL_SECS", default_value_t = 600, global = true)]
    pub oauth_state_ttl_secs: u64,
    /// The name pointstream registers under at Mastodon instances.
    #[arg(long, env = "POINTSTREAM_OAUTH_CLIENT_NAME", default_value = "pointstream", global = true)]
    pub oauth_client_name: String,
    /// Bluesky's default PDS.
    #[arg(long, env = "POINTSTREAM_BLUESKY_SERVICE", default_value = "https://bsky.social", global = true)]
    pub bluesky_service: String,
    /// Let Mastodon instances and Bluesky PDSs be `http://` or loopback
    /// addresses (development and tests only: members choose them).
    #[arg(long, env = "POINTSTREAM_INSECURE_INSTANCES", global = true)]
    pub insecure_instances: bool,
}

/// The notary: the Merkle tree over the log, the key its digests are signed
/// with, how often, and where they are published.
#[derive(Debug, Args)]
pub struct NotaryArgs {
    /// File holding the Ed25519 key digests are signed with (64 hex digits,
    /// as `pointstream keygen` writes it). Without it a fixed development
    /// key is used, and `serve` says so: its digests prove nothing.
    #[arg(long, env = "POINTSTREAM_DIGEST_KEY_FILE", global = true)]
    pub digest_key_file: Option<std::path::PathBuf>,
    /// Sign a digest once the log has grown by this many events...
    #[arg(long, env = "POINTSTREAM_DIGEST_EVERY_EVENTS", default_value_t = 1_000, global = true)]
    pub digest_every_events: u64,
    /// ... or once this many seconds have passed and it has grown at all.
    #[arg(long, env = "POINTSTREAM_DIGEST_EVERY_SECS", default_value_t = 60, global = true)]
    pub digest_every_secs: u64,
    /// Directory digests are published to (used when no digest bucket is configured).
    #[arg(long, env = "POINTSTREAM_DIGEST_DIR", default_value = "pointstream-digests", global = true)]
    pub digest_dir: std::path::PathBuf,
    /// S3 bucket digests are published to (with `--s3-endpoint`,
    /// `--s3-region` and `--s3-path-style` of the photo store).
    #[arg(long, env = "POINTSTREAM_DIGEST_BUCKET", global = true)]
    pub digest_bucket: Option<String>,
    /// Prefix of the digests' keys in the bucket.
    #[arg(long, env = "POINTSTREAM_DIGEST_PREFIX", default_value = "digests/", global = true)]
    pub digest_prefix: String,
    /// Days each digest object is kept under S3 Object Lock (compliance
    /// mode; the bucket must have Object Lock enabled); 0 asks for no lock.
    #[arg(long, env = "POINTSTREAM_DIGEST_RETAIN_DAYS", default_value_t = 0, global = true)]
    pub digest_retain_days: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// Events per page: each is applied in memory while the page before
        /// is written, one transaction each.
        #[arg(long, default_value_t = 20_000)]
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
        /// Print at most this many events (without --follow; default 1,000,
        /// or every event with --export).
        #[arg(long)]
        limit: Option<u64>,
        /// Keep printing new events as they are committed.
        #[arg(long)]
        follow: bool,
        /// Print every event as stored, payload and metadata as their exact
        /// strings (what `audit verify --events` reads); all of them unless
        /// `--limit` is given.
        #[arg(long)]
        export: bool,
    },
    /// Write a new Ed25519 key for signing digests to a file (mode 0600) and
    /// print its public key and key id, which auditors pin.
    Keygen {
        /// The key file to write (an existing file is never overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print the latest signed digest of the log (its JSON document).
    Digest {
        /// Extend the Merkle tree to the log's head and sign a digest now.
        #[arg(long)]
        sign: bool,
        /// Print every digest, one JSON document per line.
        #[arg(long)]
        all: bool,
        /// Print the digest of exactly this many events.
        #[arg(long)]
        tree_size: Option<u64>,
        /// Print the signing key's public key and key id instead.
        #[arg(long)]
        public_key: bool,
    },
    /// Merkle proofs, as JSON.
    #[command(subcommand)]
    Proof(Proof),
}

#[derive(Debug, Subcommand)]
pub enum Proof {
    /// That the event at a position is in the tree of a size (default: the latest digest's).
    Inclusion {
        #[arg(long)]
        position: u64,
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// That the tree of one size extends the tree of a smaller one.
    Consistency {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text, coloured only on a terminal.
    Pretty,
    /// One JSON object per line, with the fields of the spans it is in.
    Json,
}

/// Kinds of worker.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WorkerKind {
    /// Cross-posts posts to the networks they target.
    Social,
}

#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// Print every dead letter as a JSON line.
    List,
    /// Requeue dead letters (all, or the ids given) with a fresh budget of attempts.
    Retry {
        /// Dead letter ids (as `dlq list` prints them); none: all.
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Media {
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
pub enum Audit {
    /// Recompute every hash chain, replay the log in memory and compare it with
    /// every read model; exit 1 if anything is wrong. With `--digest`, also
    /// check signed digests against the log (from the database, or offline
    /// from `--events`).
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A file of signed digests (JSON documents, one or more per file,
        /// as published or as `pointstream digest` prints them); repeatable.
        #[arg(long)]
        digest: Vec<std::path::PathBuf>,
        /// The public key the digests must be signed with (64 hex digits, or
        /// a file holding them): the one you pinned, never one the server
        /// sends along.
        #[arg(long)]
        public_key: Option<String>,
        /// Verify offline against this export (`pointstream log --export`)
        /// instead of the database; `-` reads standard input.
        #[arg(long)]
        events: Option<std::path::PathBuf>,
    },
}
