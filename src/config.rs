//! The configuration: the parsed command line turned into what the
//! libraries take (the event store's and the projectors' settings, the
//! relay's and the social workers' streams, the photo store, how bearer
//! tokens are checked, the API's limits and HTTP layer). Each builder takes
//! the groups of flags it reads (`cli`'s `DatabaseArgs`, `ApiArgs` ...), not
//! the whole command line. Nothing here runs anything; opening the photo
//! store is the one thing that waits (on S3's configuration).

use std::time::Duration;

use api::Limits;
use api::auth::{self, Claims, Role};
use eventstore::EventStoreConfig;
use media::{FsStore, MediaStore, S3Config, S3Store, UrlSigner};
use projections::ProjectorConfig;
use workers::relay::RelayConfig;
use workers::social::SocialConfig;
use workers::tokens::TokenVault;

use crate::cli::{ApiArgs, DatabaseArgs, LimitArgs, MediaArgs, NotaryArgs, RedisArgs, SocialArgs};
use crate::serve::Api;

/// Signs development tokens when no secret is configured; never for production.
const DEV_SECRET: &str = "pointstream-development-secret";

/// The secret that signs and checks bearer tokens: the configured one, else the development secret.
pub fn secret(api: &ApiArgs) -> Vec<u8> {
    api.jwt_secret.clone().unwrap_or_else(|| DEV_SECRET.to_string()).into_bytes()
}

/// The longest a bearer token may live (never zero).
pub fn max_token_lifetime(api: &ApiArgs) -> Duration {
    Duration::from_secs(api.max_token_lifetime_secs.max(1))
}

/// How `serve` checks bearer tokens: against the provider's keys with a
/// JWKS URL, else with `secret`. Refuses the development secret beyond
/// loopback, where anyone who has read the source could mint an admin token.
/// `media` tells whether photo URLs are signed with the secret too.
pub fn token_config(
    api: &ApiArgs,
    media: &MediaArgs,
    secret: &[u8],
    max_lifetime: Duration,
) -> anyhow::Result<auth::TokenConfig> {
    let Some(url) = &api.oidc_jwks_url else {
        if api.oidc_issuer.is_some() || api.oidc_audience.is_some() {
            anyhow::bail!("--oidc-issuer and --oidc-audience need --oidc-jwks-url (POINTSTREAM_OIDC_JWKS_URL)");
        }
        if api.jwt_secret.is_none() && !listens_on_loopback(&api.listen) {
            anyhow::bail!(
                "refusing to serve on {} with the development secret, with which anyone can mint an admin token: \
                 set --jwt-secret (POINTSTREAM_JWT_SECRET) or --oidc-jwks-url (POINTSTREAM_OIDC_JWKS_URL), \
                 or listen on a loopback address (--listen 127.0.0.1:8080)",
                api.listen
            );
        }
        return Ok(auth::TokenConfig { source: auth::TokenSource::Secret(secret.to_vec()), max_lifetime });
    };
    let mut oidc = auth::OidcConfig::new(url).map_err(|e| anyhow::anyhow!("--oidc-jwks-url: {e}"))?;
    oidc.issuer = api.oidc_issuer.clone();
    oidc.audience = api.oidc_audience.clone();
    oidc.claims = auth::ClaimNames {
        role: api.oidc_role_claim.clone(),
        member: api.oidc_member_claim.clone(),
        store: api.oidc_store_claim.clone(),
    };
    oidc.leeway = Duration::from_secs(api.oidc_leeway_secs);
    // Never zero: the keys would be fetched without pause.
    oidc.refresh = Duration::from_secs(api.oidc_refresh_secs.max(1));
    oidc.min_refresh = Duration::from_secs(api.oidc_min_refresh_secs);
    tracing::info!(jwks = url, issuer = ?oidc.issuer, audience = ?oidc.audience, "bearer tokens are checked against the identity provider's keys");
    if api.jwt_secret.is_none() && media.s3_bucket.is_none() && !listens_on_loopback(&api.listen) {
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
pub fn event_store(database: &DatabaseArgs) -> EventStoreConfig {
    EventStoreConfig {
        snapshot_every: database.snapshot_every,
        append_scripts: database.append_scripts,
        follow_interval: Duration::from_millis(database.follow_interval_ms.max(1)),
        ..EventStoreConfig::default()
    }
}

/// The projectors' batches and leases.
pub fn projector(database: &DatabaseArgs) -> ProjectorConfig {
    ProjectorConfig {
        batch_size: database.projector_batch.max(1),
        lease_ttl: Duration::from_millis(database.lease_ttl_ms.max(100)),
        ..ProjectorConfig::default()
    }
}

/// The relay's stream and lease (as long as the projectors').
pub fn relay(database: &DatabaseArgs, redis: &RedisArgs) -> RelayConfig {
    RelayConfig {
        lease_ttl: Duration::from_millis(database.lease_ttl_ms.max(100)),
        ..RelayConfig::new(&redis.stream_prefix)
    }
}

/// The photo store: S3 when a bucket is configured, else the directory.
/// Filesystem photo URLs are signed with a key derived from the JWT secret
/// and point at `base_url`.
pub async fn media_store(media: &MediaArgs, secret: &[u8], base_url: &str) -> MediaStore {
    match &media.s3_bucket {
        Some(bucket) => MediaStore::S3(
            S3Store::connect(&S3Config {
                bucket: bucket.clone(),
                endpoint: media.s3_endpoint.clone(),
                region: media.s3_region.clone(),
                path_style: media.s3_path_style,
            })
            .await,
        ),
        None => MediaStore::Fs(FsStore::new(media.media_dir.clone(), UrlSigner::new(secret), base_url)),
    }
}

/// The key digests are signed with: the key file's, else the development key.
pub fn digest_signer(notary: &NotaryArgs) -> anyhow::Result<eventstore::merkle::Signer> {
    match &notary.digest_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("--digest-key-file {}: {err}", path.display()))?;
            eventstore::merkle::Signer::from_seed_hex(&text)
                .map_err(|err| anyhow::anyhow!("--digest-key-file {}: {err}", path.display()))
        }
        None => Ok(eventstore::merkle::Signer::development()),
    }
}

