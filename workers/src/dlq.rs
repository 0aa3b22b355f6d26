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

/// Moves one letter: removes `ARGV[1]` from the dead letters `KEYS[1]` and,
/// only if it was there, appends the fields `ARGV[2..]` to the retries
/// `KEYS[2]`; answers 1 if it moved the letter, 0 if it was gone. One script,
/// so that two requeues at once (or one a reconnect replays) move a letter once.
const REQUEUE: &str = r#"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local command = {'XADD', KEYS[2], '*'}
for i = 2, #ARGV do command[#command + 1] = ARGV[i] end
redis.call(unpack(command))
return 1
"#;

/// Requeues the letters `ids` (all when empty) for the social workers, with a
/// fresh budget of attempts, and removes them from the dead letters; returns
/// how many were requeued.
pub async fn retry(redis: &Client, config: &SocialConfig, ids: &[String]) -> Result<usize, WorkerError> {
    let letters = list(redis, config).await?;
    let mut requeued = 0;
    for (id, fields) in letters.into_iter().filter(|(id, _)| ids.is_empty() || ids.contains(id)) {
        let attempts = fields.get("attempts").cloned().unwrap_or_else(|| "0".into());
        let mut args = vec![id];
        for (name, value) in fields
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "from_stream" | "from_entry" | "provider" | "attempts" | "reason"))
        {
            args.extend([name, value]);
        }
        args.extend(["attempts_before".to_string(), attempts]);
        let moved: i64 = redis.eval(REQUEUE, vec![config.dead.clone(), config.retries.clone()], args).await?;
        requeued += usize::from(moved == 1);
    }
    Ok(requeued)
}
