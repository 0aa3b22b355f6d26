//! The GraphQL schema: queries over the read models, mutations that run one
//! command each and answer from the read model once it has caught up.

use std::time::{Duration, Instant};

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object, Result, Schema, SimpleObject, Subscription};
use domain::values::{Amount, MemberId, Points, PurchaseRef, Reason, ShareId, ShareMessage, StoreId};
use domain::{SharePart, Wallet, WalletCommand};
use eventstore::{CommandContext, EventStore};
use futures_util::Stream;
use projections::entities::{balances, ledger, members, share_recipients, shares, stores};
use projections::{Names, checkpoint, queries};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use sha2::{Digest, Sha256};

use crate::auth::{AuthError, Claims, Role};
use crate::errors::{coded, command_error};

/// The schema type.
pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What every resolver can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The event store (and its database, which holds the read models).
    pub store: EventStore,
    /// How long a mutation waits for its read model to catch up.
    pub read_timeout: Duration,
    /// Request limits.
    pub limits: Limits,
}

/// Limits on what one request may ask; each hit is a clear error, not a failure.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection nesting.
    pub max_depth: usize,
    /// Highest query complexity (one per field, times page sizes).
    pub max_complexity: usize,
    /// Largest page a paginated field returns.
    pub max_page: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 12, max_complexity: 500, max_page: 100, max_body_bytes: 1 << 20 }
    }
}

/// Who is calling, as the transport found it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A valid token.
    Authenticated(Claims),
    /// A token that was refused.
    Refused(AuthError),
}

/// Builds the schema around `state`.
pub fn build(state: ApiState) -> ApiSchema {
    let limits = state.limits;
    Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot)
        .data(state)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The schema's SDL, as `pointstream schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot).finish().sdl()
}

fn state<'a>(ctx: &Context<'a>) -> Result<&'a ApiState> {
    ctx.data::<ApiState>()
}

/// The caller's claims, or `UNAUTHENTICATED`.
fn claims<'a>(ctx: &Context<'a>) -> Result<&'a Claims> {
    match ctx.data_opt::<Caller>() {
        Some(Caller::Authenticated(claims)) => Ok(claims),
        Some(Caller::Refused(reason)) => Err(coded("UNAUTHENTICATED", reason.to_string())),
        _ => Err(coded("UNAUTHENTICATED", "a bearer token is required")),
    }
}

fn forbidden() -> async_graphql::Error {
    coded("FORBIDDEN", "not allowed for this token")
}

/// `FORBIDDEN` unless the caller's role allows the operation.
fn permit(allowed: bool) -> Result<()> {
    if allowed { Ok(()) } else { Err(forbidden()) }
}

fn internal(err: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error = %err, "query failed");
    coded("INTERNAL", "internal error")
}

/// A store and the earn policy in force.
#[derive(SimpleObject)]
pub struct Store {
    id: String,
    name: String,
    owner_id: String,
    open: bool,
    /// Points per 10,000 units paid.
    rate_basis_points: i64,
    /// Most points one purchase earns.
    cap: Option<i64>,
    /// Smallest purchase that earns.
    min_purchase: i64,
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
            min_purchase: s.min_purchase,
            policy_version: s.policy_version,
        }
    }
}

/// A member's points at one store.
#[derive(SimpleObject)]
pub struct Balance {
    member_id: String,
    store_id: String,
    balance: i64,
    earned: i64,
    redeemed: i64,
    shared_out: i64,
    received: i64,
    refunded: i64,
    adjusted: i64,
    expired: i64,
}

impl From<balances::Model> for Balance {
    fn from(b: balances::Model) -> Self {
        Balance {
            member_id: b.member_id,
            store_id: b.store_id,
            balance: b.balance,
            earned: b.earned,
            redeemed: b.redeemed,
            shared_out: b.shared_out,
            received: b.received,
            refunded: b.refunded,
            adjusted: b.adjusted,
            expired: b.expired,
        }
    }
}

/// A member.
#[derive(SimpleObject)]
pub struct Member {
    id: String,
    handle: String,
    display_name: String,
    active: bool,
}

impl From<members::Model> for Member {
    fn from(m: members::Model) -> Self {
        Member { id: m.member_id, handle: m.handle, display_name: m.display_name, active: m.active }
    }
}

/// One movement of points, with the balance after it.
#[derive(SimpleObject)]
pub struct LedgerEntry {
    /// Global position of the event.
    position: i64,
    store_id: String,
    /// earn, share, receive, refund, redeem, adjust or expire.
    kind: String,
    delta: i64,
    balance_after: i64,
    purchase_ref: Option<String>,
    amount_paid: Option<i64>,
    counterparty_id: Option<String>,
    share_id: Option<String>,
    reason: Option<String>,
    /// When it was recorded, microseconds since the Unix epoch.
    recorded_at_us: i64,
}

