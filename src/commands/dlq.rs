//! `pointstream dlq list` and `pointstream dlq retry`: the social workers'
//! dead letters, on Redis.

use std::process::ExitCode;

use fred::prelude::Client;
use workers::social::SocialConfig;

use crate::cli::Dlq;

/// Prints every dead letter as a JSON line, or requeues them (all, or the
/// ids given) and says how many.
pub async fn run(redis: &Client, config: &SocialConfig, command: Dlq) -> anyhow::Result<ExitCode> {
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
