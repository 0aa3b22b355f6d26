//! The one way pointstream connects to Redis.

use fred::prelude::*;

/// A connected client for `url` (`redis://host:port[/db]`). It reconnects on
/// its own, without limit, backing off up to 2 s; commands wait meanwhile.
pub async fn connect(url: &str) -> Result<Client, Error> {
    let config = Config::from_url(url)?;
    let client = Builder::from_config(config).set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2)).build()?;
    client.init().await?;
    Ok(client)
}
