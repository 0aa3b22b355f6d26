//! `pointstream replay`: read models rebuilt from position 0 into shadow
//! tables, then swapped in, with a progress bar.

use std::process::ExitCode;

use anyhow::Context;
use eventstore::EventStore;
use indicatif::{ProgressBar, ProgressStyle};
use projections::rebuild::rebuild;
use projections::{Members, Posts, Shares, Stores, Wallets};

/// Rebuilds `only` projection, or every one, `batch_size` events at a time.
pub async fn run(store: EventStore, only: Option<String>, batch_size: u64) -> anyhow::Result<ExitCode> {
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
