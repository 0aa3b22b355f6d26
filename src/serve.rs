//! The long-running roles: `serve` (the API, the projectors, the relay,
//! the social worker, the notary and the stream gauges, until SIGTERM or Ctrl-C), `projector`
//! (the same without the API), `relay` and `worker social`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::{ApiState, Limits};
use eventstore::{EventStore, EventStoreConfig};
use fred::prelude::{Client, ClientLike};
use media::MediaStore;
use projections::ProjectorConfig;
use tokio::sync::watch;
use workers::relay::RelayConfig;
use workers::social::{SocialConfig, SocialWorker};
use workers::tokens::TokenVault;

/// How `serve` runs the API.
pub struct Api {
    /// Where it listens (port 0: any free port).
    pub listen: String,
    /// The HTTP layer: how bearer tokens are checked, the browser origins
    /// allowed to call the API, what GraphiQL is told, how long a WebSocket
    /// may take to send `connection_init`, how many requests each caller
    /// may make and how long `/readyz` waits for each dependency.
    pub http: api::server::HttpConfig,
    pub read_timeout: Duration,
    pub limits: Limits,
    pub tokens: Option<TokenVault>,
    /// Linking social accounts by OAuth (with a token key).
    pub links: Option<std::sync::Arc<api::links::SocialLinks>>,
    pub media: MediaStore,
    /// The API's URL, if configured; else photo URLs of the filesystem
    /// store point at the bound address.
    pub api_url: Option<String>,
    pub photo_url_ttl: Duration,
    /// How long requests in flight may take to finish once stopping starts.
    pub shutdown_grace: Duration,
    /// Replicas that serve queries (none: the primary serves them).
    pub replicas: Vec<String>,
    pub replica_config: api::replicas::ReplicaConfig,
}

/// What `serve` runs besides the API and the projectors.
#[derive(Default)]
pub struct Background {
    /// The relay, when Redis is configured.
    pub relay: Option<(Client, RelayConfig)>,
    /// The social worker: on Redis when configured, else on the log itself.
    pub social: Option<SocialWorker>,
    /// The social streams, for the stream gauges.
    pub streams: Option<SocialConfig>,
    /// The notary: the Merkle tree over the log and its signed digests.
    pub notary: Option<Notary>,
}

/// How the notary runs.
pub struct Notary {
    pub config: projections::notary::NotaryConfig,
    pub signer: eventstore::merkle::Signer,
    pub publisher: std::sync::Arc<dyn eventstore::merkle::Publish>,
}

/// `pointstream serve` (with `api`) and `pointstream projector` (without):
/// the projectors and `background`, and the API when given, until Ctrl-C.
pub async fn serve(
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
    let notary_key = background.notary.as_ref().map(|notary| notary.signer.public_key().clone());
    if let Some(notary) = background.notary {
        if notary.signer.is_development() {
            tracing::warn!(
                key_id = %notary.signer.public_key().id(),
                "no --digest-key-file: digests are signed with the development key and prove nothing"
            );
        }
        tasks.push(tokio::spawn({
            let (store, shutdown) = (store.clone(), shutdown.clone());
            async move {
                projections::notary::run(store, notary.config, notary.signer, Some(notary.publisher), shutdown).await;
                Ok(())
            }
        }));
    }
    if let Some(social) = background.social {
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if on_redis { social.run(shutdown).await } else { social.run_local(shutdown).await }
        }));
    }
    let server = match api {
        Some(api) => {
            let reads = api::replicas::Reads::connect(
                &store,
                &api.replicas,
                EventStoreConfig::default().max_connections,
                api.replica_config,
            )
            .await
            .context("cannot connect to a read replica")?;
            let mut state = ApiState {
                store: store.clone(),
                read_timeout: api.read_timeout,
                limits: api.limits,
                tokens: api.tokens,
                redis: ready_redis,
                media: api.media,
                photo_url_ttl: api.photo_url_ttl,
                projectors: running.statuses.clone(),
                notary_key,
                reads,
                links: api.links,
            };
            let mut stopped = shutdown.clone();
            let signal = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let listen = api.listen.clone();
            let mut http = api.http;
            // Stopping turns readiness off and closes WebSockets at once.
            http.draining = api::server::Draining::on(shutdown.clone());
            let dev_token = http.playground.dev_token.clone();
            let api_url = api.api_url;
            let app = move |address: &str| {
                if let (MediaStore::Fs(store), None) = (&state.media, &api_url) {
                    state.media = MediaStore::Fs(store.serving_at(format!("http://{address}")));
                }
                api::server::app(api::build(state.clone()), state, http)
            };
            let (address, server) = api::server::bind_graceful(listen.clone(), app, signal, Some(api.shutdown_grace))
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
    let stopping = stop_signal();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            signal = &mut stopping => {
                let signal = signal?;
                tracing::info!(
                    signal,
                    "stopping: /readyz answers 503, WebSockets are closed (1001), no new connections are taken"
                );
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
    let stopped_at = std::time::Instant::now();
    stop.send_replace(true);
    // The background roles stop at once, releasing their leases, so that
    // another process takes over while this one finishes its requests.
    for task in running.tasks {
        task.await??;
    }
    for task in tasks {
        task.await??;
    }
    tracing::info!("stopping: projectors, relay, notary and social worker stopped; their leases released");
    if let Some(server) = server {
        server.await??;
        tracing::info!("stopping: every request in flight answered (or past the grace period)");
    }
    // The group commit has nothing queued: every command came from a request
    // that has been answered.
    tracing::info!(elapsed_ms = stopped_at.elapsed().as_millis() as u64, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM (an orchestrator stopping the process) or SIGINT
/// (Ctrl-C), naming which.
async fn stop_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            signal = tokio::signal::ctrl_c() => signal.map(|()| "SIGINT").context("cannot listen for Ctrl-C"),
            _ = terminate.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
        Ok("SIGINT")
    }
}

/// `pointstream relay`: the relay alone, until Ctrl-C.
pub async fn relay(store: EventStore, redis: Client, relay: RelayConfig) -> anyhow::Result<ExitCode> {
    until_ctrl_c("relay", |shutdown| tokio::spawn(workers::relay::run(store, redis, relay, shutdown))).await
}

/// `pointstream worker social`: a social worker on Redis, until Ctrl-C.
pub async fn social_worker(social: SocialWorker) -> anyhow::Result<ExitCode> {
    until_ctrl_c("social worker", |shutdown| tokio::spawn(async move { social.run(shutdown).await })).await
}

/// Runs one role until Ctrl-C.
async fn until_ctrl_c(
    role: &str,
    start: impl FnOnce(watch::Receiver<bool>) -> tokio::task::JoinHandle<Result<(), workers::WorkerError>>,
) -> anyhow::Result<ExitCode> {
    let (stop, shutdown) = watch::channel(false);
    tracing::info!("{role} is running; Ctrl-C stops it");
    let task = start(shutdown);
    let signal = stop_signal().await?;
    tracing::info!(signal, "stopping the {role}");
    stop.send_replace(true);
    task.await??;
    tracing::info!("{role} stopped; its lease released");
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
