//! Posts: writing, adding photos and deleting. Cross-posting to the chosen
//! providers happens later, in the social workers; `postSocialStatus`
//! follows it.
//!
//! Photos arrive as GraphQL multipart uploads. All of a mutation's files are
//! checked before any is stored; each is stored under a key of its own
//! before its command runs, and removed again when the command does not
//! record it (refused, failed, or a retry answered with the first outcome).
//! A crash or a client gone in between leaves an orphan for `pointstream
//! media gc`.

use async_graphql::{Context, Object, Result, Upload};
use domain::values::{MemberId, PostBody, PostId, StoreId};
use domain::{Photo, Post, PostCommand};
use eventstore::CommandOutcome;
use projections::entities::posts;
use sea_orm::EntityTrait;

use super::{Run, new_id, run};
use crate::auth::{Claims, Role};
use crate::errors::code_of;
use crate::multipart::Scanned;
use crate::schema::objects::{PostResult, SocialProvider};
use crate::schema::{ApiState, bad_input, claims, coded, internal, permit, state};

/// Posts.
#[derive(Default)]
pub struct PostMutations;

/// Whether `error` still means the command was recorded.
fn recorded_anyway(error: &async_graphql::Error) -> bool {
    code_of(error.extensions.as_ref()) == Some("NOT_YET_VISIBLE")
}

/// Removes the uploads a failed command left, keeping any the post's log
/// names after all (a commit whose answer was lost fails with `INTERNAL`).
async fn discard_unrecorded(state: &ApiState, post: &str, photos: &[Photo]) {
    let recorded = match media::gc::photos_of(&state.store, post).await {
        Ok(keys) => keys,
        Err(err) => {
            tracing::warn!(error = %err, post, "cannot tell which uploads were recorded; `pointstream media gc` will");
            return;
        }
    };
    let unrecorded: Vec<Photo> =
        photos.iter().filter(|p| !recorded.iter().any(|k| k == p.key.as_str())).cloned().collect();
    state.media.discard(&unrecorded).await;
}

/// Checks every upload, then stores them all; on any refusal nothing is stored.
async fn store_uploads(ctx: &Context<'_>, uploads: &[Upload]) -> Result<Vec<Photo>> {
    let state = state(ctx)?;
    let limits = state.limits;
    if uploads.len() > limits.max_uploads {
        return Err(coded("BAD_USER_INPUT", format!("at most {} files per request", limits.max_uploads)));
    }
    let mut checked = Vec::with_capacity(uploads.len());
    for (index, upload) in uploads.iter().enumerate() {
        let value = upload.value(ctx).map_err(internal)?;
        let max = limits.max_upload_bytes as u64;
        // Scanned as it arrived (a multipart request), or read now.
        let (verdict, streamed) = match ctx.data_opt::<Scanned>().and_then(|scanned| scanned.of(upload)) {
            Some(arrival) => {
                let streamed = arrival.streamed();
                (arrival.finish(value.content, max), streamed)
            }
            None => (media::photo::check(value.content, max).await, None),
        };
        let photo = verdict.map_err(|refusal| match refusal {
            media::Rejection::Unreadable(err) => internal(err),
            refusal => coded("BAD_USER_INPUT", format!("file {index} ({}): {refusal}", value.filename)),
        })?;
        checked.push((photo, streamed));
    }
    let mut stored = Vec::with_capacity(checked.len());
    for (photo, streamed) in checked {
        let mut started = std::time::Instant::now();
        // Put while it arrived: only its last byte is left to send.
        let completed = match streamed {
            Some(streamed) => streamed
                .complete(&photo)
                .await
                .inspect_err(|err| {
                    tracing::warn!(error = %err, "a photo put as it arrived failed; putting it again from its file");
                })
                .ok(),
            None => None,
        };
        let (put, via) = match completed {
            Some(record) => (Ok(record), "arrival"),
            None => {
                started = std::time::Instant::now();
                (state.media.put(&media::photo::new_key(photo.kind), photo).await, "file")
            }
        };
        metrics::histogram!("pointstream_photo_put_seconds", "store" => state.media.kind(), "from" => via)
            .record(started.elapsed().as_secs_f64());
        match put {
            Ok(record) => stored.push(record),
            Err(err) => {
                state.media.discard(&stored).await;
                tracing::warn!(error = %err, "the photo store did not take a photo");
                return Err(coded(
                    "PHOTO_STORE_UNAVAILABLE",
                    "the photo store did not take the photo; nothing was recorded: try again later",
                ));
            }
        }
    }
    Ok(stored)
}

/// The author of post `id`, from the read model, or `NOT_FOUND`.
async fn author_of(state: &ApiState, id: &str) -> Result<String> {
    PostId::parse(id).map_err(bad_input)?;
    let row = posts::Entity::find_by_id(id).one(state.store.db()).await.map_err(internal)?;
    match row {
        Some(row) if !row.deleted => Ok(row.author_id),
        _ => Err(coded("NOT_FOUND", format!("no post {id}"))),
    }
}

/// The author themself, or admin.
fn permit_author(claims: &Claims, author: &str) -> Result<()> {
    permit(match claims.role {
        Role::Admin => true,
        Role::Member => claims.member.as_deref() == Some(author),
        Role::Staff | Role::Auditor => false,
    })
}

