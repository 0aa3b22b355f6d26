//! `posts`, their `post_photos`, each provider's `post_social` status, and
//! `post_photo_social`: the status of each photo added after its post was
//! created, at each provider the post targets.

use std::collections::BTreeSet;

use domain::values::{PhotoKey, Provider};
use domain::{Photo, Post, PostEvent, SocialOutcome};
use eventstore::RecordedEvent;
use sea_orm::{DatabaseTransaction, DbErr, Value};

use super::{decode_as, ids_of, key1, key2};
use crate::entities::{post_photo_social, post_photos, post_social, posts};
use crate::error::ProjectionError;
use crate::projection::{Names, Projection};
use crate::table::{self, Difference, Rows, Writes, diff};

/// The posts projection.
pub struct Posts;

/// Posts keyed by id; photos by (post, index); social status by (post,
/// provider); a later photo's status by (post, photo key, provider).
#[derive(Debug, Default)]
pub struct PostsState {
    /// `posts` rows.
    pub posts: Rows<String, posts::Model>,
    /// `post_photos` rows.
    pub photos: Rows<(String, i64), post_photos::Model>,
    /// `post_social` rows.
    pub social: Rows<(String, String), post_social::Model>,
    /// `post_photo_social` rows.
    pub photo_social: Rows<(String, String, String), post_photo_social::Model>,
}