/// How often the notary signs.
pub fn notary(notary: &NotaryArgs, database: &DatabaseArgs) -> projections::notary::NotaryConfig {
    projections::notary::NotaryConfig {
        every_events: notary.digest_every_events.max(1),
        every: Duration::from_secs(notary.digest_every_secs),
        lease_ttl: Duration::from_millis(database.lease_ttl_ms.max(1)),
        ..projections::notary::NotaryConfig::default()
    }
}

/// Where digests are published: the digest bucket, else the directory.
pub async fn digest_publisher(notary: &NotaryArgs, media: &MediaArgs) -> media::digests::DigestPublisher {
    match &notary.digest_bucket {
        Some(bucket) => media::digests::DigestPublisher::S3 {
            store: S3Store::connect(&S3Config {
                bucket: bucket.clone(),
                endpoint: media.s3_endpoint.clone(),
                region: media.s3_region.clone(),
                path_style: media.s3_path_style,
            })
            .await,
            prefix: notary.digest_prefix.clone(),
            retain: (notary.digest_retain_days > 0).then(|| Duration::from_secs(notary.digest_retain_days * 86_400)),
        },
        None => media::digests::DigestPublisher::Dir(notary.digest_dir.clone()),
    }
}

/// pointstream as an OAuth 2.0 app at X, when its client id and secret are given.
pub fn twitter_app(social: &SocialArgs) -> Option<std::sync::Arc<workers::oauth::OAuthApp>> {
    let (Some(client_id), Some(client_secret)) = (&social.twitter_client_id, &social.twitter_client_secret) else {
        return None;
    };
    Some(std::sync::Arc::new(workers::oauth::OAuthApp {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        authorize_url: social.twitter_authorize_url.clone(),
        token_url: social.twitter_token_url.clone(),
        scopes: "tweet.read tweet.write users.read media.write offline.access".into(),
        basic_auth: true,
    }))
}

/// How the API links social accounts; `None` without a token key (nothing
/// could be sealed). Networks send the browser back to the API's public URL.
pub fn social_links(social: &SocialArgs, api: &ApiArgs, vault: Option<&TokenVault>) -> Option<api::links::SocialLinks> {
    let vault = vault?.clone();
    let facebook = match (&social.facebook_app_id, &social.facebook_app_secret) {
        (Some(app_id), Some(secret)) => Some(api::links::FacebookLinking {
            app: workers::oauth::OAuthApp {
                client_id: app_id.clone(),
                client_secret: secret.clone(),
                authorize_url: social.facebook_dialog_url.clone(),
                token_url: format!("{}/oauth/access_token", social.facebook_url.trim_end_matches('/')),
                scopes: "pages_show_list,pages_manage_posts,pages_read_engagement".into(),
                basic_auth: false,
            },
            graph: social.facebook_url.clone(),
        }),
        _ => None,
    };
    let config = api::links::LinkConfig {
        callback_base: api.api_url.clone().unwrap_or_else(|| format!("http://{}", api.listen)),
        return_url: social.oauth_return_url.clone(),
        state_ttl: Duration::from_secs(social.oauth_state_ttl_secs.max(1)),
        twitter: twitter_app(social).map(|app| api::links::TwitterLinking { app, api: social.twitter_url.clone() }),
        facebook,
        client_name: social.oauth_client_name.clone(),
        bluesky_service: social.bluesky_service.clone(),
        insecure_instances: social.insecure_instances,
    };
    Some(api::links::SocialLinks::new(config, vault))
}

