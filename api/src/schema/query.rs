//! Queries over the read models, and the auditors' view of the log.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, Result};
use eventstore::LogFilter;
use projections::entities::{balances, members, posts, share_recipients, shares, stores};
use projections::queries;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::objects::{
    AuditReport, Balance, LedgerEntry, LogEvent, Me, Member, Post, ProjectionAudit, Share, ShareRecipient, Store,
};
use super::proofs::{self, ConsistencyProof, InclusionProof, LedgerProof, LogDigest};
use super::scalars::{DateTime, Long};
use super::{claims, coded, forbidden, internal, loaders, page_size, permit, state};
use crate::auth::Role;
use crate::replicas::read_db;

/// Queries.
pub struct QueryRoot;

/// `after` as a position cursor.
fn position_cursor(after: Option<String>) -> Result<Option<i64>> {
    match after {
        Some(cursor) => cursor
            .parse::<i64>()
            .map(Some)
            .map_err(|_| coded("BAD_USER_INPUT", "after is not a cursor returned by this field")),
        None => Ok(None),
    }
}

/// A page costs what one row costs, times the rows asked for.
fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = usize::try_from(first.unwrap_or(20)).unwrap_or(0).max(1);
    PAGE_QUERY_COST.saturating_add(rows.saturating_mul(child_complexity))
}

/// What a page costs besides its rows: one indexed range query.
const PAGE_QUERY_COST: usize = 10;
/// A Merkle proof: one indexed read of O(log n) tree nodes.
const PROOF_COST: usize = 10;
/// `balanceAt`: a ledger lookup by time.
const BALANCE_AT_COST: usize = 20;
/// `auditReport`: a replay of the whole log, compared with every read model
/// (and at most one per request, see `documents::Reach`).
const AUDIT_REPORT_COST: usize = 1_000;

/// A page of rows ordered by position, one extra fetched to know whether more follow.
fn connection<T: async_graphql::OutputType>(
    mut rows: Vec<(i64, T)>,
    first: usize,
    has_previous: bool,
) -> Connection<String, T> {
    let has_next = rows.len() > first;
    rows.truncate(first);
    let mut connection = Connection::new(has_previous, has_next);
    connection.edges.extend(rows.into_iter().map(|(position, row)| Edge::new(position.to_string(), row)));
    connection
}

#[Object(name = "Query")]
impl QueryRoot {
    /// Every store (public).
    async fn stores(&self, ctx: &Context<'_>) -> Result<Vec<Store>> {
        let db = &read_db(ctx).await?;
        let rows = stores::Entity::find().order_by_asc(stores::Column::StoreId).all(db).await.map_err(internal)?;
        Ok(rows.into_iter().map(Store::from).collect())
    }

    /// One store (public).
    async fn store(&self, ctx: &Context<'_>, id: String) -> Result<Option<Store>> {
        let db = &read_db(ctx).await?;
        Ok(stores::Entity::find_by_id(id).one(db).await.map_err(internal)?.map(Store::from))
    }

