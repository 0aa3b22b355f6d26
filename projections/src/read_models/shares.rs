//! `shares` and `share_recipients`: each share with each recipient's status
//! (pending, received, refunded); a share is settled when none is pending.

use std::collections::BTreeSet;

use domain::{Wallet, WalletEvent};
use eventstore::RecordedEvent;
use sea_orm::{DatabaseTransaction, DbErr, Value};

use super::{decode_as, key1, key2};
use crate::entities::{share_recipients, shares};
use crate::error::ProjectionError;
use crate::projection::{Names, Projection};
use crate::table::{self, Difference, Rows, Writes, diff};

/// The shares projection.
pub struct Shares;

/// Shares keyed by id; recipients keyed by (share, member).
#[derive(Debug, Default)]
pub struct SharesState {
    /// `shares` rows.
    pub shares: Rows<String, shares::Model>,
    /// `share_recipients` rows.
    pub recipients: Rows<(String, String), share_recipients::Model>,
}

/// Status of a share or of one recipient's part.
pub mod status {
    /// Not settled yet.
    pub const PENDING: &str = "pending";
    /// Every part was received or refunded.
    pub const SETTLED: &str = "settled";
    /// The recipient got the points.
    pub const RECEIVED: &str = "received";
    /// The points went back to the sender.
    pub const REFUNDED: &str = "refunded";
}

/// The (share, recipient) a wallet event settles, if it settles one.
fn settles(event: &RecordedEvent, decoded: &WalletEvent) -> Option<(String, String, &'static str)> {
    match decoded {
        WalletEvent::SharedPointsReceived { share, .. } => {
            Some((share.as_str().to_string(), event.aggregate_id.clone(), status::RECEIVED))
        }
        WalletEvent::ShareRefunded { share, recipient, .. } => {
            Some((share.as_str().to_string(), recipient.as_str().to_string(), status::REFUNDED))
        }
        _ => None,
    }
}

impl Projection for Shares {
    const NAME: &'static str = "shares";
    const TABLES: &'static [&'static str] = &["shares", "share_recipients"];
    type State = SharesState;
    type Event = WalletEvent;

    fn decode(event: &RecordedEvent) -> Result<Option<WalletEvent>, ProjectionError> {
        // Only share events matter here: earns and redeems are not even decoded.
        let relevant = matches!(event.event_type.as_str(), "PointsShared" | "SharedPointsReceived" | "ShareRefunded");
        if !relevant {
            return Ok(None);
        }
        decode_as::<Wallet>(event)
    }

    async fn load(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, WalletEvent)],
    ) -> Result<SharesState, DbErr> {
        let mut share_ids = BTreeSet::new();
        let mut parts = BTreeSet::new();
        for (event, decoded) in events {
            if let Some((share, member, _)) = settles(event, decoded) {
                share_ids.insert(share.clone());
                parts.insert((share, member));
            }
        }
        let share_keys: Vec<Vec<Value>> = share_ids.iter().map(|s| key1(s)).collect();
        let part_keys: Vec<Vec<Value>> = parts.iter().map(|(s, m)| key2(s, m)).collect();
        let shares = table::load::<shares::Entity>(txn, &names.table("shares"), &share_keys).await?;
        let recipients =
            table::load::<share_recipients::Entity>(txn, &names.table("share_recipients"), &part_keys).await?;
        Ok(SharesState {
            shares: Rows::loaded(shares.into_iter().map(|s| (s.share_id.clone(), s))),
            recipients: Rows::loaded(recipients.into_iter().map(|r| ((r.share_id.clone(), r.member_id.clone()), r))),
        })
    }

    fn apply(state: &mut SharesState, event: &RecordedEvent, decoded: &WalletEvent) -> Result<(), ProjectionError> {
        if let WalletEvent::PointsShared { share, store, recipients, total, message } = decoded {
            let id = share.as_str().to_string();
            for part in recipients {
                let member = part.member.as_str().to_string();
                state.recipients.put(
                    (id.clone(), member.clone()),
                    share_recipients::Model {
                        share_id: id.clone(),
                        member_id: member,
                        points: part.points.get() as i64,
                        status: status::PENDING.to_string(),
                        settled_at_us: None,
                    },
                );
            }
            state.shares.put(
                id.clone(),
                shares::Model {
                    share_id: id,
                    sender_id: event.aggregate_id.clone(),
                    store_id: store.as_str().to_string(),
                    total: total.get() as i64,
                    message: message.as_str().to_string(),
                    recipients: recipients.len() as i64,
                    settled: 0,
                    status: status::PENDING.to_string(),
                    created_at_us: event.recorded_at_us,
                    position: event.position as i64,
                },
            );
            return Ok(());
        }
        let Some((share, member, outcome)) = settles(event, decoded) else { return Ok(()) };
        let missing = |what: String| ProjectionError::Missing { at: event.address(), what };
        let part = state
            .recipients
            .get_mut(&(share.clone(), member.clone()))
            .ok_or_else(|| missing(format!("share {share} recipient {member}")))?;
        if part.status != status::PENDING {
            return Ok(());
        }
        part.status = outcome.to_string();
        part.settled_at_us = Some(event.recorded_at_us);
        let row = state.shares.get_mut(&share).ok_or_else(|| missing(format!("share {share}")))?;
        row.settled += 1;
        if row.settled == row.recipients {
            row.status = status::SETTLED.to_string();
        }
        Ok(())
    }

    fn writes(state: &mut SharesState, names: &Names) -> Result<Writes, DbErr> {
        let shares = state.shares.writes::<shares::Entity>(&names.table("shares"), |s| key1(s))?;
        let recipients = state
            .recipients
            .writes::<share_recipients::Entity>(&names.table("share_recipients"), |(s, m)| key2(s, m))?;
        Ok(shares.then(recipients))
    }

    async fn dump(db: &DatabaseTransaction, names: &Names) -> Result<SharesState, DbErr> {
        let shares = table::dump::<shares::Entity>(db, &names.table("shares")).await?;
        let recipients = table::dump::<share_recipients::Entity>(db, &names.table("share_recipients")).await?;
        Ok(SharesState {
            shares: Rows::loaded(shares.into_iter().map(|s| (s.share_id.clone(), s))),
            recipients: Rows::loaded(recipients.into_iter().map(|r| ((r.share_id.clone(), r.member_id.clone()), r))),
        })
    }

    fn diff(expected: &SharesState, found: &SharesState) -> Vec<Difference> {
        let mut differences = diff("shares", &expected.shares, &found.shares);
        differences.extend(diff("share_recipients", &expected.recipients, &found.recipients));
        differences
    }
}