/// The social workers' streams (under Redis's prefix) and limits.
pub fn social_config(social: &SocialArgs, redis: &RedisArgs) -> SocialConfig {
    let consumer = social.consumer.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        format!("{host}-{}", std::process::id())
    });
    SocialConfig {
        max_attempts: social.social_attempts.max(1),
        claim_idle: Duration::from_millis(social.claim_idle_ms.max(100)),
        public_url: social.public_url.clone(),
        ..SocialConfig::new(&redis.stream_prefix, &consumer)
    }
}

/// How `serve` runs the API: its limits and its HTTP layer, checking bearer
/// tokens as `identity` says.
pub fn api(
    database: &DatabaseArgs,
    api_args: &ApiArgs,
    limit_args: &LimitArgs,
    secret: &[u8],
    identity: auth::TokenConfig,
    tokens: Option<TokenVault>,
    media: MediaStore,
) -> anyhow::Result<Api> {
    let origins =
        api::cors::AllowedOrigins::parse(api_args.cors_origins.as_deref(), listens_on_loopback(&api_args.listen))
            .map_err(|e| anyhow::anyhow!("--cors-origins: {e}"))?;
    let limits = Limits {
        max_depth: limit_args.max_depth,
        max_complexity: limit_args.max_complexity,
        max_page: limit_args.max_page.max(1),
        max_body_bytes: limit_args.max_body_bytes,
        max_subscriptions: limit_args.max_subscriptions,
        max_upload_bytes: limit_args.max_upload_bytes.max(1),
        max_uploads: limit_args.max_uploads,
        upload_memory_bytes: limit_args.upload_memory_bytes,
        upload_memory_total: limit_args.upload_memory_total,
        stream_uploads: limit_args.stream_uploads,
        introspection: api_args.introspection,
        mutation_deadline: Duration::from_millis(api_args.mutation_deadline_ms.max(1)),
    };
    // Only a server on the development secret hands its token to GraphiQL.
    let dev_token = if api_args.jwt_secret.is_none() && api_args.oidc_jwks_url.is_none() {
        let lifetime = identity.max_lifetime.min(Duration::from_secs(24 * 3_600));
        Some(dev_token(secret, "admin", None, None, lifetime)?)
    } else {
        None
    };
    let http = api::server::HttpConfig {
        tokens: identity,
        origins,
        playground: api::graphiql::Playground { dev_token, introspection: limits.introspection },
        ws_init_timeout: Duration::from_millis(api_args.ws_init_timeout_ms.max(1)),
        rate_limit: api::rate::RateLimit {
            per_minute: api_args.rate_limit_per_minute,
            burst: api_args.rate_limit_burst,
        },
        ready_timeout: Duration::from_millis(api_args.ready_timeout_ms.max(1)),
        // `serve` turns it on when it starts stopping.
        draining: api::server::Draining::default(),
    };
    Ok(Api {
        listen: api_args.listen.clone(),
        http,
        read_timeout: Duration::from_millis(api_args.read_timeout_ms),
        limits,
        tokens,
        // Set by the caller (`social_links`), which has the social flags.
        links: None,
        media,
        api_url: api_args.api_url.clone(),
        photo_url_ttl: Duration::from_secs(api_args.photo_url_ttl_secs.max(1)),
        shutdown_grace: Duration::from_millis(api_args.shutdown_grace_ms),
        replicas: database.read_database_url.clone(),
        replica_config: api::replicas::ReplicaConfig {
            max_lag: Duration::from_millis(database.replica_max_lag_ms),
            wait: Duration::from_millis(database.replica_wait_ms),
            poll: Duration::from_millis(database.replica_poll_ms.max(1)),
        },
    })
}