async fn post_command(
    ctx: &Context<'_>,
    claims: &Claims,
    id: &str,
    command: PostCommand,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<PostResult> {
    let outcome =
        run::<Post>(ctx, claims, Run { id, command, idempotency_key, projection: "posts", kind, fresh_id: false })
            .await?;
    Ok(answer(id, &outcome))
}

fn answer(id: &str, outcome: &CommandOutcome) -> PostResult {
    PostResult { position: outcome.last_position.into(), replayed: outcome.replayed, post_id: id.to_string() }
}

/// Runs a command that records `photos`, and removes them again unless it
/// recorded them.
async fn with_photos(
    ctx: &Context<'_>,
    claims: &Claims,
    command: Run<'_, Post>,
    photos: &[Photo],
) -> Result<PostResult> {
    let state = state(ctx)?;
    let id = command.id;
    match run::<Post>(ctx, claims, command).await {
        Ok(outcome) => {
            if outcome.replayed {
                // The first attempt's photos are the recorded ones.
                state.media.discard(photos).await;
            }
            Ok(answer(id, &outcome))
        }
        Err(error) => {
            if !recorded_anyway(&error) {
                discard_unrecorded(state, id, photos).await;
            }
            Err(error)
        }
    }
}

#[Object]
impl PostMutations {
    // Each argument is a GraphQL field argument.
    #[allow(clippy::too_many_arguments)]
    /// Write a post about a store, with up to 10 photos (multipart uploads:
    /// JPEG, PNG, WebP or GIF by content), to be cross-posted to `providers`
    /// (the author themself, or admin). Without `id`, one is made (derived
    /// from the idempotency key when there is one).
    async fn create_post(
        &self,
        ctx: &Context<'_>,
        author: String,
        store: String,
        body: String,
        #[graphql(default)] providers: Vec<SocialProvider>,
        #[graphql(default)] photos: Vec<Upload>,
        id: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<PostResult> {
        let claims = claims(ctx)?;
        permit_author(claims, &author)?;
        let id = match id {
            Some(id) => id,
            None => new_id(claims, &author, idempotency_key.as_deref())?,
        };
        let mut providers: Vec<_> = providers.into_iter().map(Into::into).collect();
        providers.sort();
        providers.dedup();
        let (post, author, store, body) = (
            PostId::parse(id.as_str()).map_err(bad_input)?,
            MemberId::parse(author).map_err(bad_input)?,
            StoreId::parse(store).map_err(bad_input)?,
            PostBody::parse(body).map_err(bad_input)?,
        );
        let stored = store_uploads(ctx, &photos).await?;
        let command = PostCommand::Create { post, author, store, body, photos: stored.clone(), providers };
        // A post is created once: its stream is taken to be empty, not read.
        // An id that names a post already (given twice, or a key's id) conflicts
        // on append, and the command is decided again on the stored post.
        let run = Run { id: &id, command, idempotency_key, projection: "posts", kind: "create_post", fresh_id: true };
        with_photos(ctx, claims, run, &stored).await
    }

    /// Add a photo (a multipart upload) to a post (its author, or admin).
    async fn upload_photo(
        &self,
        ctx: &Context<'_>,
        post: String,
        file: Upload,
        idempotency_key: Option<String>,
    ) -> Result<PostResult> {
        let claims = claims(ctx)?;
        let author = author_of(state(ctx)?, &post).await?;
        permit_author(claims, &author)?;
        let stored = store_uploads(ctx, std::slice::from_ref(&file)).await?;
        let Some(photo) = stored.first().cloned() else {
            return Err(coded("BAD_USER_INPUT", "no file"));
        };
        let command = PostCommand::AddPhoto { photo };
        let run =
            Run { id: &post, command, idempotency_key, projection: "posts", kind: "upload_photo", fresh_id: false };
        with_photos(ctx, claims, run, &stored).await
    }

    /// Delete a post and its photos (its author, or admin).
    async fn delete_post(&self, ctx: &Context<'_>, id: String, idempotency_key: Option<String>) -> Result<PostResult> {
        let claims = claims(ctx)?;
        let state = state(ctx)?;
        PostId::parse(id.as_str()).map_err(bad_input)?;
        let row = posts::Entity::find_by_id(id.as_str()).one(state.store.db()).await.map_err(internal)?;
        let Some(row) = row else {
            return Err(coded("NOT_FOUND", format!("no post {id}")));
        };
        permit_author(claims, &row.author_id)?;
        let result = post_command(ctx, claims, &id, PostCommand::Delete, idempotency_key, "delete_post").await;
        let deleted = result.as_ref().is_ok() || result.as_ref().is_err_and(recorded_anyway);
        if deleted {
            // From the log once the post is deleted: no photo can join it any
            // more, and one added a moment ago counts.
            let removed = match media::gc::photos_of(&state.store, &id).await {
                Ok(photos) => state.media.delete(&photos).await,
                Err(err) => Err(err),
            };
            if let Err(err) = removed {
                tracing::warn!(error = %err, post = %id, "could not remove a deleted post's photos; `pointstream media gc` will");
            }
        }
        result
    }
}
