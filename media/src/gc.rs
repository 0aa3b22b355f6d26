//! Orphan sweeping: objects that no live post refers to. An upload whose
//! command failed is normally removed at once; a crash between storing and
//! recording, or a failed removal, leaves an orphan that `pointstream media
//! gc` finds here. Which photos are live is read from the log itself (not a
//! read model that may lag), and only objects older than a grace period are
//! removed, so an upload whose command is still in flight is never taken.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use domain::{Post, PostEvent};
use eventstore::{EventStore, LogFilter};
use serde::Serialize;

use crate::{MediaError, MediaStore};

/// What a sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sweep {
    /// Objects in the store.
    pub listed: usize,
    /// Photos live posts refer to.
    pub live: usize,
    /// Orphans removed (or, on a dry run, that would be).
    pub removed: Vec<String>,
    /// Orphans younger than the grace period, left for a later sweep.
    pub young: usize,
}

/// The keys of every photo of every post not deleted, from the log.
pub async fn live_photos(store: &EventStore) -> Result<HashSet<String>, MediaError> {
    let filter = LogFilter { aggregate_type: Some("Post".to_string()), ..LogFilter::default() };
    Ok(photos_by_post(store, &filter, false).await?.into_values().flatten().collect())
}

/// The keys of every photo post `id` has recorded, deleted or not, from the log.
pub async fn photos_of(store: &EventStore, id: &str) -> Result<Vec<String>, MediaError> {
    let filter = LogFilter {
        aggregate_type: Some("Post".to_string()),
        aggregate_id: Some(id.to_string()),
        ..LogFilter::default()
    };
    Ok(photos_by_post(store, &filter, true).await?.into_values().flatten().collect())
}

/// Each post's photos; a deleted post's are dropped unless `keep_deleted`.
async fn photos_by_post(
    store: &EventStore,
    filter: &LogFilter,
    keep_deleted: bool,
) -> Result<BTreeMap<String, Vec<String>>, MediaError> {
    let mut by_post: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let events = store.read_matching(after, 1_000, filter).await?;
        let Some(last) = events.last() else { break };
        after = last.position;
        for event in &events {
            let photos = by_post.entry(event.aggregate_id.clone()).or_default();
            match event.decode::<Post>()? {
                PostEvent::PostCreated { photos: created, .. } => {
                    photos.extend(created.into_iter().map(|p| p.key.as_str().to_string()));
                }
                PostEvent::PhotoAdded { photo, .. } => photos.push(photo.key.as_str().to_string()),
                PostEvent::PostDeleted if !keep_deleted => photos.clear(),
                PostEvent::PostDeleted => {}
                PostEvent::SocialPostPublished { .. }
                | PostEvent::SocialPostFailed { .. }
                | PostEvent::SocialPhotoPublished { .. }
                | PostEvent::SocialPhotoFailed { .. }
                | PostEvent::SocialPostNeedsRelink { .. }
                | PostEvent::SocialPhotoNeedsRelink { .. } => {}
            }
        }
    }
    Ok(by_post)
}

/// Removes objects not in `live` and older than `grace`; with `dry_run`,
/// only reports them.
pub async fn sweep(
    media: &MediaStore,
    live: &HashSet<String>,
    grace: Duration,
    dry_run: bool,
) -> Result<Sweep, MediaError> {
    let objects = media.list().await?;
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut sweep = Sweep { listed: objects.len(), live: live.len(), ..Sweep::default() };
    for object in objects.into_iter().filter(|o| !live.contains(&o.key)) {
        if object.modified > cutoff {
            sweep.young += 1;
        } else {
            sweep.removed.push(object.key);
        }
    }
    if !dry_run {
        media.delete(&sweep.removed).await?;
    }
    Ok(sweep)
}
