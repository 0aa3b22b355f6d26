//! The API's state as `pointstream serve` builds it, for the API's tests.

use std::time::Duration;

use api::{ApiState, Limits};
use eventstore::EventStore;

/// `serve`'s state on `store`: default limits, photos in a directory of the
/// test's own, no Redis, no token vault, and no projectors reported (the
/// API then polls the checkpoints, as when projectors run elsewhere).
pub fn state(store: EventStore) -> ApiState {
    let reads = api::replicas::Reads::primary(&store);
    ApiState {
        store,
        read_timeout: Duration::from_secs(10),
        limits: Limits::default(),
        tokens: None,
        redis: None,
        media: media::scratch::scratch_fs("http://127.0.0.1"),
        photo_url_ttl: Duration::from_secs(900),
        projectors: Vec::new(),
        notary_key: None,
        reads,
        links: None,
    }
}
