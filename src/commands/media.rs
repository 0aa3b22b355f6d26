//! `pointstream media gc`: the photo store swept of photos no live post
//! refers to.

use std::process::ExitCode;
use std::time::Duration;

use eventstore::EventStore;
use media::MediaStore;

/// Removes (or, with `dry_run`, lists) stored photos no live post refers
/// to, older than `grace_secs`, and prints a JSON report.
pub async fn gc(store: &EventStore, media: &MediaStore, grace_secs: u64, dry_run: bool) -> anyhow::Result<ExitCode> {
    let live = media::gc::live_photos(store).await?;
    let sweep = media::gc::sweep(media, &live, Duration::from_secs(grace_secs), dry_run).await?;
    println!("{}", serde_json::json!({ "store": media.kind(), "dry_run": dry_run, "sweep": sweep }));
    Ok(ExitCode::SUCCESS)
}
