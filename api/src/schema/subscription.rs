//! Subscriptions (over WebSocket, `/graphql/ws`), fed by the process's
//! [`Tails`]: wallet updates, a store's activity, a post's social status,
//! and the auditors' event log. Each connection may hold at most
//! `max_subscriptions` at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::future::Future;

use async_graphql::{Context, Result, Subscription};
use domain::{Member, MemberEvent, Post, PostEvent};
use eventstore::RecordedEvent;
use futures_util::Stream;
use projections::entities::{post_photo_social, post_social, posts, social_accounts};
use sea_orm::EntityTrait;

use super::objects::{LedgerEntry, LogEvent, SocialAccount, SocialStatus};
use super::scalars::{DateTime, Long};
use super::{ApiState, claims, coded, internal, member_or_overseer, permit, state};
use crate::auth::Role;
use crate::checkpoints::Checkpoints;
use crate::tail::{AggregateKey, Cursor, Interest, LedgerKey, Source, Tails};

/// The subscriptions a WebSocket connection holds, shared by its operations.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSlots(Arc<AtomicUsize>);

/// One subscription's place in its connection's count; freed when the
/// subscription's stream is dropped.
struct Slot(Option<Arc<AtomicUsize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Takes a slot, or `RATE_LIMITED` when the connection holds its limit.
fn slot(ctx: &Context<'_>) -> Result<Slot> {
    let Some(ConnectionSlots(count)) = ctx.data_opt::<ConnectionSlots>() else {
        return Ok(Slot(None));
    };
    let limit = state(ctx)?.limits.max_subscriptions;
    if count.fetch_add(1, Ordering::SeqCst) >= limit {
        count.fetch_sub(1, Ordering::SeqCst);
        return Err(coded("RATE_LIMITED", format!("at most {limit} subscriptions per connection")));
    }
    Ok(Slot(Some(count.clone())))
}

fn tails<'a>(ctx: &Context<'a>) -> Result<&'a Tails> {
    ctx.data::<Tails>()
}

/// The items of `cursor`, each mapped to what the client sees, holding `slot` while it lasts.
fn follow<S: Source, T: Send + 'static>(
    cursor: Cursor<S>,
    slot: Slot,
    map: fn(S::Item) -> T,
) -> impl Stream<Item = T> + Send {
    futures_util::stream::unfold((cursor, slot), move |(mut cursor, slot)| async move {
        let item = cursor.next().await?;
        Some((map(item), (cursor, slot)))
    })
}

/// The events of one aggregate from now on that `pick` chooses, each
/// answered by `answer` once the read model of `projection` has applied it,
/// so that the answer agrees with what queries read; `None` from `answer`
/// skips the event, an error ends the subscription. Boxed: an idle
/// subscription keeps no room for the reads.
async fn aggregate_updates<K, T, A, F>(
    ctx: &Context<'_>,
    aggregate: AggregateKey,
    projection: &'static str,
    pick: fn(&RecordedEvent) -> Option<K>,
    answer: A,
) -> Result<impl Stream<Item = T> + Send + use<K, T, A, F>>
where
    K: Send + 'static,
    T: Send + 'static,
    A: Fn(Arc<ApiState>, Arc<RecordedEvent>, K) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Option<T>, sea_orm::DbErr>> + Send,
{
    let state = Arc::new(state(ctx)?.clone());
    let checkpoints = ctx.data::<Checkpoints>()?.clone();
    let slot = slot(ctx)?;
    let cursor = tails(ctx)?.log(None, Interest::Key(aggregate)).await.map_err(internal)?;
    let answer = Arc::new(answer);
    Ok(futures_util::stream::unfold((cursor, slot), move |(mut cursor, slot)| {
        let (state, checkpoints, answer) = (state.clone(), checkpoints.clone(), answer.clone());
        Box::pin(async move {
            loop {
                let event = cursor.next().await?;
                let Some(key) = pick(&event) else { continue };
                while checkpoints.wait(projection, event.position, state.read_timeout).await.is_err() {}
                if let Some(item) = answer(state.clone(), event, key).await.ok()? {
                    return Some((item, (cursor, slot)));
                }
            }
        })
    }))
}

