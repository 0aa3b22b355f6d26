//! What the commands that use the database open first, in this order: the
//! event store (applying pending migrations), Redis for the roles that use
//! it, the token vault, the photo store and the social worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::values::Provider;
use eventstore::EventStore;
use fred::prelude::Client;
use media::MediaStore;
use projections::ProjectorConfig;
use workers::providers::{Bluesky, Facebook, LoggingNetwork, Mastodon, SocialNetwork, Twitter, http_client};
use workers::relay::RelayConfig;
use workers::social::{SocialConfig, SocialWorker};
use workers::tokens::TokenVault;

use crate::cli::{Cli, Command};
use crate::config;

/// What a command works with, opened from the configuration.
pub struct Services {
    pub store: EventStore,
    pub projector: ProjectorConfig,
    /// Redis, when configured and the command uses it.
    pub redis: Option<Client>,
    /// The key that seals linked accounts' access tokens, when configured.
    pub vault: Option<TokenVault>,
    pub relay: RelayConfig,
    pub media: MediaStore,
    pub social: SocialWorker,
    /// The social workers' streams.
    pub social_streams: SocialConfig,
}

impl Services {
    /// Opens the event store and Redis, and sets up the rest; `secret`
    /// signs the filesystem store's photo URLs.
    pub async fn open(cli: &Cli, secret: &[u8]) -> anyhow::Result<Self> {
        let store = EventStore::open(&cli.database.database_url, config::event_store(&cli.database))
            .await
            .with_context(|| format!("cannot open the event store at {}", cli.database.database_url))?;
        projections::write_inline(&store, &cli.database.inline_projections)?;
        let projector = config::projector(&cli.database);
        // Only the roles that use Redis connect to it.
        let uses_redis = matches!(
            cli.command,
            None | Some(Command::Serve)
                | Some(Command::Relay)
                | Some(Command::Worker { .. })
                | Some(Command::Dlq(_))
                | Some(Command::Status)
        );
        let redis = match (&cli.redis.redis_url, uses_redis) {
            (Some(url), true) => {
                Some(workers::redis::connect(url).await.with_context(|| format!("cannot connect to Redis at {url}"))?)
            }
            _ => None,
        };
        let vault = cli.social.token_key.as_deref().map(TokenVault::from_hex).transpose()?;
        let relay = config::relay(&cli.database, &cli.redis);
        let base_url = cli.api.api_url.clone().unwrap_or_else(|| format!("http://{}", cli.api.listen));
        let media = config::media_store(&cli.media, secret, &base_url).await;
        let social = social_worker(cli, &store, redis.clone(), vault.clone(), media.clone());
        let social_streams = config::social_config(&cli.social, &cli.redis);
        Ok(Services { store, projector, redis, vault, relay, media, social, social_streams })
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
        let twitter = Twitter::new(http.clone(), cli.social.twitter_url.clone(), config::twitter_app(&cli.social));
        networks.insert(Provider::Facebook, Arc::new(Facebook::new(http.clone(), cli.social.facebook_url.clone())));
        networks.insert(Provider::Twitter, Arc::new(twitter));
        networks.insert(Provider::Mastodon, Arc::new(Mastodon::new(http.clone())));
        networks.insert(Provider::Bluesky, Arc::new(Bluesky::new(http)));
    } else {
        for provider in Provider::ALL {
            networks.insert(provider, Arc::new(LoggingNetwork { name: provider.name() }));
        }
    }
    SocialWorker::new(store.clone(), redis, vault, media, networks, config::social_config(&cli.social, &cli.redis))
}
