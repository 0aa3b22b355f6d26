//! `pointstream log`: the events after a global position, as JSON lines.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use eventstore::{EventStore, RecordedEvent};

/// Prints the events after `after`, `limit` of them or, with `follow`, all
/// and those to come. With `export`, each as stored (what `audit verify
/// --events` reads), and every one unless `limit` is given. A reader that
/// stops reading (`| head`) ends it quietly.
pub async fn run(
    store: EventStore,
    after: u64,
    limit: Option<u64>,
    follow: bool,
    export: bool,
) -> anyhow::Result<ExitCode> {
    match print(store, after, limit, follow, export).await {
        Err(err)
            if err.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

async fn print(
    store: EventStore,
    mut after: u64,
    limit: Option<u64>,
    follow: bool,
    export: bool,
) -> anyhow::Result<ExitCode> {
    let mut remaining = match (follow, export) {
        (true, _) => u64::MAX,
        (false, true) => limit.unwrap_or(u64::MAX),
        (false, false) => limit.unwrap_or(1_000),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while remaining > 0 {
        let page = remaining.min(1_000);
        let events = if export { store.read_stored(after, page).await? } else { store.read_from(after, page).await? };
        for event in &events {
            let line = if export { exported(event)? } else { readable(event)?.to_string() };
            writeln!(out, "{line}")?;
            after = event.position;
        }
        remaining -= events.len() as u64;
        if (events.len() as u64) < page {
            if !follow {
                break;
            }
            out.flush()?;
            store.wait_for(after, Duration::from_secs(30)).await;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// An event with its payload and metadata as JSON values.
fn readable(event: &RecordedEvent) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
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
    }))
}

/// An event exactly as stored: the line format of [`verify::ExportedEvent`].
fn exported(event: &RecordedEvent) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&event.exported())?)
}