/// Subscriptions.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every movement of a member's points from now on, once the wallets read
    /// model has it (the member themself, admins, auditors).
    async fn wallet_updates(&self, ctx: &Context<'_>, member: String) -> Result<impl Stream<Item = LedgerEntry>> {
        member_or_overseer(claims(ctx)?, &member)?;
        let slot = slot(ctx)?;
        let cursor = tails(ctx)?.ledger(Interest::Key(LedgerKey::Member(member))).await.map_err(internal)?;
        Ok(follow(cursor, slot, |row| LedgerEntry::from((*row).clone())))
    }

    /// Every movement of points at a store from now on: earns, redemptions,
    /// shares (staff of the store, admins, auditors).
    async fn store_activity(&self, ctx: &Context<'_>, store: String) -> Result<impl Stream<Item = LedgerEntry>> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin | Role::Auditor => true,
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
            Role::Member => false,
        })?;
        let slot = slot(ctx)?;
        let cursor = tails(ctx)?.ledger(Interest::Key(LedgerKey::Store(store))).await.map_err(internal)?;
        Ok(follow(cursor, slot, |row| LedgerEntry::from((*row).clone())))
    }

    /// Each provider's outcome for a post, and for each photo added to it
    /// later (`photoKey` set), from now on (published, or a failed attempt),
    /// once the posts read model shows it: its author, staff of its store,
    /// admins, auditors.
    async fn post_social_status(&self, ctx: &Context<'_>, post: String) -> Result<impl Stream<Item = SocialStatus>> {
        let claims = claims(ctx)?;
        // Boxed, as every database call of a subscription: a future is as
        // large as its largest await, and async-graphql keeps this one's
        // room in each subscription's stream for as long as it lives.
        let db = crate::replicas::read_db(ctx).await?;
        let row = Box::pin(posts::Entity::find_by_id(post.as_str()).one(&db)).await.map_err(internal)?;
        let Some(row) = row else {
            return Err(coded("NOT_FOUND", format!("no post {post}")));
        };
        permit(match claims.role {
            Role::Admin | Role::Auditor => true,
            Role::Member => claims.member.as_deref() == Some(row.author_id.as_str()),
            Role::Staff => claims.store.as_deref() == Some(row.store_id.as_str()),
        })?;
        let aggregate = AggregateKey { aggregate_type: "Post".to_string(), aggregate_id: post.clone() };
        let pick = |event: &RecordedEvent| match event.decode::<Post>() {
            Ok(
                PostEvent::SocialPostPublished { provider, .. }
                | PostEvent::SocialPostFailed { provider, .. }
                | PostEvent::SocialPostNeedsRelink { provider, .. },
            ) => Some((None, provider.to_string())),
            Ok(
                PostEvent::SocialPhotoPublished { photo, provider, .. }
                | PostEvent::SocialPhotoFailed { photo, provider, .. }
                | PostEvent::SocialPhotoNeedsRelink { photo, provider, .. },
            ) => Some((Some(photo.as_str().to_string()), provider.to_string())),
            _ => None,
        };
        aggregate_updates(ctx, aggregate, "posts", pick, move |state, _, (photo, provider)| {
            let post = post.clone();
            async move {
                let db = state.store.db();
                Ok(match photo {
                    None => post_social::Entity::find_by_id((post, provider)).one(db).await?.map(SocialStatus::from),
                    Some(photo) => post_photo_social::Entity::find_by_id((post, photo, provider))
                        .one(db)
                        .await?
                        .map(SocialStatus::from),
                })
            }
        })
        .await
    }

    /// Each change to a member's linked accounts from now on: linked (or
    /// linked again), needing a relink (the network refused its tokens for
    /// good; posts there wait), or unlinked (`status: "unlinked"`), once the
    /// members read model shows it (the member themself, admins, auditors).
    async fn social_account_updates(
        &self,
        ctx: &Context<'_>,
        member: String,
    ) -> Result<impl Stream<Item = SocialAccount>> {
        member_or_overseer(claims(ctx)?, &member)?;
        let aggregate = AggregateKey { aggregate_type: "Member".to_string(), aggregate_id: member.clone() };
        let pick = |event: &RecordedEvent| match event.decode::<Member>() {
            Ok(MemberEvent::SocialAccountUnlinked { provider }) => Some((provider, false)),
            Ok(
                MemberEvent::SocialAccountLinked { provider, .. }
                | MemberEvent::SocialAccountNeedsRelink { provider, .. },
            ) => Some((provider, true)),
            _ => None,
        };
        aggregate_updates(ctx, aggregate, "members", pick, move |state, event, (provider, linked)| {
            let member = member.clone();
            async move {
                if !linked {
                    return Ok(Some(SocialAccount {
                        provider: provider.to_string(),
                        external_id: String::new(),
                        linked_at: DateTime::from_micros(event.recorded_at_us),
                        instance: None,
                        status: "unlinked".to_string(),
                        reason: None,
                    }));
                }
                let key = (member, provider.to_string());
                Ok(social_accounts::Entity::find_by_id(key).one(state.store.db()).await?.map(SocialAccount::from))
            }
        })
        .await
    }

    /// The event log in position order from after position `after` (0: from
    /// the start): what is stored first, then what is appended, with no gap
    /// and no repeat where one becomes the other (auditors and admins).
    async fn event_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] after: Long,
    ) -> Result<impl Stream<Item = LogEvent>> {
        let claims = claims(ctx)?;
        permit(matches!(claims.role, Role::Admin | Role::Auditor))?;
        let after = u64::try_from(after.0).map_err(|_| coded("BAD_USER_INPUT", "after must not be negative"))?;
        let slot = slot(ctx)?;
        let cursor = tails(ctx)?.log(Some(after), Interest::All).await.map_err(internal)?;
        Ok(follow(cursor, slot, |event| LogEvent::from(event.as_ref())))
    }
}
