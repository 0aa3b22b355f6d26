//! The one-shot commands: `schema`, `token`, `status`, `dlq`, `demo`,
//! `replay`, `migrate`, `audit verify`, `media gc` and `log`. Each prints
//! its outcome on stdout and returns the exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use eventstore::EventStore;
use fred::prelude::Client;
use indicatif::{ProgressBar, ProgressStyle};
use media::MediaStore;
use projections::rebuild::rebuild;
use projections::{Members, Posts, Shares, Stores, Wallets};
use workers::relay::RelayConfig;
use workers::social::SocialConfig;

use crate::cli::{Cli, Dlq};
use crate::{config, demo};

/// `pointstream status`: the log head, each projection's checkpoint and
/// lag, the streams (with Redis) and the social tallies, as JSON.
pub async fn status(
    store: &EventStore,
    redis: Option<&Client>,
    relay: &RelayConfig,
    social_streams: &SocialConfig,
) -> anyhow::Result<ExitCode> {
    let head = store.read_head().await?;
    let mut projections = Vec::new();
    for name in projections::PROJECTIONS.iter().chain(["share_distribution", "social"].iter()) {
        let at = projections::checkpoint::read(store.db(), name, &projections::Names::LIVE).await?;
        projections.push(serde_json::json!({ "name": name, "checkpoint": at, "lag": head.saturating_sub(at) }));
    }
    let streams = match redis {
        Some(redis) => Some(workers::status::read(redis, relay, social_streams).await?),
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

/// `pointstream dlq list` and `pointstream dlq retry`.
pub async fn dlq(redis: &Client, config: &SocialConfig, command: Dlq) -> anyhow::Result<ExitCode> {
    match command {
        Dlq::List => {
            for (id, fields) in workers::dlq::list(redis, config).await? {
                println!("{}", serde_json::json!({ "id": id, "fields": fields }));
            }
        }
        Dlq::Retry { ids } => {
            let requeued = workers::dlq::retry(redis, config, &ids).await?;
            println!("{requeued} dead letter(s) requeued");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pointstream token`: a development token signed with `secret`, refused
/// when the server would refuse it.
pub fn token(
    cli: &Cli,
    secret: &[u8],
    max_token_lifetime: Duration,
    role: &str,
    member: Option<String>,
    store: Option<String>,
    hours: u64,
) -> anyhow::Result<ExitCode> {
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
    println!("{}", config::dev_token(secret, role, member, store, lifetime)?);
    Ok(ExitCode::SUCCESS)
}

/// `pointstream schema`: the GraphQL schema (SDL).
pub fn schema() -> anyhow::Result<ExitCode> {
    print!("{}", api::sdl());
    Ok(ExitCode::SUCCESS)
}

/// `pointstream demo`: loads the demo data ([`demo::load`]).
pub async fn demo(store: &EventStore, media: &MediaStore) -> anyhow::Result<ExitCode> {
    let summary = demo::load(store, media).await?;
    println!("demo data loaded: {summary} (try `pointstream serve`)");
    Ok(ExitCode::SUCCESS)
}

/// `pointstream replay`: rebuilds `only` projection, or every one, with a progress bar.
pub async fn replay(store: EventStore, only: Option<String>, batch_size: u64) -> anyhow::Result<ExitCode> {
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

/// `pointstream migrate`: opening the store has applied the migrations.
pub fn migrate(database_url: &str, store: &EventStore) -> anyhow::Result<ExitCode> {
    tracing::info!(database = %database_url, head = store.head(), "migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// `pointstream audit verify`: exits 1 when the audit finds a problem.
pub async fn verify(store: EventStore, json: bool) -> anyhow::Result<ExitCode> {
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

/// `pointstream media gc`: removes (or, with `dry_run`, lists) stored
/// photos no live post refers to, older than `grace_secs`, as a JSON report.
pub async fn media_gc(
    store: &EventStore,
    media: &MediaStore,
    grace_secs: u64,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let live = media::gc::live_photos(store).await?;
    let sweep = media::gc::sweep(media, &live, Duration::from_secs(grace_secs), dry_run).await?;
    println!("{}", serde_json::json!({ "store": media.kind(), "dry_run": dry_run, "sweep": sweep }));
    Ok(ExitCode::SUCCESS)
}

/// `pointstream log`: events after `after` as JSON lines, `limit` of them or, with `follow`, all and those to come.
pub async fn log(store: EventStore, mut after: u64, limit: u64, follow: bool) -> anyhow::Result<ExitCode> {
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
