//! The GraphQL schema: queries over the read models, mutations that run one
//! command each and answer from the read model once it has caught up.

use std::time::{Duration, Instant};

use async_graphql::{Context, EmptySubscription, Object, Result, Schema, SimpleObject};
use domain::values::{Amount, MemberId, PurchaseRef, StoreId};
use domain::{Wallet, WalletCommand};
use eventstore::{CommandContext, EventStore};
use projections::entities::{balances, stores};
use projections::{Names, checkpoint};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::auth::{AuthError, Claims, Role};
use crate::errors::{coded, command_error};

/// The schema type.
pub type ApiSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// What every resolver can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The event store (and its database, which holds the read models).
    pub store: EventStore,
    /// How long a mutation waits for its read model to catch up.
    pub read_timeout: Duration,
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
    Schema::build(QueryRoot, MutationRoot, EmptySubscription).data(state).limit_depth(12).limit_complexity(500).finish()
}

/// The schema's SDL, as `pointstream schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription).finish().sdl()
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
pub struct MutationRoot;

#[Object]
impl MutationRoot {
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
        let allowed = match claims.role {
            Role::Admin => true,
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
            Role::Member | Role::Auditor => false,
        };
        if !allowed {
            return Err(forbidden());
        }
        let bad = |e: domain::values::ValueError| coded("BAD_USER_INPUT", e.to_string());
        let amount = u64::try_from(amount).map_err(|_| coded("BAD_USER_INPUT", "amount must be positive"))?;
        let command = WalletCommand::Earn {
            member: MemberId::parse(member.as_str()).map_err(bad)?,
            store: StoreId::parse(store.as_str()).map_err(bad)?,
            purchase_ref: PurchaseRef::parse(purchase_ref).map_err(bad)?,
            amount: Amount::new(amount).map_err(bad)?,
        };
        let state = state(ctx)?;
        let context = CommandContext {
            command_id: idempotency_key,
            actor: Some(claims.sub.clone()),
            role: Some(format!("{:?}", claims.role).to_lowercase()),
            ..CommandContext::default()
        };
        let outcome = state.store.execute::<Wallet>(&member, command, context).await.map_err(command_error)?;
        wait_for_projection(state, "wallets", outcome.last_position).await?;
        let row = balances::Entity::find_by_id((member, store))
            .one(state.store.db())
            .await
            .map_err(internal)?
            .ok_or_else(|| coded("INTERNAL", "the balance is missing after the earn"))?;
        Ok(EarnResult { position: outcome.last_position as i64, replayed: outcome.replayed, balance: row.into() })
    }
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
