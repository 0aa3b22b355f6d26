//! What the schema returns: read-model rows as GraphQL objects, and the
//! inputs mutations take.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, Result, SimpleObject};
use domain::values::Provider;
use eventstore::RecordedEvent;
use projections::entities::{
    balances, ledger, members, post_photo_social, post_photos, post_social, posts, social_accounts, stores,
};
use sea_orm::EntityTrait;

use super::scalars::{DateTime, Long};
use super::{claims, internal, loaders};
use crate::auth::Role;

/// A store and the earn policy in force.
#[derive(SimpleObject, Clone)]
pub struct Store {
    pub(crate) id: String,
    name: String,
    owner_id: String,
    open: bool,
    /// Points per 10,000 units paid.
    rate_basis_points: i64,
    /// Most points one purchase earns.
    cap: Option<i64>,
    /// Smallest purchase that earns.
    min_purchase: Long,
    policy_version: i64,
}

impl From<stores::Model> for Store {
    fn from(s: stores::Model) -> Self {
        Store {
            id: s.store_id,
            name: s.name,
            owner_id: s.owner_id,
            open: s.open,
            rate_basis_points: s.rate_basis_points,
            cap: s.cap,
            min_purchase: s.min_purchase.into(),
            policy_version: s.policy_version,
        }
    }
}

/// A member's points at one store.
#[derive(SimpleObject)]
pub struct Balance {
    member_id: String,
    store_id: String,
    balance: Long,
    earned: Long,
    redeemed: Long,
    shared_out: Long,
    received: Long,
    refunded: Long,
    adjusted: Long,
    expired: Long,
}

impl From<balances::Model> for Balance {
    fn from(b: balances::Model) -> Self {
        Balance {
            member_id: b.member_id,
            store_id: b.store_id,
            balance: b.balance.into(),
            earned: b.earned.into(),
            redeemed: b.redeemed.into(),
            shared_out: b.shared_out.into(),
            received: b.received.into(),
            refunded: b.refunded.into(),
            adjusted: b.adjusted.into(),
            expired: b.expired.into(),
        }
    }
}

/// A member.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Member {
    pub(crate) id: String,
    handle: String,
    display_name: String,
    active: bool,
    /// When they registered.
    registered_at: DateTime,
}

impl From<members::Model> for Member {
    fn from(m: members::Model) -> Self {
        Member {
            id: m.member_id,
            handle: m.handle,
            display_name: m.display_name,
            active: m.active,
            registered_at: DateTime::from_micros(m.registered_at_us),
        }
    }
}

#[ComplexObject]
impl Member {
    /// The social accounts the member linked: the member themself, admins and auditors.
    async fn social_accounts(&self, ctx: &Context<'_>) -> Result<Vec<SocialAccount>> {
        super::member_or_overseer(claims(ctx)?, &self.id)?;
        let rows = loaders(ctx)?.accounts.load_one(self.id.clone()).await.map_err(internal)?;
        Ok(rows.unwrap_or_default().into_iter().map(SocialAccount::from).collect())
    }
}

/// A social network account linked to a member.
#[derive(SimpleObject)]
pub struct SocialAccount {
    pub(crate) provider: String,
    pub(crate) external_id: String,
    /// When it was linked.
    pub(crate) linked_at: DateTime,
    /// Its server: a Mastodon instance, a Bluesky PDS.
    pub(crate) instance: Option<String>,
    /// `linked`; `needs_relink` once the network refused its tokens for good
    /// (posts there wait until the member links it again); `unlinked` in
    /// `socialAccountUpdates` when it is unlinked.
    pub(crate) status: String,
    /// Why it needs relinking.
    pub(crate) reason: Option<String>,
}

impl From<social_accounts::Model> for SocialAccount {
    fn from(a: social_accounts::Model) -> Self {
        SocialAccount {
            provider: a.provider,
            external_id: a.external_id,
            linked_at: DateTime::from_micros(a.linked_at_us),
            instance: a.instance,
            status: a.status,
            reason: a.reason,
        }
    }
}

