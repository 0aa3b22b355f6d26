//! The notary: keeps the Merkle tree over the log up with the log, signs a
//! digest of its root every so many events or seconds, and publishes each
//! digest where the operator cannot quietly change it afterwards. One active
//! across processes (a lease, like the projectors); a second that overlaps
//! briefly writes nothing twice (the tree's size guards every extension).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::merkle::{self, Digest, Extended, Publish, RootBuilder, Signer};
use eventstore::{EventStore, EventStoreError};
use tokio::sync::watch;

use crate::lease::Lease;

/// How often the notary signs, and how it works.
#[derive(Debug, Clone)]
pub struct NotaryConfig {
    /// Sign once the tree has grown by this many events since the last digest.
    pub every_events: u64,
    /// ... or once this long has passed and it has grown at all.
    pub every: Duration,
    /// Events per extension of the tree (and per transaction).
    pub batch_size: u64,
    /// Lease lifetime: a dead notary is taken over after at most this long.
    pub lease_ttl: Duration,
    /// After an extension that caught up, how long new events are let
    /// accumulate before the next: a few large extensions a second rather
    /// than one per commit (the tree is at most about this far behind).
    pub pace: Duration,
}

impl Default for NotaryConfig {
    fn default() -> Self {
        NotaryConfig {
            every_events: 1_000,
            every: Duration::from_secs(60),
            batch_size: 5_000,
            lease_ttl: Duration::from_secs(10),
            pace: Duration::from_millis(200),
        }
    }
}

/// Gauge: leaves in the Merkle tree.
pub const TREE_SIZE: &str = "pointstream_merkle_tree_size";
/// Counter: digests signed.
pub const DIGESTS_SIGNED: &str = "pointstream_digests_signed_total";
/// Counter: digests that could not be published (each is retried).
pub const PUBLISH_FAILURES: &str = "pointstream_digest_publish_failures_total";

/// What the notary holds between batches while it has the lease.
struct Notary {
    tree: Option<RootBuilder>,
    last: Option<Digest>,
    signed_at: Instant,
}

/// Extends the tree to the log's head and signs a digest of it if one is due
/// (`force`: if the tree grew at all); the new digest, if any. For one-shot
/// use (`pointstream digest --sign`) and the tests; ignores the lease.
pub async fn sign_now(store: &EventStore, signer: &Signer, batch_size: u64) -> Result<Digest, EventStoreError> {
    let mut notary = Notary { tree: None, last: merkle::latest_digest(store.db()).await?, signed_at: Instant::now() };
    notary.catch_up(store, batch_size).await?;
    let config = NotaryConfig { every_events: 1, every: Duration::ZERO, ..NotaryConfig::default() };
    match notary.sign_if_due(store, signer, &config).await? {
        Some(digest) => Ok(digest),
        None => notary.last.ok_or_else(|| {
            EventStoreError::Database(sea_orm::DbErr::Custom("the log is empty: there is nothing to sign".into()))
        }),
    }
}

impl Notary {
    /// Extends the tree until it reaches the head (or a hole in the log:
    /// then `stuck`); the tree's size.
    async fn catch_up(&mut self, store: &EventStore, batch_size: u64) -> Result<(u64, bool), EventStoreError> {
        loop {
            match merkle::extend(store.db(), &mut self.tree, batch_size).await? {
                Extended::Grown { size, added } => {
                    metrics::gauge!(TREE_SIZE).set(size as f64);
                    if added < batch_size {
                        return Ok((size, false));
                    }
                }
                Extended::Raced => self.tree = None,
                Extended::Hole(at) => {
                    tracing::error!(
                        position = at,
                        "the log has a hole: the tree stops before it (run `pointstream audit verify`)"
                    );
                    return Ok((at - 1, true));
                }
            }
        }
    }

