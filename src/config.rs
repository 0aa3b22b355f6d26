//! The configuration: the parsed command line turned into what the
//! libraries take (the event store's and the projectors' settings, the
//! relay's and the social workers' streams, the photo store, how bearer
//! tokens are checked, the API's limits and HTTP layer). Nothing here runs
//! anything; opening the photo store is the one thing that waits (on S3's
//! configuration).

use std::time::Duration;

use api::Limits;
use api::auth::{self, Claims, Role};
use eventstore::EventStoreConfig;
use media::{FsStore, MediaStore, S3Config, S3Store, UrlSigner};
use projections::ProjectorConfig;
use workers::relay::RelayConfig;
use workers::social::SocialConfig;
use workers::tokens::TokenVault;

use crate::cli::Cli;
use crate::serve::Api;

/// Signs development tokens when no secret is configured; never for production.
const DEV_SECRET: &str = "pointstream-development-secret";

/// The secret that signs and checks bearer tokens: the configured one, else the development secret.
pub fn secret(cli: &Cli) -> Vec<u8> {
    cli.jwt_secret.clone().unwrap_or_else(|| DEV_SECRET.to_string()).into_bytes()
}

/// The longest a bearer token may live (never zero).
pub fn max_token_lifetime(cli: &Cli) -> Duration {
    Duration::from_secs(cli.max_token_lifetime_secs.max(1))
}

/// How `serve` checks bearer tokens: against the provider's keys with a
/// JWKS URL, else with `secret`. Refuses the development secret beyond
/// loopback, where anyone who has read the source could mint an admin token.
pub fn token_config(cli: &Cli, secret: &[u8], max_lifetime: Duration) -> anyhow::Result<auth::TokenConfig> {
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

/// A development token for `role`, signed with `secret`, that expires `lifetime` from now.
pub fn dev_token(
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

/// The event store's settings.
pub fn event_store(cli: &Cli) -> EventStoreConfig {
    EventStoreConfig {
        snapshot_every: cli.snapshot_every,
        append_scripts: cli.append_scripts,
        follow_interval: Duration::from_millis(cli.follow_interval_ms.max(1)),
        ..EventStoreConfig::default()
    }
}

/// The projectors' batches and leases.
pub fn projector(cli: &Cli) -> ProjectorConfig {
    ProjectorConfig {
        batch_size: cli.projector_batch.max(1),
        lease_ttl: Duration::from_millis(cli.lease_ttl_ms.max(100)),
        ..ProjectorConfig::default()
    }
}

/// The relay's stream and lease.
pub fn relay(cli: &Cli) -> RelayConfig {
    RelayConfig { lease_ttl: Duration::from_millis(cli.lease_ttl_ms.max(100)), ..RelayConfig::new(&cli.stream_prefix) }
}

/// The photo store: S3 when a bucket is configured, else the directory.
/// Filesystem photo URLs are signed with a key derived from the JWT secret
/// and point at `base_url`.
pub async fn media_store(cli: &Cli, secret: &[u8], base_url: &str) -> MediaStore {
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

/// The social workers' streams and limits, from the configuration.
pub fn social_config(cli: &Cli) -> SocialConfig {
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

/// How `serve` runs the API: its limits and its HTTP layer, checking bearer
/// tokens as `identity` says.
pub fn api(
    cli: &Cli,
    secret: &[u8],
    identity: auth::TokenConfig,
    tokens: Option<TokenVault>,
    media: MediaStore,
) -> anyhow::Result<Api> {
    let origins = api::cors::AllowedOrigins::parse(cli.cors_origins.as_deref(), listens_on_loopback(&cli.listen))
        .map_err(|e| anyhow::anyhow!("--cors-origins: {e}"))?;
    let limits = Limits {
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
    };
    // Only a server on the development secret hands its token to GraphiQL.
    let dev_token = if cli.jwt_secret.is_none() && cli.oidc_jwks_url.is_none() {
        let lifetime = identity.max_lifetime.min(Duration::from_secs(24 * 3_600));
        Some(dev_token(secret, "admin", None, None, lifetime)?)
    } else {
        None
    };
    let http = api::server::HttpConfig {
        tokens: identity,
        origins,
        playground: api::graphiql::Playground { dev_token, introspection: limits.introspection },
        ws_init_timeout: Duration::from_millis(cli.ws_init_timeout_ms.max(1)),
        rate_limit: api::rate::RateLimit { per_minute: cli.rate_limit_per_minute, burst: cli.rate_limit_burst },
        ready_timeout: Duration::from_millis(cli.ready_timeout_ms.max(1)),
    };
    Ok(Api {
        listen: cli.listen.clone(),
        http,
        read_timeout: Duration::from_millis(cli.read_timeout_ms),
        limits,
        tokens,
        media,
        api_url: cli.api_url.clone(),
        photo_url_ttl: Duration::from_secs(cli.photo_url_ttl_secs.max(1)),
    })
}