/// One movement of points, with the balance after it.
#[derive(SimpleObject, Clone)]
pub struct LedgerEntry {
    /// Global position of the event.
    pub(crate) position: Long,
    member_id: String,
    pub(crate) store_id: String,
    /// earn, share, receive, refund, redeem, adjust or expire.
    kind: String,
    delta: i64,
    balance_after: Long,
    purchase_ref: Option<String>,
    amount_paid: Option<Long>,
    counterparty_id: Option<String>,
    share_id: Option<String>,
    reason: Option<String>,
    /// When it was recorded.
    recorded_at: DateTime,
}

impl From<ledger::Model> for LedgerEntry {
    fn from(l: ledger::Model) -> Self {
        LedgerEntry {
            position: l.position.into(),
            member_id: l.member_id,
            store_id: l.store_id,
            kind: l.kind,
            delta: l.delta,
            balance_after: l.balance_after.into(),
            purchase_ref: l.purchase_ref,
            amount_paid: l.amount_paid.map(Long),
            counterparty_id: l.counterparty_id,
            share_id: l.share_id,
            reason: l.reason,
            recorded_at: DateTime::from_micros(l.recorded_at_us),
        }
    }
}

/// A share and each recipient's status.
#[derive(SimpleObject)]
pub struct Share {
    pub(crate) id: String,
    pub(crate) sender_id: String,
    pub(crate) store_id: String,
    pub(crate) total: Long,
    pub(crate) message: String,
    /// pending until every part is received or refunded, then settled.
    pub(crate) status: String,
    pub(crate) recipients: Vec<ShareRecipient>,
}

/// One recipient's part and what became of it.
#[derive(SimpleObject)]
pub struct ShareRecipient {
    pub(crate) member_id: String,
    pub(crate) points: i64,
    /// pending, received or refunded.
    pub(crate) status: String,
}

/// Who the token belongs to.
#[derive(SimpleObject)]
pub struct Me {
    pub(crate) role: Role,
    pub(crate) subject: String,
    /// The member a member token acts as.
    pub(crate) member: Option<Member>,
    /// The store a staff token works at.
    pub(crate) store_id: Option<String>,
}

/// A member's post about a store.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Post {
    pub(crate) id: String,
    pub(crate) author_id: String,
    pub(crate) store_id: String,
    body: String,
    pub(crate) deleted: bool,
    /// When it was written.
    created_at: DateTime,
    /// Global position of the event that wrote it (its cursor in feeds).
    pub(crate) position: Long,
}

impl From<posts::Model> for Post {
    fn from(p: posts::Model) -> Self {
        Post {
            id: p.post_id,
            author_id: p.author_id,
            store_id: p.store_id,
            body: p.body,
            deleted: p.deleted,
            created_at: DateTime::from_micros(p.created_at_us),
            position: p.position.into(),
        }
    }
}

#[ComplexObject]
impl Post {
    /// Who wrote it (batched: one query for a whole page of posts).
    async fn author(&self, ctx: &Context<'_>) -> Result<Option<Member>> {
        let rows = loaders(ctx)?.members.load_one(self.author_id.clone()).await.map_err(internal)?;
        Ok(rows.and_then(|rows| rows.into_iter().next()).map(Member::from))
    }

    /// The store it is about (batched).
    async fn store(&self, ctx: &Context<'_>) -> Result<Option<Store>> {
        let rows = loaders(ctx)?.stores.load_one(self.store_id.clone()).await.map_err(internal)?;
        Ok(rows.and_then(|rows| rows.into_iter().next()).map(Store::from))
    }

    /// Its photos in display order (batched).
    async fn photos(&self, ctx: &Context<'_>) -> Result<Vec<Photo>> {
        let rows = loaders(ctx)?.photos.load_one(self.id.clone()).await.map_err(internal)?;
        Ok(rows.unwrap_or_default().into_iter().map(Photo::from).collect())
    }

    /// Where it is cross-posted and how that went, per provider (batched).
    async fn social(&self, ctx: &Context<'_>) -> Result<Vec<SocialStatus>> {
        let rows = loaders(ctx)?.social.load_one(self.id.clone()).await.map_err(internal)?;
        Ok(rows.unwrap_or_default().into_iter().map(SocialStatus::from).collect())
    }
}

/// A photo attached to a post.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Photo {
    #[graphql(skip)]
    post_id: String,
    /// Position in the post, from 0.
    index: i64,
    /// Storage key.
    key: String,
    /// MIME type found from the content.
    content_type: String,
    /// Size in bytes.
    size: i64,
    /// Hex SHA-256 of the content.
    sha256: String,
}

