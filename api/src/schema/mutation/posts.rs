//! Posts: writing and deleting. Cross-posting to the chosen providers
//! happens later, in the social workers; `postSocialStatus` follows it.

use async_graphql::{Context, Object, Result};
use domain::values::{MemberId, PostBody, PostId, StoreId};
use domain::{Post, PostCommand};
use projections::entities::posts;
use sea_orm::EntityTrait;

use super::{Run, new_id, run, written};
use crate::auth::{Claims, Role};
use crate::schema::objects::{PostResult, SocialProvider};
use crate::schema::{bad_input, claims, coded, internal, permit, state};

/// Posts.
#[derive(Default)]
pub struct PostMutations;

async fn post_command(
    ctx: &Context<'_>,
    claims: &Claims,
    id: &str,
    command: PostCommand,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<PostResult> {
    let outcome = run::<Post>(ctx, claims, Run { id, command, idempotency_key, projection: "posts", kind }).await?;
    let row = posts::Entity::find_by_id(id).one(state(ctx)?.store.db()).await.map_err(internal)?;
    Ok(PostResult {
        position: outcome.last_position as i64,
        replayed: outcome.replayed,
        post: written(row, "post")?.into(),
    })
}

#[Object]
impl PostMutations {
    // Each argument is a GraphQL field argument.
    #[allow(clippy::too_many_arguments)]
    /// Write a post about a store, to be cross-posted to `providers` (the
    /// author themself, or admin). Without `id`, one is made (derived from
    /// the idempotency key when there is one).
    async fn create_post(
        &self,
        ctx: &Context<'_>,
        author: String,
        store: String,
        body: String,
        #[graphql(default)] providers: Vec<SocialProvider>,
        id: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<PostResult> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin => true,
            Role::Member => claims.member.as_deref() == Some(author.as_str()),
            Role::Staff | Role::Auditor => false,
        })?;
        let id = id.unwrap_or_else(|| new_id(&author, idempotency_key.as_deref()));
        let mut providers: Vec<_> = providers.into_iter().map(Into::into).collect();
        providers.sort();
        providers.dedup();
        let command = PostCommand::Create {
            post: PostId::parse(id.as_str()).map_err(bad_input)?,
            author: MemberId::parse(author).map_err(bad_input)?,
            store: StoreId::parse(store).map_err(bad_input)?,
            body: PostBody::parse(body).map_err(bad_input)?,
            photos: Vec::new(),
            providers,
        };
        post_command(ctx, claims, &id, command, idempotency_key, "create_post").await
    }

    /// Delete a post (its author, or admin).
    async fn delete_post(&self, ctx: &Context<'_>, id: String, idempotency_key: Option<String>) -> Result<PostResult> {
        let claims = claims(ctx)?;
        PostId::parse(id.as_str()).map_err(bad_input)?;
        let row = posts::Entity::find_by_id(id.as_str()).one(state(ctx)?.store.db()).await.map_err(internal)?;
        let Some(row) = row else {
            return Err(coded("NOT_FOUND", format!("no post {id}")));
        };
        permit(match claims.role {
            Role::Admin => true,
            Role::Member => claims.member.as_deref() == Some(row.author_id.as_str()),
            Role::Staff | Role::Auditor => false,
        })?;
        post_command(ctx, claims, &id, PostCommand::Delete, idempotency_key, "delete_post").await
    }
}
