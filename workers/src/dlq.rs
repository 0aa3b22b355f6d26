//! The dead letters of the social worker: list them, requeue them.

use std::collections::HashMap;

use fred::prelude::*;

use crate::WorkerError;
use crate::social::SocialConfig;

/// One dead letter: its id and fields (the event's, and `provider`,
/// `attempts`, `reason`, `from_stream`, `from_entry`).
pub type Letter = (String, HashMap<String, String>);

/// Every dead letter, oldest first.
pub async fn list(redis: &Client, config: &SocialConfig) -> Result<Vec<Letter>, WorkerError> {
    Ok(redis.xrange_values(&config.dead, "-", "+", None).await?)
}

/// Requeues the letters `ids` (all when empty) for the social workers, with a
/// fresh budget of attempts, and removes them from the dead letters; returns
/// how many were requeued.
pub async fn retry(redis: &Client, config: &SocialConfig, ids: &[String]) -> Result<usize, WorkerError> {
    let letters = list(redis, config).await?;
    let mut requeued = 0;
    for (id, fields) in letters.into_iter().filter(|(id, _)| ids.is_empty() || ids.contains(id)) {
        let attempts = fields.get("attempts").cloned().unwrap_or_else(|| "0".into());
        let mut entry: Vec<(String, String)> = fields
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "from_stream" | "from_entry" | "provider" | "attempts" | "reason"))
            .collect();
        entry.push(("attempts_before".into(), attempts));
        let _: String = redis.xadd(&config.retries, false, None, "*", entry).await?;
        let _: i64 = redis.xdel(&config.dead, &id).await?;
        requeued += 1;
    }
    Ok(requeued)
}