#[ComplexObject]
impl Photo {
    /// Where to fetch it: a URL that works for anyone holding it until it
    /// expires (a presigned S3 URL, or one signed by this API).
    async fn url(&self, ctx: &Context<'_>) -> Result<String> {
        let state = ctx.data::<crate::ApiState>()?;
        state.media.url(&self.key, state.photo_url_ttl).await.map_err(internal)
    }

    /// Where this photo is cross-posted on its own and how that went, per
    /// provider (batched): a photo added after its post was created goes to
    /// each provider the post targets once the post is published there. The
    /// post's first photos went out with the post (see `Post.social`): for
    /// them the list is empty.
    async fn social(&self, ctx: &Context<'_>) -> Result<Vec<SocialStatus>> {
        let rows = loaders(ctx)?.photo_social.load_one(self.post_id.clone()).await.map_err(internal)?;
        Ok(rows.unwrap_or_default().into_iter().filter(|s| s.photo_key == self.key).map(SocialStatus::from).collect())
    }
}

impl From<post_photos::Model> for Photo {
    fn from(p: post_photos::Model) -> Self {
        Photo {
            post_id: p.post_id,
            index: p.idx,
            key: p.photo_key,
            content_type: p.content_type,
            size: p.size,
            sha256: p.sha256,
        }
    }
}

/// Cross-posting one post, or one photo added to it later, to one provider.
#[derive(SimpleObject)]
pub struct SocialStatus {
    pub(crate) post_id: String,
    /// The photo this is about, for a photo added after the post was
    /// created; null for the post itself.
    photo_key: Option<String>,
    pub(crate) provider: String,
    /// pending, published or failed.
    pub(crate) status: String,
    /// The provider's id of the published post.
    external_id: Option<String>,
    /// Where the published post can be seen.
    url: Option<String>,
    /// Why the last attempt failed.
    reason: Option<String>,
    attempts: i64,
    /// When it last changed.
    updated_at: DateTime,
}

impl From<post_social::Model> for SocialStatus {
    fn from(s: post_social::Model) -> Self {
        SocialStatus {
            post_id: s.post_id,
            photo_key: None,
            provider: s.provider,
            status: s.status,
            external_id: s.external_id,
            url: s.url,
            reason: s.reason,
            attempts: s.attempts,
            updated_at: DateTime::from_micros(s.updated_at_us),
        }
    }
}

impl From<post_photo_social::Model> for SocialStatus {
    fn from(s: post_photo_social::Model) -> Self {
        SocialStatus {
            post_id: s.post_id,
            photo_key: Some(s.photo_key),
            provider: s.provider,
            status: s.status,
            external_id: s.external_id,
            url: s.url,
            reason: s.reason,
            attempts: s.attempts,
            updated_at: DateTime::from_micros(s.updated_at_us),
        }
    }
}

/// One event of the log, as stored (auditors).
#[derive(SimpleObject, Clone)]
pub struct LogEvent {
    /// Global position: dense from 1, in commit order.
    position: Long,
    aggregate_type: String,
    aggregate_id: String,
    /// Position in its stream, from 1.
    sequence: Long,
    event_type: String,
    event_version: i64,
    /// The payload as stored.
    payload: Json<serde_json::Value>,
    /// Who caused it, with which command and role.
    metadata: Json<serde_json::Value>,
    /// When it was recorded.
    recorded_at: DateTime,
    /// SHA-256 chain hash (hex).
    hash: String,
}

impl From<&RecordedEvent> for LogEvent {
    fn from(e: &RecordedEvent) -> Self {
        // Stored payloads are JSON the store wrote; text that is not stays visible as a string.
        let json = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()));
        LogEvent {
            position: e.position.into(),
            aggregate_type: e.aggregate_type.clone(),
            aggregate_id: e.aggregate_id.clone(),
            sequence: e.sequence.into(),
            event_type: e.event_type.clone(),
            event_version: i64::from(e.event_version),
            payload: Json(json(&e.payload)),
            metadata: Json(json(&e.metadata)),
            recorded_at: DateTime::from_micros(e.recorded_at_us),
            hash: e.hash.clone(),
        }
    }
}

