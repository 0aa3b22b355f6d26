//! The `pointstream` command: configuration and wiring only.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventstore::{DEFAULT_DATABASE_URL, EventStore, EventStoreConfig};

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default): opens and migrates the store, follows the log.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Audits of the log.
    #[command(subcommand)]
    Audit(Audit),
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

#[derive(Debug, Subcommand)]
enum Audit {
    /// Recompute every stream's hash chain and look for holes; exit 1 if anything is wrong.
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = EventStoreConfig { snapshot_every: cli.snapshot_every, ..EventStoreConfig::default() };
    let store = EventStore::open(&cli.database_url, config)
        .await
        .with_context(|| format!("cannot open the event store at {}", cli.database_url))?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(store).await,
        Command::Migrate => {
            tracing::info!(database = %cli.database_url, head = store.head(), "migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(Audit::Verify { json }) => verify(store, json).await,
        Command::Log { after, limit, follow } => log(store, after, limit, follow).await,
    }
}

async fn serve(store: EventStore) -> anyhow::Result<ExitCode> {
    tracing::info!(head = store.head(), "pointstream is running; Ctrl-C stops it");
    let mut head = store.subscribe();
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.context("cannot listen for Ctrl-C")?;
                tracing::info!("stopping");
                return Ok(ExitCode::SUCCESS);
            }
            changed = head.changed() => {
                changed.context("the event store stopped")?;
                tracing::debug!(head = *head.borrow(), "log moved");
            }
        }
    }
}

async fn verify(store: EventStore, json: bool) -> anyhow::Result<ExitCode> {
    let report = store.verify().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.breaks {
            println!("{problem}");
        }
        println!("{} events in {} streams checked, {} problems", report.events, report.streams, report.breaks.len());
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
