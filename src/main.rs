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
    let mut cli = Cli::parse();
    logging(cli.log_format);
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
            let api = config::api(&cli.api, &cli.limits, &secret, identity, vault, media)?;
            let background = serve::Background {
                relay: redis.map(|redis| (redis, relay)),
                social: Some(social),
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
/// or text, coloured only on a terminal.
fn logging(format: cli::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into());
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        cli::LogFormat::Json => true,
        cli::LogFormat::Pretty => false,
        cli::LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).with_span_list(true).flatten_event(true).init();
    } else {
        builder.with_ansi(terminal).init();
    }
}