/// The audit: chains verified and every read model compared with a replay of the log.
#[derive(SimpleObject)]
pub struct AuditReport {
    /// True when nothing is wrong.
    pub(crate) clean: bool,
    /// Events whose chain hash was recomputed.
    pub(crate) events_checked: Long,
    /// Streams checked.
    pub(crate) streams_checked: Long,
    /// Each projection and the position it was compared at.
    pub(crate) projections: Vec<ProjectionAudit>,
    /// Every problem found, one line each.
    pub(crate) problems: Vec<String>,
}

/// One read model's audit.
#[derive(SimpleObject)]
pub struct ProjectionAudit {
    pub(crate) name: String,
    /// The position its tables were compared at.
    pub(crate) checkpoint: Long,
    /// Rows that differ from the replay.
    pub(crate) differences: Long,
}

/// A social network.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum SocialProvider {
    /// Facebook Graph API.
    Facebook,
    /// Twitter API v2.
    Twitter,
    /// Mastodon, any instance.
    Mastodon,
    /// Bluesky (AT Protocol).
    Bluesky,
}

impl From<SocialProvider> for Provider {
    fn from(p: SocialProvider) -> Self {
        match p {
            SocialProvider::Facebook => Provider::Facebook,
            SocialProvider::Twitter => Provider::Twitter,
            SocialProvider::Mastodon => Provider::Mastodon,
            SocialProvider::Bluesky => Provider::Bluesky,
        }
    }
}

/// One recipient's part of a share.
#[derive(InputObject)]
pub struct SharePartInput {
    pub(crate) member: String,
    pub(crate) points: i64,
}

/// A store's earn policy.
#[derive(InputObject)]
pub struct EarnPolicyInput {
    /// Points per 10,000 units paid (500 = 5 %).
    pub(crate) rate_basis_points: i64,
    /// Most points one purchase earns; none for no cap.
    pub(crate) cap: Option<i64>,
    /// Smallest purchase that earns.
    pub(crate) min_purchase: Long,
}

/// A wallet mutation's result: its last event's position and the balance
/// read after the wallets read model reached it.
#[derive(SimpleObject)]
pub struct WalletResult {
    /// Global position of the command's last event.
    pub(crate) position: Long,
    /// True when the idempotency key had been seen: nothing new was written.
    pub(crate) replayed: bool,
    /// The balance at the store, read after the projection reached `position`.
    pub(crate) balance: Balance,
}

impl crate::links::Linked for MemberResult {
    fn replayed(&self) -> bool {
        self.replayed
    }
}

/// A link started: where to send the member's browser.
#[derive(SimpleObject)]
pub struct SocialLinkStart {
    /// The network's authorization page.
    pub(crate) authorization_url: String,
    /// When the flow expires: the member must come back before.
    pub(crate) expires_at: DateTime,
}

/// A Facebook Page the member manages, offered for linking.
#[derive(SimpleObject)]
pub struct FacebookPage {
    /// The Page's id.
    pub(crate) id: String,
    /// Its name.
    pub(crate) name: String,
}

/// A member mutation's result.
#[derive(SimpleObject)]
pub struct MemberResult {
    /// Global position of the command's last event.
    pub(crate) position: Long,
    /// True when the idempotency key had been seen: nothing new was written.
    pub(crate) replayed: bool,
    /// The member, read after the members read model reached `position`.
    pub(crate) member: Member,
}

/// A store mutation's result.
#[derive(SimpleObject)]
pub struct StoreResult {
    /// Global position of the command's last event.
    pub(crate) position: Long,
    /// True when the idempotency key had been seen: nothing new was written.
    pub(crate) replayed: bool,
    /// The store, read after the stores read model reached `position`.
    pub(crate) store: Store,
}

/// A post mutation's result.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct PostResult {
    /// Global position of the command's last event.
    pub(crate) position: Long,
    /// True when the idempotency key had been seen: nothing new was written.
    pub(crate) replayed: bool,
    /// The post the command was about.
    #[graphql(skip)]
    pub(crate) post_id: String,
}

#[ComplexObject]
impl PostResult {
    /// The post, read after the posts read model reached `position`.
    async fn post(&self, ctx: &Context<'_>) -> Result<Post> {
        // Read when asked for only: an upload's answer is often its position alone.
        let store = &super::state(ctx)?.store;
        let row = posts::Entity::find_by_id(self.post_id.as_str()).one(store.db()).await.map_err(internal)?;
        Ok(super::mutation::written(row, "post")?.into())
    }
}