impl From<ledger::Model> for LedgerEntry {
    fn from(l: ledger::Model) -> Self {
        LedgerEntry {
            position: l.position,
            store_id: l.store_id,
            kind: l.kind,
            delta: l.delta,
            balance_after: l.balance_after,
            purchase_ref: l.purchase_ref,
            amount_paid: l.amount_paid,
            counterparty_id: l.counterparty_id,
            share_id: l.share_id,
            reason: l.reason,
            recorded_at_us: l.recorded_at_us,
        }
    }
}

/// A share and each recipient's status.
#[derive(SimpleObject)]
pub struct Share {
    id: String,
    sender_id: String,
    store_id: String,
    total: i64,
    message: String,
    /// pending until every part is received or refunded, then settled.
    status: String,
    recipients: Vec<ShareRecipient>,
}

/// One recipient's part and what became of it.
#[derive(SimpleObject)]
pub struct ShareRecipient {
    member_id: String,
    points: i64,
    /// pending, received or refunded.
    status: String,
}

/// Who the token belongs to.
#[derive(SimpleObject)]
pub struct Me {
    role: Role,
    subject: String,
    /// The member a member token acts as.
    member: Option<Member>,
    /// The store a staff token works at.
    store_id: Option<String>,
}

/// One recipient's part of a share.
#[derive(InputObject)]
pub struct SharePartInput {
    member: String,
    points: i64,
}

/// What a mutation did: its last event's position and the state read after it.
#[derive(SimpleObject)]
pub struct EarnResult {
    /// Global position of the command's last event.
    position: i64,
    /// True when the idempotency key had been seen: nothing new was written.
    replayed: bool,
    /// The balance at the store, read after the projection reached `position`.
    balance: Balance,
}

/// Queries.
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Every store (public).
    async fn stores(&self, ctx: &Context<'_>) -> Result<Vec<Store>> {
        let db = state(ctx)?.store.db();
        let rows = stores::Entity::find().order_by_asc(stores::Column::StoreId).all(db).await.map_err(internal)?;
        Ok(rows.into_iter().map(Store::from).collect())
    }

    /// One store (public).
    async fn store(&self, ctx: &Context<'_>, id: String) -> Result<Option<Store>> {
        let db = state(ctx)?.store.db();
        Ok(stores::Entity::find_by_id(id).one(db).await.map_err(internal)?.map(Store::from))
    }

    /// A member (the member themself, staff, admins, auditors).
    async fn member(&self, ctx: &Context<'_>, id: String) -> Result<Option<Member>> {
        let claims = claims(ctx)?;
        if claims.role == Role::Member && claims.member.as_deref() != Some(id.as_str()) {
            return Err(forbidden());
        }
        let db = state(ctx)?.store.db();
        Ok(members::Entity::find_by_id(id).one(db).await.map_err(internal)?.map(Member::from))
    }

    /// A member's ledger, newest first, as a Relay connection (`first` at
    /// most the page limit, 100 by default; `after` is an entry's cursor).
    /// Staff see their store's only.
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
        let first =
            usize::try_from(first.unwrap_or(20)).map_err(|_| coded("BAD_USER_INPUT", "first must be positive"))?;
        let max_page = state(ctx)?.limits.max_page;
        if first == 0 || first > max_page {
            return Err(coded("BAD_USER_INPUT", format!("first must be between 1 and {max_page}")));
        }
        let before = match after {
            Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| coded("BAD_USER_INPUT", "after is not a cursor"))?),
            None => None,
        };
        let db = state(ctx)?.store.db();
        let mut rows =
            queries::ledger_page(db, &member, store.as_deref(), before, first as u64 + 1).await.map_err(internal)?;
        let has_next = rows.len() > first;
        rows.truncate(first);
        let mut connection = Connection::new(before.is_some(), has_next);
        connection.edges.extend(rows.into_iter().map(|row| Edge::new(row.position.to_string(), row.into())));
        Ok(connection)
    }

    /// The caller: role, and the member or store the token is bound to.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let claims = claims(ctx)?;
        let member = match &claims.member {
            Some(id) => members::Entity::find_by_id(id.clone())
                .one(state(ctx)?.store.db())
                .await
                .map_err(internal)?
                .map(Member::from),
            None => None,
        };
        Ok(Me { role: claims.role, subject: claims.sub.clone(), member, store_id: claims.store.clone() })
    }

    /// A member's balance at a store as it was at `atUs` (microseconds since
    /// the epoch), from the ledger. Same access as `balances`.
    async fn balance_at(&self, ctx: &Context<'_>, member: String, store: String, at_us: i64) -> Result<i64> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin | Role::Auditor => true,
            Role::Member => claims.member.as_deref() == Some(member.as_str()),
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
        })?;
        queries::balance_at(state(ctx)?.store.db(), &member, &store, at_us).await.map_err(internal)
    }

    /// A share with its recipients: its sender, a recipient, admins and auditors.
    async fn share(&self, ctx: &Context<'_>, id: String) -> Result<Option<Share>> {
        let claims = claims(ctx)?;
        let db = state(ctx)?.store.db();
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
            total: row.total,
            message: row.message,
            status: row.status,
            recipients: parts
                .into_iter()
                .map(|p| ShareRecipient { member_id: p.member_id, points: p.points, status: p.status })
                .collect(),
        }))
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
        let rows = query.order_by_asc(balances::Column::StoreId).all(state(ctx)?.store.db()).await.map_err(internal)?;
        Ok(rows.into_iter().map(Balance::from).collect())
    }
}

