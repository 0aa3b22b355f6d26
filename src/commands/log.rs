//! `pointstream log`: the events after a global position, as JSON lines.

use std::process::ExitCode;
use std::time::Duration;

use eventstore::EventStore;

/// Prints the events after `after`, `limit` of them or, with `follow`, all
/// and those to come.
pub async fn run(store: EventStore, mut after: u64, limit: u64, follow: bool) -> anyhow::Result<ExitCode> {
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