impl Projection for Posts {
    const NAME: &'static str = "posts";
    const TABLES: &'static [&'static str] = &["posts", "post_photos", "post_social", "post_photo_social"];
    type State = PostsState;
    type Event = PostEvent;

    fn decode(event: &RecordedEvent) -> Result<Option<PostEvent>, ProjectionError> {
        decode_as::<Post>(event)
    }

    async fn load(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, PostEvent)],
    ) -> Result<PostsState, DbErr> {
        let created = created(events);
        let mut ids = ids_of(events);
        ids.retain(|id| !created.contains(id.as_str()));
        let post_keys: Vec<Vec<Value>> = ids.iter().map(|id| key1(id)).collect();
        let social_keys: Vec<Vec<Value>> =
            ids.iter().flat_map(|id| Provider::ALL.map(|provider| key2(id, provider.name()))).collect();
        let photo_social_keys: Vec<Vec<Value>> = events
            .iter()
            .filter(|(event, _)| !created.contains(event.aggregate_id.as_str()))
            .filter_map(|(event, decoded)| match decoded {
                PostEvent::SocialPhotoPublished { photo, provider, .. }
                | PostEvent::SocialPhotoFailed { photo, provider, .. }
                | PostEvent::SocialPhotoNeedsRelink { photo, provider, .. } => {
                    Some(vec![event.aggregate_id.as_str().into(), photo.as_str().into(), provider.to_string().into()])
                }
                _ => None,
            })
            .collect();
        let posts = table::load::<posts::Entity>(txn, &names.table("posts"), &post_keys).await?;
        let social = table::load::<post_social::Entity>(txn, &names.table("post_social"), &social_keys).await?;
        let photo_social =
            table::load::<post_photo_social::Entity>(txn, &names.table("post_photo_social"), &photo_social_keys)
                .await?;
        Ok(PostsState {
            posts: Rows::loaded(posts.into_iter().map(|p| (p.post_id.clone(), p))),
            photos: Rows::default(),
            social: Rows::loaded(social.into_iter().map(|s| ((s.post_id.clone(), s.provider.clone()), s))),
            photo_social: Rows::loaded(photo_social.into_iter().map(|s| (photo_social_key(&s), s))),
        })
    }

    fn without_reading(_kept: Option<&PostsState>, events: &[(&RecordedEvent, PostEvent)]) -> Option<PostsState> {
        let created = created(events);
        events.iter().all(|(event, _)| created.contains(event.aggregate_id.as_str())).then(PostsState::default)
    }

    fn apply(state: &mut PostsState, event: &RecordedEvent, decoded: &PostEvent) -> Result<(), ProjectionError> {
        let id = &event.aggregate_id;
        let missing = |what: String| ProjectionError::Missing { at: event.address(), what };
        match decoded.clone() {
            PostEvent::PostCreated { author, store, body, photos, providers, .. } => {
                state.posts.put(
                    id.clone(),
                    posts::Model {
                        post_id: id.clone(),
                        author_id: author.as_str().to_string(),
                        store_id: store.as_str().to_string(),
                        body: body.as_str().to_string(),
                        deleted: false,
                        created_at_us: event.recorded_at_us,
                        position: event.position as i64,
                        photo_count: photos.len() as i64,
                    },
                );
                for (index, photo) in photos.iter().enumerate() {
                    put_photo(state, id, index as i64, photo);
                }
                for provider in providers {
                    state.social.put(
                        (id.clone(), provider.to_string()),
                        post_social::Model {
                            post_id: id.clone(),
                            provider: provider.to_string(),
                            status: "pending".to_string(),
                            external_id: None,
                            url: None,
                            reason: None,
                            attempts: 0,
                            updated_at_us: event.recorded_at_us,
                        },
                    );
                }
            }
            PostEvent::SocialPostPublished { provider, external_id, url } => {
                settle(state, event, None, provider, SocialOutcome::Published { external_id, url })?;
            }
            PostEvent::SocialPostFailed { provider, reason, attempt } => {
                settle(state, event, None, provider, SocialOutcome::Failed { reason, attempt })?;
            }
            PostEvent::SocialPhotoPublished { photo, provider, external_id, url } => {
                settle(state, event, Some(&photo), provider, SocialOutcome::Published { external_id, url })?;
            }
            PostEvent::SocialPhotoFailed { photo, provider, reason, attempt } => {
                settle(state, event, Some(&photo), provider, SocialOutcome::Failed { reason, attempt })?;
            }
            PostEvent::SocialPostNeedsRelink { provider, reason } => {
                settle(state, event, None, provider, SocialOutcome::NeedsRelink { reason })?;
            }
            PostEvent::SocialPhotoNeedsRelink { photo, provider, reason } => {
                settle(state, event, Some(&photo), provider, SocialOutcome::NeedsRelink { reason })?;
            }
            PostEvent::PhotoAdded { photo, cross_post } => {
                let row = state.posts.get_mut(id).ok_or_else(|| missing(format!("post {id}")))?;
                let index = row.photo_count;
                row.photo_count += 1;
                put_photo(state, id, index, &photo);
                // Pending wherever the post itself is cross-posted.
                let targets = ["facebook", "twitter"].into_iter().filter(|_| cross_post);
                for provider in targets.filter(|p| state.social.get(&(id.clone(), p.to_string())).is_some()) {
                    let row = post_photo_social::Model {
                        post_id: id.clone(),
                        photo_key: photo.key.as_str().to_string(),
                        provider: provider.to_string(),
                        status: "pending".to_string(),
                        external_id: None,
                        url: None,
                        reason: None,
                        attempts: 0,
                        updated_at_us: event.recorded_at_us,
                    };
                    state.photo_social.put(photo_social_key(&row), row);
                }
            }
            PostEvent::PostDeleted => {
                let row = state.posts.get_mut(id).ok_or_else(|| missing(format!("post {id}")))?;
                row.deleted = true;
            }
        }
        Ok(())
    }

    fn writes(state: &mut PostsState, names: &Names) -> Result<Writes, DbErr> {
        post_writes(state, names)
    }

    async fn dump(db: &DatabaseTransaction, names: &Names) -> Result<PostsState, DbErr> {
        let posts = table::dump::<posts::Entity>(db, &names.table("posts")).await?;
        let photos = table::dump::<post_photos::Entity>(db, &names.table("post_photos")).await?;
        let social = table::dump::<post_social::Entity>(db, &names.table("post_social")).await?;
        let photo_social = table::dump::<post_photo_social::Entity>(db, &names.table("post_photo_social")).await?;
        Ok(PostsState {
            posts: Rows::loaded(posts.into_iter().map(|p| (p.post_id.clone(), p))),
            photos: Rows::loaded(photos.into_iter().map(|p| ((p.post_id.clone(), p.idx), p))),
            social: Rows::loaded(social.into_iter().map(|s| ((s.post_id.clone(), s.provider.clone()), s))),
            photo_social: Rows::loaded(photo_social.into_iter().map(|s| (photo_social_key(&s), s))),
        })
    }

    fn diff(expected: &PostsState, found: &PostsState) -> Vec<Difference> {
        let mut differences = diff("posts", &expected.posts, &found.posts);
        differences.extend(diff("post_photos", &expected.photos, &found.photos));
        differences.extend(diff("post_social", &expected.social, &found.social));
        differences.extend(diff("post_photo_social", &expected.photo_social, &found.photo_social));
        differences
    }
}