/// Mutations: one command each.
#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(EarnMutations, SpendMutations);

/// Earning.
#[derive(Default)]
pub struct EarnMutations;

/// Spending and sharing.
#[derive(Default)]
pub struct SpendMutations;

#[Object]
impl EarnMutations {
    /// Earn points for a purchase (staff of the store, or admin). Retrying
    /// with the same `idempotencyKey` returns the first result.
    async fn earn_points(
        &self,
        ctx: &Context<'_>,
        member: String,
        store: String,
        purchase_ref: String,
        amount: i64,
        idempotency_key: Option<String>,
    ) -> Result<EarnResult> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin => true,
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
            Role::Member | Role::Auditor => false,
        })?;
        let amount = u64::try_from(amount).map_err(|_| coded("BAD_USER_INPUT", "amount must be positive"))?;
        let command = WalletCommand::Earn {
            member: MemberId::parse(member.as_str()).map_err(bad_input)?,
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            purchase_ref: PurchaseRef::parse(purchase_ref).map_err(bad_input)?,
            amount: Amount::new(amount).map_err(bad_input)?,
        };
        run_wallet_command(ctx, claims, member, store, command, idempotency_key).await
    }
}

#[Object]
impl SpendMutations {
    /// Spend points on a reward: the member themself, staff of the store, or admin.
    async fn redeem_points(
        &self,
        ctx: &Context<'_>,
        member: String,
        store: String,
        points: i64,
        reward: String,
        idempotency_key: Option<String>,
    ) -> Result<EarnResult> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin => true,
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
            Role::Member => claims.member.as_deref() == Some(member.as_str()),
            Role::Auditor => false,
        })?;
        let command = WalletCommand::Redeem {
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            points: points_of(points)?,
            reward: Reason::parse(reward).map_err(bad_input)?,
        };
        run_wallet_command(ctx, claims, member, store, command, idempotency_key).await
    }

    // Each argument is a GraphQL field argument.
    #[allow(clippy::too_many_arguments)]
    /// Share points held at one store with other members (the sender
    /// themself, or admin). Recipients are credited shortly after; a recipient
    /// who cannot receive is refunded to the sender.
    async fn share_points(
        &self,
        ctx: &Context<'_>,
        from: String,
        store: String,
        recipients: Vec<SharePartInput>,
        message: Option<String>,
        share_id: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<EarnResult> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin => true,
            Role::Member => claims.member.as_deref() == Some(from.as_str()),
            Role::Staff | Role::Auditor => false,
        })?;
        // Without an explicit id, a retry with the same key must name the same share.
        let derived = idempotency_key.as_ref().map(|key| {
            let digest = Sha256::digest(format!("{from}\0{key}").as_bytes());
            format!("k{}", &hex::encode(digest)[..40])
        });
        let share = match share_id.or(derived) {
            Some(id) => ShareId::parse(id).map_err(bad_input)?,
            None => ShareId::parse(uuid::Uuid::now_v7().simple().to_string()).map_err(bad_input)?,
        };
        let parts = recipients
            .into_iter()
            .map(|part| {
                Ok(SharePart {
                    member: MemberId::parse(part.member).map_err(bad_input)?,
                    points: points_of(part.points)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let command = WalletCommand::Share {
            share,
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            recipients: parts,
            message: ShareMessage::parse(message.unwrap_or_default()).map_err(bad_input)?,
        };
        run_wallet_command(ctx, claims, from, store, command, idempotency_key).await
    }
}

fn bad_input(error: domain::values::ValueError) -> async_graphql::Error {
    coded("BAD_USER_INPUT", error.to_string())
}

fn points_of(raw: i64) -> Result<Points> {
    let raw = u64::try_from(raw).map_err(|_| coded("BAD_USER_INPUT", "points must be positive"))?;
    Points::new(raw).map_err(bad_input)
}

/// Runs `command` on `member`'s wallet and answers with the balance at
/// `store` once the wallets read model shows it.
async fn run_wallet_command(
    ctx: &Context<'_>,
    claims: &Claims,
    member: String,
    store: String,
    command: WalletCommand,
    idempotency_key: Option<String>,
) -> Result<EarnResult> {
    let state = state(ctx)?;
    let context = CommandContext {
        command_id: idempotency_key,
        actor: Some(claims.sub.clone()),
        role: Some(format!("{:?}", claims.role).to_lowercase()),
        ..CommandContext::default()
    };
    let kind = match &command {
        WalletCommand::Earn { .. } => "earn",
        WalletCommand::Redeem { .. } => "redeem",
        WalletCommand::Share { .. } => "share",
        _ => "wallet",
    };
    let started = Instant::now();
    let outcome = state.store.execute::<Wallet>(&member, command, context).await.map_err(command_error)?;
    metrics::histogram!("pointstream_command_seconds", "command" => kind).record(started.elapsed().as_secs_f64());
    wait_for_projection(state, "wallets", outcome.last_position).await?;
    let row = balances::Entity::find_by_id((member, store))
        .one(state.store.db())
        .await
        .map_err(internal)?
        .ok_or_else(|| coded("INTERNAL", "the balance is missing after the command"))?;
    Ok(EarnResult { position: outcome.last_position as i64, replayed: outcome.replayed, balance: row.into() })
}

/// Waits until projection `name` has applied `position` (read-your-writes),
/// or fails with `NOT_YET_VISIBLE`: the write succeeded but cannot be read yet.
async fn wait_for_projection(state: &ApiState, name: &str, position: u64) -> Result<()> {
    let deadline = Instant::now() + state.read_timeout;
    loop {
        let at = checkpoint::read(state.store.db(), name, &Names::LIVE).await.map_err(internal)?;
        if at >= position {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(coded(
                "NOT_YET_VISIBLE",
                format!(
                    "the command was recorded at position {position} but the {name} read model is at {at}; read again shortly"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subscriptions (over WebSocket, `/graphql/ws`).
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every movement of a member's points from now on, once the wallets read
    /// model has it (the member themself, admins, auditors).
    async fn wallet_updates(&self, ctx: &Context<'_>, member: String) -> Result<impl Stream<Item = LedgerEntry>> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin | Role::Auditor => true,
            Role::Member => claims.member.as_deref() == Some(member.as_str()),
            Role::Staff => false,
        })?;
        let state = state(ctx)?.clone();
        let from = checkpoint::read(state.store.db(), "wallets", &Names::LIVE).await.map_err(internal)?;
        let heads = state.store.subscribe();
        let follow = Follow { state, member, after: from as i64, heads, pending: std::collections::VecDeque::new() };
        Ok(futures_util::stream::unfold(follow, |mut follow| async move {
            let next = follow.next().await?;
            Some((next, follow))
        }))
    }
}

/// Where a `walletUpdates` subscription stands.
struct Follow {
    state: ApiState,
    member: String,
    after: i64,
    heads: tokio::sync::watch::Receiver<u64>,
    pending: std::collections::VecDeque<ledger::Model>,
}

impl Follow {
    /// The next ledger entry of the member; `None` when the store shuts down.
    async fn next(&mut self) -> Option<LedgerEntry> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                self.after = row.position;
                return Some(row.into());
            }
            // Wake when the log moves, then read what the read model has for the member.
            let applied = checkpoint::read(self.state.store.db(), "wallets", &Names::LIVE).await.ok()?;
            let rows = ledger::Entity::find()
                .filter(ledger::Column::MemberId.eq(self.member.as_str()))
                .filter(ledger::Column::Position.gt(self.after))
                .filter(ledger::Column::Position.lte(applied as i64))
                .order_by_asc(ledger::Column::Position)
                .limit(100)
                .all(self.state.store.db())
                .await
                .ok()?;
            if !rows.is_empty() {
                self.pending.extend(rows);
                continue;
            }
            if applied < *self.heads.borrow() {
                // The projector is behind the log: look again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            self.heads.changed().await.ok()?;
        }
    }
}