    /// The caller: role, and the member or store the token is bound to.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let claims = claims(ctx)?;
        let member = match &claims.member {
            Some(id) => members::Entity::find_by_id(id.clone())
                .one(&read_db(ctx).await?)
                .await
                .map_err(internal)?
                .map(Member::from),
            None => None,
        };
        Ok(Me { role: claims.role, subject: claims.sub.clone(), member, store_id: claims.store.clone() })
    }

    /// The Facebook Pages offered to the caller by a link's `choice` (the
    /// callback hands it to the front end when the account manages several):
    /// pick one with `chooseFacebookPage`. Never their tokens.
    async fn facebook_pages_to_link(
        &self,
        ctx: &Context<'_>,
        choice: String,
    ) -> Result<Vec<super::objects::FacebookPage>> {
        use super::mutation::{link_error, links, own_member};
        let member = own_member(claims(ctx)?)?;
        // The primary: the flow was written a moment ago, and is no read model.
        let pages = links(ctx)?.pages(state(ctx)?.store.db(), member, &choice).await.map_err(link_error)?;
        Ok(pages.into_iter().map(|page| super::objects::FacebookPage { id: page.id, name: page.name }).collect())
    }

    /// A member (the member themself, staff, admins, auditors).
    async fn member(&self, ctx: &Context<'_>, id: String) -> Result<Option<Member>> {
        let claims = claims(ctx)?;
        if claims.role == Role::Member && claims.member.as_deref() != Some(id.as_str()) {
            return Err(forbidden());
        }
        let db = &read_db(ctx).await?;
        Ok(members::Entity::find_by_id(id).one(db).await.map_err(internal)?.map(Member::from))
    }

    /// A member's balances: the member themself, admins and auditors; staff
    /// see only their store's.
    async fn balances(&self, ctx: &Context<'_>, member: String) -> Result<Vec<Balance>> {
        let claims = claims(ctx)?;
        let mut query = balances::Entity::find().filter(balances::Column::MemberId.eq(member.as_str()));
        match claims.role {
            Role::Admin | Role::Auditor => {}
            Role::Member if claims.member.as_deref() == Some(member.as_str()) => {}
            Role::Staff => {
                query = query.filter(balances::Column::StoreId.eq(claims.store.clone().unwrap_or_default()));
            }
            Role::Member => return Err(forbidden()),
        }
        let rows = query.order_by_asc(balances::Column::StoreId).all(&read_db(ctx).await?).await.map_err(internal)?;
        Ok(rows.into_iter().map(Balance::from).collect())
    }

    /// A member's balance at a store as it was at the instant `at`, from the
    /// ledger. Same access as `balances`.
    #[graphql(complexity = "BALANCE_AT_COST")]
    async fn balance_at(&self, ctx: &Context<'_>, member: String, store: String, at: DateTime) -> Result<Long> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin | Role::Auditor => true,
            Role::Member => claims.member.as_deref() == Some(member.as_str()),
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
        })?;
        queries::balance_at(&read_db(ctx).await?, &member, &store, at.micros).await.map(Long).map_err(internal)
    }

    /// A member's ledger, newest first, as a Relay connection (`first` at
    /// most the page limit, 100 by default; `after` is an entry's cursor).
    /// Staff see their store's only.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn ledger(
        &self,
        ctx: &Context<'_>,
        member: String,
        store: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, LedgerEntry>> {
        let claims = claims(ctx)?;
        let store = match claims.role {
            Role::Admin | Role::Auditor => store,
            Role::Member if claims.member.as_deref() == Some(member.as_str()) => store,
            Role::Staff => claims.store.clone(),
            Role::Member => return Err(forbidden()),
        };
        let first = page_size(ctx, first)?;
        let before = position_cursor(after)?;
        let db = &read_db(ctx).await?;
        let rows =
            queries::ledger_page(db, &member, store.as_deref(), before, first as u64 + 1).await.map_err(internal)?;
        Ok(connection(rows.into_iter().map(|row| (row.position, row.into())).collect(), first, before.is_some()))
    }

    /// A share with its recipients: its sender, a recipient, admins and auditors.
    async fn share(&self, ctx: &Context<'_>, id: String) -> Result<Option<Share>> {
        let claims = claims(ctx)?;
        let db = &read_db(ctx).await?;
        let Some(row) = shares::Entity::find_by_id(id.clone()).one(db).await.map_err(internal)? else {
            return Ok(None);
        };
        let parts = share_recipients::Entity::find()
            .filter(share_recipients::Column::ShareId.eq(id.as_str()))
            .order_by_asc(share_recipients::Column::MemberId)
            .all(db)
            .await
            .map_err(internal)?;
        let involved = |m: &str| row.sender_id == m || parts.iter().any(|p| p.member_id == m);
        permit(match claims.role {
            Role::Admin | Role::Auditor => true,
            Role::Member => claims.member.as_deref().is_some_and(involved),
            Role::Staff => claims.store.as_deref() == Some(row.store_id.as_str()),
        })?;
        Ok(Some(Share {
            id: row.share_id,
            sender_id: row.sender_id,
            store_id: row.store_id,
            total: row.total.into(),
            message: row.message,
            status: row.status,
            recipients: parts
                .into_iter()
                .map(|p| ShareRecipient { member_id: p.member_id, points: p.points, status: p.status })
                .collect(),
        }))
    }

    /// One post (any signed-in caller). A deleted post is shown to its
    /// author, admins and auditors only.
    async fn post(&self, ctx: &Context<'_>, id: String) -> Result<Option<Post>> {
        let claims = claims(ctx)?;
        let row = posts::Entity::find_by_id(id).one(&read_db(ctx).await?).await.map_err(internal)?;
        Ok(row.map(Post::from).filter(|post| {
            !post.deleted
                || matches!(claims.role, Role::Admin | Role::Auditor)
                || claims.member.as_deref() == Some(post.author_id.as_str())
        }))
    }

    /// Posts, newest first, by one author and/or about one store (any signed-in
    /// caller); deleted posts are left out.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        author: Option<String>,
        store: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Post>> {
        claims(ctx)?;
        post_page(ctx, author, store, first, after).await
    }

    /// Every store's posts, newest first (any signed-in caller). Authors,
    /// stores, photos and social status are batched: a page costs a fixed
    /// number of queries.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn feed(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Post>> {
        claims(ctx)?;
        post_page(ctx, None, None, first, after).await
    }

    /// The raw event log in position order, from after `after` (an event's
    /// cursor, or none for the start), optionally only one aggregate type,
    /// aggregate or event name: auditors and admins.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        aggregate_type: Option<String>,
        aggregate_id: Option<String>,
        event_type: Option<String>,
    ) -> Result<Connection<String, LogEvent>> {
        let claims = claims(ctx)?;
        permit(matches!(claims.role, Role::Admin | Role::Auditor))?;
        let first = page_size(ctx, first)?;
        let after = position_cursor(after)?;
        let filter = LogFilter { aggregate_type, aggregate_id, event_type };
        let events = state(ctx)?
            .store
            .read_matching(after.unwrap_or(0).max(0) as u64, first as u64 + 1, &filter)
            .await
            .map_err(internal)?;
        let rows = events.iter().map(|e| (e.position as i64, LogEvent::from(e))).collect();
        Ok(connection(rows, first, after.is_some()))
    }

    /// The position of the last event in the log (auditors and admins).
    async fn log_head(&self, ctx: &Context<'_>) -> Result<Long> {
        let claims = claims(ctx)?;
        permit(matches!(claims.role, Role::Admin | Role::Auditor))?;
        Ok(state(ctx)?.store.read_head().await.map_err(internal)?.into())
    }

    /// The latest signed digest of the log, or the one of exactly
    /// `treeSize` events; null if none (any signed-in caller).
    async fn log_digest(&self, ctx: &Context<'_>, tree_size: Option<Long>) -> Result<Option<LogDigest>> {
        claims(ctx)?;
        proofs::log_digest(ctx, tree_size).await
    }

    /// Signed digests of more than `afterSize` events, smallest first (any
    /// signed-in caller).
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn log_digests(
        &self,
        ctx: &Context<'_>,
        after_size: Option<Long>,
        first: Option<i32>,
    ) -> Result<Vec<LogDigest>> {
        claims(ctx)?;
        let first = page_size(ctx, first)?;
        proofs::log_digests(ctx, after_size, first).await
    }

    /// That the event at `position` is in the tree of `treeSize` events (by
    /// default the latest digest's): auditors and admins.
    #[graphql(complexity = "PROOF_COST + child_complexity")]
    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
        position: Long,
        tree_size: Option<Long>,
    ) -> Result<InclusionProof> {
        let claims = claims(ctx)?;
        permit(matches!(claims.role, Role::Admin | Role::Auditor))?;
        proofs::inclusion_proof(ctx, position, tree_size).await
    }

    /// That the tree of `toSize` events extends the tree of `fromSize` (any
    /// signed-in caller: it shows hashes only).
    #[graphql(complexity = "PROOF_COST + child_complexity")]
    async fn consistency_proof(&self, ctx: &Context<'_>, from_size: Long, to_size: Long) -> Result<ConsistencyProof> {
        claims(ctx)?;
        proofs::consistency_proof(ctx, from_size, to_size).await
    }

    /// The signed-in member's wallet events after position `after`, up to
    /// the latest digest, each with its inclusion proof in that digest.
    #[graphql(complexity = "page_complexity(first, child_complexity + PROOF_COST)")]
    async fn my_ledger_proof(&self, ctx: &Context<'_>, after: Option<Long>, first: Option<i32>) -> Result<LedgerProof> {
        let claims = claims(ctx)?;
        let member = claims.member.as_deref().ok_or_else(forbidden)?;
        let first = page_size(ctx, first)?;
        proofs::ledger_proof(ctx, member, after.map_or(0, |Long(p)| p.max(0) as u64), first).await
    }

    /// The audit (auditors and admins): every hash chain recomputed, and
    /// every read model compared row by row with a replay of the log. Reads
    /// the whole log: expect seconds on a large one.
    #[graphql(complexity = "AUDIT_REPORT_COST + child_complexity")]
    async fn audit_report(&self, ctx: &Context<'_>) -> Result<AuditReport> {
        let claims = claims(ctx)?;
        permit(matches!(claims.role, Role::Admin | Role::Auditor))?;
        let report = projections::audit(&state(ctx)?.store).await.map_err(internal)?;
        Ok(AuditReport {
            clean: report.is_clean(),
            events_checked: Long(report.chain.events as i64),
            streams_checked: Long(report.chain.streams as i64),
            problems: report.problems(),
            projections: report
                .projections
                .iter()
                .map(|p| ProjectionAudit {
                    name: p.name.to_string(),
                    checkpoint: p.checkpoint.into(),
                    differences: Long((p.differences.len() + p.unreadable.len()) as i64),
                })
                .collect(),
        })
    }
}

