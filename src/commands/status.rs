//! `pointstream status`: where everything stands, as JSON.

use std::process::ExitCode;

use eventstore::EventStore;
use fred::prelude::Client;
use workers::relay::RelayConfig;
use workers::social::SocialConfig;

/// The log head, each projection's checkpoint and lag, the streams (with
/// Redis) and the social tallies, as JSON.
pub async fn run(
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
