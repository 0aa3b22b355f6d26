//! `balances` per (member, store) and the `ledger`: every point movement with
//! the balance after it (the purchase history).

use std::collections::BTreeSet;

use domain::{Wallet, WalletEvent};
use eventstore::RecordedEvent;
use sea_orm::{DatabaseTransaction, DbErr, Value};

use super::{decode_as, key2};
use crate::entities::{balances, ledger};
use crate::error::ProjectionError;
use crate::projection::{Names, Projection};
use crate::table::{self, Difference, Rows, Writes, diff};

/// The wallets projection.
pub struct Wallets;

/// Balances keyed by (member, store); ledger rows keyed by position.
#[derive(Debug, Default)]
pub struct WalletsState {
    /// `balances` rows.
    pub balances: Rows<(String, String), balances::Model>,
    /// `ledger` rows.
    pub ledger: Rows<i64, ledger::Model>,
}

/// Most balance rows a projection written inline keeps in memory between batches.
const KEPT_BALANCES: usize = 100_000;

/// A balance with nothing on it yet.
pub(crate) fn empty_balance(member: &str, store: &str) -> balances::Model {
    balances::Model {
        member_id: member.to_string(),
        store_id: store.to_string(),
        balance: 0,
        earned: 0,
        redeemed: 0,
        shared_out: 0,
        received: 0,
        refunded: 0,
        adjusted: 0,
        expired: 0,
        last_position: 0,
    }
}

/// The (member, store) of every balance `events` change.
fn balance_keys<'a>(events: &'a [(&RecordedEvent, WalletEvent)]) -> impl Iterator<Item = (String, String)> + 'a {
    events.iter().filter_map(|(event, decoded)| {
        decoded.balance_change().map(|(store, _)| (event.aggregate_id.clone(), store.as_str().to_string()))
    })
}

