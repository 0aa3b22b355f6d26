//! Members and stores: registration, social accounts, earn policies,
//! closing and reopening.

use async_graphql::{Context, Object, Result};
use domain::values::{DisplayName, EarnPolicy, ExternalRef, Handle, MemberId, Points, Provider, StoreId, StoreName};
use domain::{Member, MemberCommand, Store, StoreCommand};
use projections::entities::{members, stores};
use sea_orm::EntityTrait;
use workers::tokens::{TokenSet, TokenVault};

use crate::links::{LinkError, Prepared, SocialLinks};

use super::{Run, new_id, run, written};
use crate::auth::{Claims, Role};
use crate::schema::objects::{EarnPolicyInput, MemberResult, SocialLinkStart, SocialProvider, StoreResult};
use crate::schema::{bad_input, claims, coded, internal, permit, state};

/// Members.
#[derive(Default)]
pub struct MemberMutations;

/// Stores (admins).
#[derive(Default)]
pub struct StoreMutations;

/// Runs `command` on member `id` and answers with the member.
async fn member_command(
    ctx: &Context<'_>,
    claims: &Claims,
    id: &str,
    command: MemberCommand,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<MemberResult> {
    let outcome =
        run::<Member>(ctx, claims, Run { id, command, idempotency_key, projection: "members", kind, fresh_id: false })
            .await?;
    let row = members::Entity::find_by_id(id).one(state(ctx)?.store.db()).await.map_err(internal)?;
    Ok(MemberResult {
        position: outcome.last_position.into(),
        replayed: outcome.replayed,
        member: written(row, "member")?.into(),
    })
}

/// Links `prepared` for `member` (see [`SocialLinks::record`]): tokens sealed
/// first, then the link command; the tokens before are put back if it is
/// refused or repeated.
async fn link_prepared(
    ctx: &Context<'_>,
    claims: &Claims,
    links: &SocialLinks,
    member: &str,
    prepared: Prepared,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<MemberResult> {
    let store = &state(ctx)?.store;
    links
        .record(store, member, prepared, |command| member_command(ctx, claims, member, command, idempotency_key, kind))
        .await
}

/// The linking of accounts, if this server keeps tokens.
pub(crate) fn links(ctx: &Context<'_>) -> Result<std::sync::Arc<SocialLinks>> {
    state(ctx)?
        .links
        .clone()
        .ok_or_else(|| coded("BAD_USER_INPUT", "this server keeps no access tokens (no token key is configured)"))
}

/// The caller's own member id: accounts are linked by the member themself.
pub(crate) fn own_member(claims: &Claims) -> Result<&str> {
    match (claims.role, claims.member.as_deref()) {
        (Role::Member, Some(member)) => Ok(member),
        _ => Err(coded("FORBIDDEN", "only a member links their own accounts")),
    }
}

pub(crate) fn link_error(error: LinkError) -> async_graphql::Error {
    coded(error.code(), error.to_string())
}

/// Runs `command` on store `id` and answers with the store.
async fn store_command(
    ctx: &Context<'_>,
    claims: &Claims,
    id: &str,
    command: StoreCommand,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<StoreResult> {
    let outcome =
        run::<Store>(ctx, claims, Run { id, command, idempotency_key, projection: "stores", kind, fresh_id: false })
            .await?;
    let row = stores::Entity::find_by_id(id).one(state(ctx)?.store.db()).await.map_err(internal)?;
    Ok(StoreResult {
        position: outcome.last_position.into(),
        replayed: outcome.replayed,
        store: written(row, "store")?.into(),
    })
}

/// Closes or reopens a store (admin).
async fn store_state(
    ctx: &Context<'_>,
    store: &str,
    command: StoreCommand,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<StoreResult> {
    let claims = claims(ctx)?;
    permit(claims.role == Role::Admin)?;
    StoreId::parse(store).map_err(bad_input)?;
    store_command(ctx, claims, store, command, idempotency_key, kind).await
}

/// Admins act on any member; a member token only on its own member.
fn self_or_admin(claims: &Claims, member: &str) -> Result<()> {
    permit(match claims.role {
        Role::Admin => true,
        Role::Member => claims.member.as_deref() == Some(member),
        Role::Staff | Role::Auditor => false,
    })
}

fn policy(input: EarnPolicyInput) -> Result<EarnPolicy> {
    let rate = u32::try_from(input.rate_basis_points)
        .map_err(|_| coded("BAD_USER_INPUT", "rateBasisPoints must be between 0 and 4294967295"))?;
    let cap = match input.cap {
        Some(cap) => Some(
            Points::new(u64::try_from(cap).map_err(|_| coded("BAD_USER_INPUT", "cap must be positive"))?)
                .map_err(bad_input)?,
        ),
        None => None,
    };
    let min_purchase =
        u64::try_from(input.min_purchase.0).map_err(|_| coded("BAD_USER_INPUT", "minPurchase must not be negative"))?;
    EarnPolicy::new(rate, cap, min_purchase).map_err(bad_input)
}

#[Object]
impl MemberMutations {
    /// Register a member with a unique handle: an admin, or a member token
    /// minted for that member id. Without `id`, one is made (derived from the
    /// idempotency key when there is one).
    async fn register_member(
        &self,
        ctx: &Context<'_>,
        id: Option<String>,
        handle: String,
        display_name: String,
        idempotency_key: Option<String>,
    ) -> Result<MemberResult> {
        let claims = claims(ctx)?;
        let id = match id {
            Some(id) => id,
            None => new_id(claims, "member", idempotency_key.as_deref())?,
        };
        self_or_admin(claims, &id)?;
        let command = MemberCommand::Register {
            member: MemberId::parse(id.as_str()).map_err(bad_input)?,
            handle: Handle::parse(handle).map_err(bad_input)?,
            display_name: DisplayName::parse(display_name).map_err(bad_input)?,
        };
        member_command(ctx, claims, &id, command, idempotency_key, "register_member").await
    }

    /// Deactivate a member: no more earning or receiving (admin).
    async fn deactivate_member(
        &self,
        ctx: &Context<'_>,
        member: String,
        idempotency_key: Option<String>,
    ) -> Result<MemberResult> {
        let claims = claims(ctx)?;
        permit(claims.role == Role::Admin)?;
        MemberId::parse(member.as_str()).map_err(bad_input)?;
        member_command(ctx, claims, &member, MemberCommand::Deactivate, idempotency_key, "deactivate_member").await
    }

    // Each argument is a GraphQL field argument.
    #[allow(clippy::too_many_arguments)]
    /// Link the member's account at a social provider by its id there and a
    /// token pasted in (the member themself, or admin; for admins and tests:
    /// front ends link with `startSocialLink`). `accessToken` is what the
    /// social workers post with: it is sealed in its own table and never
    /// shown again, logged or put in an event. `instance` is the account's
    /// server for Mastodon and Bluesky.
    async fn link_social_account(
        &self,
        ctx: &Context<'_>,
        member: String,
        provider: SocialProvider,
        external_id: String,
        #[graphql(secret)] access_token: Option<String>,
        instance: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<MemberResult> {
        let claims = claims(ctx)?;
        self_or_admin(claims, &member)?;
        MemberId::parse(member.as_str()).map_err(bad_input)?;
        let provider: Provider = provider.into();
        let links = state(ctx)?.links.clone();
        if let Some(token) = &access_token {
            if token.is_empty() || token.len() > 4_096 {
                return Err(coded("BAD_USER_INPUT", "accessToken must be 1 to 4096 characters"));
            }
            if links.is_none() {
                return Err(coded("BAD_USER_INPUT", "this server keeps no access tokens (no token key is configured)"));
            }
        }
        let insecure = links.as_ref().is_some_and(|links| links.insecure_instances());
        let instance = instance.map(|raw| crate::links::origin(&raw, insecure)).transpose().map_err(link_error)?;
        let external_id = ExternalRef::parse(external_id).map_err(bad_input)?;
        let (Some(token), Some(links)) = (access_token, links) else {
            let command = MemberCommand::LinkSocialAccount {
                provider,
                external_id,
                instance: instance.map(ExternalRef::parse).transpose().map_err(bad_input)?,
                link: None,
            };
            return member_command(ctx, claims, &member, command, idempotency_key, "link_social_account").await;
        };
        let prepared = Prepared {
            provider,
            external_id: external_id.as_str().to_string(),
            instance,
            tokens: TokenSet::access(token),
        };
        link_prepared(ctx, claims, &links, &member, prepared, idempotency_key, "link_social_account").await
    }

    /// Start linking the caller's account at `provider` (`FACEBOOK`,
    /// `TWITTER`, or `MASTODON` with the account's `instance`): the
    /// network's authorization URL to send the member's browser to. The
    /// network sends it back to `/oauth/{provider}/callback`, which links the
    /// account; no token passes through the front end. The flow is bound to
    /// the caller and expires (`expiresAt`).
    async fn start_social_link(
        &self,
        ctx: &Context<'_>,
        provider: SocialProvider,
        instance: Option<String>,
    ) -> Result<SocialLinkStart> {
        let claims = claims(ctx)?;
        let member = own_member(claims)?;
        let links = links(ctx)?;
        let started = links
            .start(state(ctx)?.store.db(), member, provider.into(), instance.as_deref())
            .await
            .map_err(link_error)?;
        Ok(SocialLinkStart {
            authorization_url: started.url,
            expires_at: crate::schema::scalars::DateTime::from_micros(started.expires_at_us),
        })
    }

    /// Finish linking a Facebook account that manages several Pages: the
    /// Page to post to, among those `facebookPagesToLink(choice)` lists (the
    /// `choice` the callback handed the front end).
    async fn choose_facebook_page(
        &self,
        ctx: &Context<'_>,
        choice: String,
        page: String,
        idempotency_key: Option<String>,
    ) -> Result<MemberResult> {
        let claims = claims(ctx)?;
        let member = own_member(claims)?.to_string();
        let links = links(ctx)?;
        let prepared = links.choose(state(ctx)?.store.db(), &member, &choice, &page).await.map_err(link_error)?;
        link_prepared(ctx, claims, &links, &member, prepared, idempotency_key, "choose_facebook_page").await
    }

    /// Link the caller's Bluesky account with an app password (Settings →
    /// App passwords at Bluesky), exchanged here for session tokens; the
    /// password itself is not kept. `service` is the account's PDS
    /// (`https://bsky.social` by default).
    async fn link_bluesky_account(
        &self,
        ctx: &Context<'_>,
        identifier: String,
        #[graphql(secret)] app_password: String,
        service: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<MemberResult> {
        let claims = claims(ctx)?;
        let member = own_member(claims)?.to_string();
        if identifier.is_empty() || identifier.len() > 253 || app_password.is_empty() || app_password.len() > 256 {
            return Err(coded("BAD_USER_INPUT", "identifier (1 to 253 bytes) and appPassword (1 to 256) are required"));
        }
        let links = links(ctx)?;
        let prepared = links.bluesky(&identifier, &app_password, service.as_deref()).await.map_err(link_error)?;
        link_prepared(ctx, claims, &links, &member, prepared, idempotency_key, "link_bluesky_account").await
    }

    /// Unlink it (the member themself, or admin).
    async fn unlink_social_account(
        &self,
        ctx: &Context<'_>,
        member: String,
        provider: SocialProvider,
        idempotency_key: Option<String>,
    ) -> Result<MemberResult> {
        let claims = claims(ctx)?;
        self_or_admin(claims, &member)?;
        MemberId::parse(member.as_str()).map_err(bad_input)?;
        let provider: Provider = provider.into();
        let command = MemberCommand::UnlinkSocialAccount { provider };
        let unlinked = member_command(ctx, claims, &member, command, idempotency_key, "unlink_social_account").await?;
        TokenVault::remove(state(ctx)?.store.db(), &member, &provider.to_string()).await.map_err(internal)?;
        Ok(unlinked)
    }
}

#[Object]
impl StoreMutations {
    /// Register a store; its owner must be a registered member (admin).
    async fn register_store(
        &self,
        ctx: &Context<'_>,
        id: String,
        name: String,
        owner: String,
        policy: EarnPolicyInput,
        idempotency_key: Option<String>,
    ) -> Result<StoreResult> {
        let claims = claims(ctx)?;
        permit(claims.role == Role::Admin)?;
        let command = StoreCommand::Register {
            store: StoreId::parse(id.as_str()).map_err(bad_input)?,
            name: StoreName::parse(name).map_err(bad_input)?,
            owner: MemberId::parse(owner).map_err(bad_input)?,
            policy: self::policy(policy)?,
        };
        store_command(ctx, claims, &id, command, idempotency_key, "register_store").await
    }

    /// Replace a store's earn policy; its version goes up by one (admin).
    async fn update_earn_policy(
        &self,
        ctx: &Context<'_>,
        store: String,
        policy: EarnPolicyInput,
        idempotency_key: Option<String>,
    ) -> Result<StoreResult> {
        let claims = claims(ctx)?;
        permit(claims.role == Role::Admin)?;
        StoreId::parse(store.as_str()).map_err(bad_input)?;
        let command = StoreCommand::UpdateEarnPolicy { policy: self::policy(policy)? };
        store_command(ctx, claims, &store, command, idempotency_key, "update_earn_policy").await
    }

    /// Stop earning at a store (admin).
    async fn close_store(
        &self,
        ctx: &Context<'_>,
        store: String,
        idempotency_key: Option<String>,
    ) -> Result<StoreResult> {
        store_state(ctx, &store, StoreCommand::Close, idempotency_key, "close_store").await
    }

    /// Earn at a closed store again (admin).
    async fn reopen_store(
        &self,
        ctx: &Context<'_>,
        store: String,
        idempotency_key: Option<String>,
    ) -> Result<StoreResult> {
        store_state(ctx, &store, StoreCommand::Reopen, idempotency_key, "reopen_store").await
    }
}