    /// Signs and stores a digest of the tree if one is due.
    async fn sign_if_due(
        &mut self,
        store: &EventStore,
        signer: &Signer,
        config: &NotaryConfig,
    ) -> Result<Option<Digest>, EventStoreError> {
        let Some(tree) = &self.tree else { return Ok(None) };
        let signed = self.last.as_ref().map_or(0, |last| last.tree_size);
        let grown = tree.size().saturating_sub(signed);
        let due = grown >= config.every_events || (grown > 0 && self.signed_at.elapsed() >= config.every);
        if !due {
            return Ok(None);
        }
        let digest = signer.sign(tree.size(), &tree.root(), eventstore::now_us());
        merkle::store_digest(store.db(), &digest).await?;
        metrics::counter!(DIGESTS_SIGNED).increment(1);
        tracing::info!(tree_size = digest.tree_size, root = %digest.root_hash, "digest signed");
        self.signed_at = Instant::now();
        self.last = Some(digest.clone());
        Ok(Some(digest))
    }
}

/// Publishes every digest not published yet.
async fn publish_pending(store: &EventStore, publisher: &dyn Publish) -> Result<(), EventStoreError> {
    for digest in merkle::unpublished(store.db(), 100).await? {
        match publisher.publish(&digest).await {
            Ok(place) => {
                merkle::mark_published(store.db(), digest.tree_size, eventstore::now_us()).await?;
                tracing::info!(tree_size = digest.tree_size, %place, "digest published");
            }
            Err(reason) => {
                metrics::counter!(PUBLISH_FAILURES).increment(1);
                tracing::warn!(tree_size = digest.tree_size, %reason, "cannot publish the digest; will retry");
                break;
            }
        }
    }
    Ok(())
}

/// Runs the notary until `shutdown` turns true.
pub async fn run(
    store: EventStore,
    config: NotaryConfig,
    signer: Signer,
    publisher: Option<Arc<dyn Publish>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease = Lease::new("notary", config.lease_ttl);
    let db = store.db().clone();
    while !*shutdown.borrow() {
        match lease.acquire(&db).await {
            Ok(true) => {}
            Ok(false) => {
                tokio::select! {
                    _ = tokio::time::sleep(lease.retry_every()) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            Err(err) => {
                tracing::error!(%err, "notary: cannot take the lease; retrying");
                tokio::time::sleep(lease.renew_every()).await;
                continue;
            }
        }
        tracing::info!(key_id = %signer.public_key().id(), "notary active");
        let last = match merkle::latest_digest(&db).await {
            Ok(last) => last,
            Err(err) => {
                tracing::error!(%err, "notary: cannot read the latest digest; retrying");
                tokio::time::sleep(lease.renew_every()).await;
                continue;
            }
        };
        let mut notary = Notary { tree: None, last, signed_at: Instant::now() };
        let mut renewed = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            if renewed.elapsed() >= lease.renew_every() {
                match lease.acquire(&db).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!("notary: lease lost to another process");
                        break;
                    }
                    Err(err) => {
                        tracing::error!(%err, "notary: cannot renew the lease; pausing");
                        break;
                    }
                }
            }
            let step = async {
                let caught_up = notary.catch_up(&store, config.batch_size).await?;
                notary.sign_if_due(&store, &signer, &config).await?;
                if let Some(publisher) = &publisher {
                    publish_pending(&store, publisher.as_ref()).await?;
                }
                Ok::<_, EventStoreError>(caught_up)
            };
            match step.await {
                Ok((size, stuck)) => {
                    // Wake for new events, for a digest falling due by time,
                    // or to renew the lease; then let more events gather.
                    let wait = lease.renew_every().min(config.every.max(Duration::from_millis(50)));
                    let after = if stuck { u64::MAX } else { size };
                    tokio::select! {
                        _ = store.wait_for(after, wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(config.pace) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(err) => {
                    notary.tree = None;
                    tracing::error!(%err, "notary: batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        if let Err(err) = lease.release(&db).await {
            tracing::warn!(%err, "notary: cannot release the lease");
        }
    }
}