impl Projection for Wallets {
    const NAME: &'static str = "wallets";
    const TABLES: &'static [&'static str] = &["balances", "ledger"];
    type State = WalletsState;
    type Event = WalletEvent;

    fn decode(event: &RecordedEvent) -> Result<Option<WalletEvent>, ProjectionError> {
        decode_as::<Wallet>(event)
    }

    async fn load(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, WalletEvent)],
    ) -> Result<WalletsState, DbErr> {
        Self::load_after(txn, names, events, WalletsState::default()).await
    }

    fn retain(kept: Option<WalletsState>, batch: WalletsState) -> Option<WalletsState> {
        // Every balance touched since the kept rows were last dropped, as
        // saved, while they are at most KEPT_BALANCES (beyond, none are
        // kept and the next batch reads its rows); the ledger only grows.
        let mut balances = kept.map(|kept| kept.balances).unwrap_or_default();
        balances.lay_over(batch.balances);
        (balances.len() <= KEPT_BALANCES).then(|| WalletsState { balances, ledger: Rows::default() })
    }

    fn kept_for(kept: &WalletsState, events: &[(&RecordedEvent, WalletEvent)]) -> WalletsState {
        let rows = balance_keys(events).filter_map(|key| kept.balances.get(&key).cloned().map(|row| (key, row)));
        WalletsState { balances: Rows::loaded(rows), ledger: Rows::default() }
    }

    fn without_reading(kept: Option<&WalletsState>, events: &[(&RecordedEvent, WalletEvent)]) -> Option<WalletsState> {
        let kept = kept?;
        let rows: Option<Vec<_>> =
            balance_keys(events).map(|key| kept.balances.get(&key).cloned().map(|row| (key, row))).collect();
        Some(WalletsState { balances: Rows::loaded(rows?), ledger: Rows::default() })
    }

    async fn load_after(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, WalletEvent)],
        mut kept: WalletsState,
    ) -> Result<WalletsState, DbErr> {
        let keys: BTreeSet<(String, String)> =
            balance_keys(events).filter(|key| kept.balances.get(key).is_none()).collect();
        if !keys.is_empty() {
            let keys: Vec<Vec<Value>> = keys.iter().map(|(m, s)| key2(m, s)).collect();
            let rows = table::load::<balances::Entity>(txn, &names.table("balances"), &keys).await?;
            kept.balances.extend_loaded(rows.into_iter().map(|b| ((b.member_id.clone(), b.store_id.clone()), b)));
        }
        Ok(kept)
    }

    fn apply(state: &mut WalletsState, event: &RecordedEvent, decoded: &WalletEvent) -> Result<(), ProjectionError> {
        let Some((store, delta)) = decoded.balance_change() else { return Ok(()) };
        let member = &event.aggregate_id;
        let key = (member.clone(), store.as_str().to_string());
        if state.balances.get(&key).is_none() {
            state.balances.put(key.clone(), empty_balance(member, store.as_str()));
        }
        let delta = delta as i64;
        let balance = state
            .balances
            .get_mut(&key)
            .ok_or_else(|| ProjectionError::Missing { at: event.address(), what: format!("balance {key:?}") })?;
        balance.balance += delta;
        balance.last_position = event.position as i64;
        let mut row = ledger::Model {
            position: event.position as i64,
            member_id: member.clone(),
            store_id: store.as_str().to_string(),
            kind: String::new(),
            delta,
            balance_after: balance.balance,
            purchase_ref: None,
            amount_paid: None,
            counterparty_id: None,
            share_id: None,
            reason: None,
            recorded_at_us: event.recorded_at_us,
        };
        let kind = match decoded {
            WalletEvent::WalletOpened { .. } => return Ok(()),
            WalletEvent::PointsEarned { purchase_ref, amount_paid, .. } => {
                balance.earned += delta;
                row.purchase_ref = Some(purchase_ref.as_str().to_string());
                row.amount_paid = Some(amount_paid.get() as i64);
                "earn"
            }
            WalletEvent::PointsShared { share, .. } => {
                balance.shared_out -= delta;
                row.share_id = Some(share.as_str().to_string());
                "share"
            }
            WalletEvent::SharedPointsReceived { share, from, .. } => {
                balance.received += delta;
                row.share_id = Some(share.as_str().to_string());
                row.counterparty_id = Some(from.as_str().to_string());
                "receive"
            }
            WalletEvent::ShareRefunded { share, recipient, .. } => {
                balance.refunded += delta;
                row.share_id = Some(share.as_str().to_string());
                row.counterparty_id = Some(recipient.as_str().to_string());
                "refund"
            }
            WalletEvent::PointsRedeemed { reward, .. } => {
                balance.redeemed -= delta;
                row.reason = Some(reward.as_str().to_string());
                "redeem"
            }
            WalletEvent::PointsAdjusted { reason, .. } => {
                balance.adjusted += delta;
                row.reason = Some(reason.as_str().to_string());
                "adjust"
            }
            WalletEvent::PointsExpired { .. } => {
                balance.expired -= delta;
                "expire"
            }
        };
        row.kind = kind.to_string();
        state.ledger.put(row.position, row);
        Ok(())
    }

    fn writes(state: &mut WalletsState, names: &Names) -> Result<Writes, DbErr> {
        wallet_writes(state, names)
    }

    async fn dump(db: &DatabaseTransaction, names: &Names) -> Result<WalletsState, DbErr> {
        let balances = table::dump::<balances::Entity>(db, &names.table("balances")).await?;
        let ledger = table::dump::<ledger::Entity>(db, &names.table("ledger")).await?;
        Ok(WalletsState {
            balances: Rows::loaded(balances.into_iter().map(|b| ((b.member_id.clone(), b.store_id.clone()), b))),
            ledger: Rows::loaded(ledger.into_iter().map(|l| (l.position, l))),
        })
    }

    fn diff(expected: &WalletsState, found: &WalletsState) -> Vec<Difference> {
        let mut differences = diff("balances", &expected.balances, &found.balances);
        differences.extend(diff("ledger", &expected.ledger, &found.ledger));
        differences
    }
}

/// The statements that save `state`'s changes.
fn wallet_writes(state: &mut WalletsState, names: &Names) -> Result<Writes, DbErr> {
    let balances = state.balances.writes::<balances::Entity>(&names.table("balances"), |(m, s)| key2(m, s))?;
    let ledger = state.ledger.writes::<ledger::Entity>(&names.table("ledger"), |p| vec![(*p).into()])?;
    // Ledger rows are append-only: once written they need not stay in memory.
    state.ledger = Rows::default();
    Ok(balances.then(ledger))
}