fn put_photo(state: &mut PostsState, post: &str, index: i64, photo: &Photo) {
    state.photos.put(
        (post.to_string(), index),
        post_photos::Model {
            post_id: post.to_string(),
            idx: index,
            photo_key: photo.key.as_str().to_string(),
            content_type: photo.content_type.clone(),
            sha256: photo.sha256.clone(),
            size: i64::try_from(photo.size).unwrap_or(i64::MAX),
        },
    );
}

fn photo_social_key(row: &post_photo_social::Model) -> (String, String, String) {
    (row.post_id.clone(), row.photo_key.clone(), row.provider.clone())
}

/// Sets one provider's answer on a `post_social` or `post_photo_social` row
/// (the same outcome columns in both).
macro_rules! set_outcome {
    ($row:expr, $outcome:expr, $at_us:expr) => {{
        let row = $row;
        match $outcome {
            SocialOutcome::Published { external_id, url } => {
                row.status = "published".to_string();
                row.external_id = Some(external_id.as_str().to_string());
                row.url = Some(url.as_str().to_string());
                row.attempts += 1;
            }
            SocialOutcome::Failed { reason, attempt } => {
                row.status = "failed".to_string();
                row.reason = Some(reason.as_str().to_string());
                row.attempts = i64::from(attempt);
            }
            SocialOutcome::NeedsRelink { reason } => {
                row.status = "needs_relink".to_string();
                row.reason = Some(reason.as_str().to_string());
            }
        }
        row.updated_at_us = $at_us;
    }};
}

/// Records one provider's answer on the post's status row, or on a later photo's.
fn settle(
    state: &mut PostsState,
    event: &RecordedEvent,
    photo: Option<&PhotoKey>,
    provider: Provider,
    outcome: SocialOutcome,
) -> Result<(), ProjectionError> {
    let id = &event.aggregate_id;
    let missing = |what: String| ProjectionError::Missing { at: event.address(), what };
    match photo {
        None => {
            let key = (id.clone(), provider.to_string());
            let row = state.social.get_mut(&key).ok_or_else(|| missing(format!("post {id} at {provider}")))?;
            set_outcome!(row, outcome, event.recorded_at_us);
        }
        Some(photo) => {
            let key = (id.clone(), photo.as_str().to_string(), provider.to_string());
            let row = state
                .photo_social
                .get_mut(&key)
                .ok_or_else(|| missing(format!("photo {photo} of post {id} at {provider}")))?;
            set_outcome!(row, outcome, event.recorded_at_us);
        }
    }
    Ok(())
}

/// The posts the decoded `events` create. A post created in a batch has no
/// rows yet: its first event is applied there and never before (the
/// checkpoint moves with each batch, and a stream starts once), so its rows
/// need no read.
fn created<'a>(events: &[(&'a RecordedEvent, PostEvent)]) -> BTreeSet<&'a str> {
    events
        .iter()
        .filter(|(_, decoded)| matches!(decoded, PostEvent::PostCreated { .. }))
        .map(|(event, _)| event.aggregate_id.as_str())
        .collect()
}

/// The statements that save `state`'s changes.
fn post_writes(state: &mut PostsState, names: &Names) -> Result<Writes, DbErr> {
    let posts = state.posts.writes::<posts::Entity>(&names.table("posts"), |p| key1(p))?;
    let photos = state
        .photos
        .writes::<post_photos::Entity>(&names.table("post_photos"), |(p, i)| vec![p.as_str().into(), (*i).into()])?;
    let social = state.social.writes::<post_social::Entity>(&names.table("post_social"), |(p, s)| key2(p, s))?;
    let photo_social =
        state.photo_social.writes::<post_photo_social::Entity>(&names.table("post_photo_social"), |(p, k, s)| {
            vec![p.as_str().into(), k.as_str().into(), s.as_str().into()]
        })?;
    Ok(posts.then(photos).then(social).then(photo_social))
}
