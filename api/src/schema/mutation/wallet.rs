//! Points: earn, redeem, share, and the admins' corrections.

use async_graphql::{Context, Object, Result};
use domain::values::{Adjustment, Amount, MemberId, PurchaseRef, Reason, ShareId, ShareMessage, StoreId};
use domain::{SharePart, Wallet, WalletCommand};

use super::{Run, new_id, run, written};
use crate::auth::{Claims, Role};
use crate::schema::objects::{SharePartInput, WalletResult};
use crate::schema::scalars::Long;
use crate::schema::{BalanceReads, bad_input, claims, coded, internal, permit, points_of};

/// Earning.
#[derive(Default)]
pub struct EarnMutations;

/// Spending and sharing.
#[derive(Default)]
pub struct SpendMutations;

/// Admins' corrections: adjustments and expiry.
#[derive(Default)]
pub struct CorrectionMutations;

/// Runs `command` on `member`'s wallet and answers with the balance at `store`.
async fn wallet_command(
    ctx: &Context<'_>,
    claims: &Claims,
    member: &str,
    store: String,
    command: WalletCommand,
    idempotency_key: Option<String>,
    kind: &'static str,
) -> Result<WalletResult> {
    MemberId::parse(member).map_err(bad_input)?;
    let outcome = run::<Wallet>(
        ctx,
        claims,
        Run { id: member, command, idempotency_key, projection: "wallets", kind, fresh_id: false },
    )
    .await?;
    let reads = ctx.data::<BalanceReads>()?;
    let row = reads.get(member, &store, outcome.last_position).await.map_err(internal)?;
    Ok(WalletResult {
        position: outcome.last_position.into(),
        replayed: outcome.replayed,
        balance: written(row, "balance")?.into(),
    })
}

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
        amount: Long,
        idempotency_key: Option<String>,
    ) -> Result<WalletResult> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin => true,
            Role::Staff => claims.store.as_deref() == Some(store.as_str()),
            Role::Member | Role::Auditor => false,
        })?;
        let amount = u64::try_from(amount.0).map_err(|_| coded("BAD_USER_INPUT", "amount must be positive"))?;
        let command = WalletCommand::Earn {
            member: MemberId::parse(member.as_str()).map_err(bad_input)?,
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            purchase_ref: PurchaseRef::parse(purchase_ref).map_err(bad_input)?,
            amount: Amount::new(amount).map_err(bad_input)?,
        };
        wallet_command(ctx, claims, &member, store, command, idempotency_key, "earn").await
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
    ) -> Result<WalletResult> {
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
        wallet_command(ctx, claims, &member, store, command, idempotency_key, "redeem").await
    }

    // Each argument is a GraphQL field argument.
    #[allow(clippy::too_many_arguments)]
    /// Share points held at one store with other members (the sender
    /// themself, or admin). Recipients are credited shortly after; a recipient
    /// who cannot receive is refunded to the sender. Answers with the
    /// sender's balance.
    async fn share_points(
        &self,
        ctx: &Context<'_>,
        from: String,
        store: String,
        recipients: Vec<SharePartInput>,
        message: Option<String>,
        share_id: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<WalletResult> {
        let claims = claims(ctx)?;
        permit(match claims.role {
            Role::Admin => true,
            Role::Member => claims.member.as_deref() == Some(from.as_str()),
            Role::Staff | Role::Auditor => false,
        })?;
        // Without an explicit id, a retry with the same key must name the same share.
        let share = match share_id {
            Some(share) => share,
            None => new_id(claims, &from, idempotency_key.as_deref())?,
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
            share: ShareId::parse(share).map_err(bad_input)?,
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            recipients: parts,
            message: ShareMessage::parse(message.unwrap_or_default()).map_err(bad_input)?,
        };
        wallet_command(ctx, claims, &from, store, command, idempotency_key, "share").await
    }
}

#[Object]
impl CorrectionMutations {
    /// Correct a member's balance at a store by `delta` points, with the
    /// reason on record (admin).
    async fn adjust_points(
        &self,
        ctx: &Context<'_>,
        member: String,
        store: String,
        delta: i64,
        reason: String,
        idempotency_key: Option<String>,
    ) -> Result<WalletResult> {
        let claims = claims(ctx)?;
        permit(claims.role == Role::Admin)?;
        let command = WalletCommand::Adjust {
            member: MemberId::parse(member.as_str()).map_err(bad_input)?,
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            adjustment: Adjustment::new(delta).map_err(bad_input)?,
            reason: Reason::parse(reason).map_err(bad_input)?,
        };
        wallet_command(ctx, claims, &member, store, command, idempotency_key, "adjust").await
    }

    /// Let `points` of a member's points at a store lapse (admin).
    async fn expire_points(
        &self,
        ctx: &Context<'_>,
        member: String,
        store: String,
        points: i64,
        idempotency_key: Option<String>,
    ) -> Result<WalletResult> {
        let claims = claims(ctx)?;
        permit(claims.role == Role::Admin)?;
        let command = WalletCommand::Expire {
            store: StoreId::parse(store.as_str()).map_err(bad_input)?,
            points: points_of(points)?,
        };
        wallet_command(ctx, claims, &member, store, command, idempotency_key, "expire").await
    }
}