/// A page of live posts, newest first.
async fn post_page(
    ctx: &Context<'_>,
    author: Option<String>,
    store: Option<String>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Post>> {
    let first = page_size(ctx, first)?;
    let before = position_cursor(after)?;
    let mut query = posts::Entity::find().filter(posts::Column::Deleted.eq(false));
    if let Some(author) = author {
        query = query.filter(posts::Column::AuthorId.eq(author));
    }
    if let Some(store) = store {
        query = query.filter(posts::Column::StoreId.eq(store));
    }
    if let Some(before) = before {
        query = query.filter(posts::Column::Position.lt(before));
    }
    let rows = query
        .order_by_desc(posts::Column::Position)
        .limit(first as u64 + 1)
        .all(&read_db(ctx).await?)
        .await
        .map_err(internal)?;
    prime(ctx, &rows).await?;
    Ok(connection(rows.into_iter().map(|row| (row.position, Post::from(row))).collect(), first, before.is_some()))
}

/// Loads the relations the query selects for a whole page of posts, one
/// query per table, into the request's loaders; the fields then read them
/// from the cache.
async fn prime(ctx: &Context<'_>, rows: &[posts::Model]) -> Result<()> {
    let node = ctx.look_ahead().field("edges").field("node");
    let loaders = loaders(ctx)?;
    if !loaders.cached {
        return Ok(()); // Without a cache, priming would only load everything twice.
    }
    let posts = || rows.iter().map(|row| row.post_id.clone());
    let (author, store, photos, social, photo_social) = (
        node.field("author").exists(),
        node.field("store").exists(),
        node.field("photos").exists(),
        node.field("social").exists(),
        node.field("photos").field("social").exists(),
    );
    tokio::try_join!(
        async {
            if author {
                loaders.members.load_many(rows.iter().map(|r| r.author_id.clone())).await.map(drop)
            } else {
                Ok(())
            }
        },
        async {
            if store {
                loaders.stores.load_many(rows.iter().map(|r| r.store_id.clone())).await.map(drop)
            } else {
                Ok(())
            }
        },
        async { if photos { loaders.photos.load_many(posts()).await.map(drop) } else { Ok(()) } },
        async { if social { loaders.social.load_many(posts()).await.map(drop) } else { Ok(()) } },
        async { if photo_social { loaders.photo_social.load_many(posts()).await.map(drop) } else { Ok(()) } },
    )
    .map_err(internal)?;
    Ok(())
}
