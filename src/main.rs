//! The `pointstream` command, its composition root: it parses the command
//! line and hands each subcommand what it needs. `cli` holds the flags,
//! grouped by concern, `config` turns them into the libraries'
//! configurations, `startup` opens the event store and what goes with it,
//! `serve` runs the long-running roles and `commands` the one-shot ones, a
//! module each.

mod cli;
mod commands;
mod config;
mod demo;
mod serve;
mod startup;

/// mimalloc: the group commit and the HTTP workers allocate and free many
/// short-lived buffers, which glibc's allocator serves at several times the cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{Audit, Cli, Command, Media, WorkerKind};
use commands::digest::DigestRequest;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let traces = logging(cli.log_format, role(&cli))?;
    let result = run(cli).await;
    if let Some(traces) = traces {
        // Blocks until the last spans are sent (or its timeout): off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    result
}

/// What this process is, for its traces' `pointstream.role`.
fn role(cli: &Cli) -> &'static str {
    match &cli.command {
        None | Some(Command::Serve) => "serve",
        Some(Command::Projector) => "projector",
        Some(Command::Relay) => "relay",
        Some(Command::Worker { kind: WorkerKind::Social }) => "worker social",
        Some(_) => "command",
    }
}

/// Runs the command line's subcommand.
async fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    let secret = config::secret(&cli.api);
    let max_token_lifetime = config::max_token_lifetime(&cli.api);
    match &cli.command {
        Some(Command::Schema) => return commands::schema::run(),
        Some(Command::Token { role, member, store, hours }) => {
            return commands::token::run(
                &cli.api,
                &secret,
                max_token_lifetime,
                role,
                member.clone(),
                store.clone(),
                *hours,
            );
        }
        Some(Command::Keygen { out }) => return commands::digest::keygen(out),
        Some(Command::Audit(Audit::Verify { json, digest, public_key, events: Some(events) })) => {
            return commands::audit::verify_offline(*json, digest, public_key.as_deref(), events);
        }
        _ => {}
    }
    // Checked before anything is opened: a server that must not start does not wait for a database first.
    let identity = match &cli.command {
        None | Some(Command::Serve) => Some(config::token_config(&cli.api, &cli.media, &secret, max_token_lifetime)?),
        _ => None,
    };
    let startup::Services { store, projector, redis, vault, relay, media, social, social_streams } =
        startup::Services::open(&cli, &secret).await?;
    let needs_redis = |what: &str| anyhow::anyhow!("`pointstream {what}` needs --redis-url (or REDIS_URL)");
    match cli.command.take().unwrap_or(Command::Serve) {
        Command::Serve => {
            let identity = identity.context("the token configuration is made for serve")?;
            let links = config::social_links(&cli.social, &cli.api, vault.as_ref());
            let mut api = config::api(&cli.database, &cli.api, &cli.limits, &secret, identity, vault, media)?;
            api.links = links.map(std::sync::Arc::new);
            let background = serve::Background {
                relay: redis.map(|redis| (redis, relay)),
                social: cli.social.serve_social.then_some(social),
                streams: Some(social_streams),
                notary: Some(notary(&cli).await?),
            };
            serve::serve(store, projector, Some(api), background).await
        }
        Command::Projector => {
            let background = serve::Background { notary: Some(notary(&cli).await?), ..serve::Background::default() };
            serve::serve(store, projector, None, background).await
        }
        Command::Relay => serve::relay(store, redis.ok_or_else(|| needs_redis("relay"))?, relay).await,
        Command::Worker { kind: WorkerKind::Social } => {
            redis.ok_or_else(|| needs_redis("worker social"))?;
            serve::social_worker(social).await
        }
        Command::Status => commands::status::run(&store, redis.as_ref(), &relay, &social_streams).await,
        Command::Dlq(command) => {
            commands::dlq::run(&redis.ok_or_else(|| needs_redis("dlq"))?, &social_streams, command).await
        }
        Command::Demo => commands::demo::run(&store, &media).await,
        Command::Schema | Command::Token { .. } => Ok(ExitCode::SUCCESS),
        Command::Replay { projection, batch_size } => commands::replay::run(store, projection, batch_size).await,
        Command::Migrate => commands::migrate::run(&cli.database.database_url, &store),
        Command::Audit(Audit::Verify { json, digest, public_key, events: _ }) => {
            commands::audit::verify(store, json, &digest, public_key.as_deref()).await
        }
        Command::Media(Media::Gc { grace_secs, dry_run }) => {
            commands::media::gc(&store, &media, grace_secs, dry_run).await
        }
        Command::Log { after, limit, follow, export } => commands::log::run(store, after, limit, follow, export).await,
        Command::Keygen { .. } => Ok(ExitCode::SUCCESS),
        Command::Digest { sign, all, tree_size, public_key } => {
            let signer = config::digest_signer(&cli.notary)?;
            let request = DigestRequest { sign, all, tree_size, public_key };
            commands::digest::digest(&store, &signer, config::notary(&cli.notary, &cli.database).batch_size, request)
                .await
        }
        Command::Proof(proof) => commands::digest::proof(&store, proof).await,
    }
}

/// The notary as configured.
async fn notary(cli: &Cli) -> anyhow::Result<serve::Notary> {
    Ok(serve::Notary {
        config: config::notary(&cli.notary, &cli.database),
        signer: config::digest_signer(&cli.notary)?,
        publisher: std::sync::Arc::new(config::digest_publisher(&cli.notary, &cli.media).await),
    })
}

/// Log lines to stderr: JSON (one object per line, with the fields of the
/// spans it is in: request id, command id, position ...) for a collector,
/// or text, coloured only on a terminal. With an OTLP endpoint in the
/// environment, traces too (see [`api::traces`]); the spans that exist only
/// for them stay out of the logs.
fn logging(format: cli::LogFormat, role: &str) -> anyhow::Result<Option<api::traces::Traces>> {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into())
        .add_directive(format!("{}=off", eventstore::trace::TARGET).parse()?);
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        cli::LogFormat::Json => true,
        cli::LogFormat::Pretty => false,
        cli::LogFormat::Auto => !terminal,
    };
    let traces = api::traces::Traces::from_env(role)?;
    match &traces {
        // Each its own filter: traces take spans the logs leave out.
        Some(traces) => tracing_subscriber::registry()
            .with(log_lines(json, terminal).with_filter(filter))
            .with(traces.layer())
            .init(),
        // One filter for all: with traces off, subscribing is as it was.
        None => tracing_subscriber::registry().with(filter).with(log_lines(json, terminal)).init(),
    }
    Ok(traces)
}

/// The layer that writes log lines to stderr, as JSON or as text.
fn log_lines<S>(json: bool, terminal: bool) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        logs.json().with_current_span(true).with_span_list(true).flatten_event(true).boxed()
    } else {
        logs.with_ansi(terminal).boxed()
    }
}
