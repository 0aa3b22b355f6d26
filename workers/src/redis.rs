//! The one way pointstream connects to Redis, and names its keys there.
//!
//! One URL says which Redis, in fred's forms:
//!
//! * `redis://host:port[/db]`: one server;
//! * `redis-sentinel://host:port[/db]?sentinelServiceName=NAME&node=host:port...`:
//!   the primary that the sentinels at `host:port` (and each `node`) know as
//!   `NAME`, found again through them after a failover;
//! * `redis-cluster://host:port?node=host:port...`: a Redis Cluster, found from
//!   any of the nodes given (commands follow `MOVED`/`ASK`).
//!
//! (`rediss` in place of `redis` for TLS, where the build enables it.)

use fred::prelude::*;

/// A connected client for `url` (see the module's documentation). It
/// reconnects on its own, without limit, backing off up to 2 s; commands
/// wait meanwhile. Behind sentinels it asks them for the primary each time,
/// and checks that the server it reaches is one (`ROLE`).
pub async fn connect(url: &str) -> Result<Client, Error> {
    let config = Config::from_url(url)?;
    let client = Builder::from_config(config).set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2)).build()?;
    client.init().await?;
    Ok(client)
}

/// The name of pointstream's key `name` under `prefix`: `{prefix}:name`.
///
/// The braces are a Redis Cluster hash tag: every key under one prefix hashes
/// to the same slot, so a script or command that touches several of them
/// (the worker's read of the events and the retries, a dead letter's
/// requeue) runs on one node. A prefix that carries a hash tag of its own
/// (`{ps}`, `app:{ps}`) is used as it is.
pub fn key(prefix: &str, name: &str) -> String {
    let tagged = prefix.find('{').is_some_and(|open| prefix[open + 1..].find('}').is_some_and(|len| len > 0));
    if tagged { format!("{prefix}:{name}") } else { format!("{{{prefix}}}:{name}") }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_under_one_prefix_share_a_hash_tag() {
        assert_eq!(key("pointstream", "events"), "{pointstream}:events");
        assert_eq!(key("pointstream", "dlq:social"), "{pointstream}:dlq:social");
        assert_eq!(key("app:{ps}", "events"), "app:{ps}:events");
        // An empty tag hashes the whole key: it is no tag, so one is added.
        assert_eq!(key("a{}", "events"), "{a{}}:events");
    }
}
