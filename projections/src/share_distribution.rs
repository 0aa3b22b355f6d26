//! The share distribution process manager.
//!
//! A `PointsShared` event has debited the sender. For each recipient this
//! issues `ReceiveShared` with a command id derived from (share, recipient),
//! so handling the event again (after a crash, before the checkpoint moved)
//! returns the recorded outcome instead of crediting twice. A recipient who
//! cannot receive (deactivated, unknown) gets a `RefundShare` of that part,
//! again under a derived id. Only permanent refusals (the recipient is
//! deactivated or unknown) are refunded; anything else fails the batch, which
//! is retried. A part whose refund is recorded is never received afterwards,
//! so a redelivery cannot both refund and credit it.

use domain::{DomainError, Wallet, WalletCommand, WalletEvent};
use eventstore::{CommandContext, CommandError, EventStore, RecordedEvent};

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::projection::Names;
use crate::projector::{Consumer, Stepped};

/// The share distribution, as a log consumer.
pub struct ShareDistribution;

impl Consumer for ShareDistribution {
    const NAME: &'static str = "share_distribution";

    async fn step(store: &EventStore, after: Option<u64>, limit: u64) -> Result<Stepped, ProjectionError> {
        let from = match after {
            Some(after) => after,
            None => checkpoint::read(store.db(), Self::NAME, &Names::LIVE).await?,
        };
        let events = store.read_from(from, limit).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(Stepped { checkpoint: from, ..Stepped::default() });
        };
        let mut relevant = 0;
        for event in events.iter().filter(|e| e.aggregate_type == "Wallet" && e.event_type == "PointsShared") {
            distribute(store, event).await?;
            relevant += 1;
        }
        // Never backwards: if another distributor moved on meanwhile, keep its checkpoint.
        let now = eventstore::now_us();
        if !checkpoint::advance(store.db(), Self::NAME, &Names::LIVE, from, last, now).await? {
            let checkpoint = checkpoint::read(store.db(), Self::NAME, &Names::LIVE).await?;
            return Ok(Stepped { checkpoint, ..Stepped::default() });
        }
        Ok(Stepped { checkpoint: last, events: events.len() as u64, relevant })
    }
}

/// Settles every part of the share `event` records.
async fn distribute(store: &EventStore, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let WalletEvent::PointsShared { share, store: at, recipients, .. } = event.decode::<Wallet>()? else {
        return Ok(());
    };
    let sender = domain::values::MemberId::parse(event.aggregate_id.as_str())
        .map_err(|e| ProjectionError::Missing { at: event.address(), what: format!("a valid sender id ({e})") })?;
    let correlation = event.metadata().map(|m| m.correlation_id).ok();
    let command_id =
        |step: &str, recipient: &str| format!("share/{}/{}/{recipient}/{step}", sender.as_str(), share.as_str());
    let context = |step: &str, recipient: &str| CommandContext {
        command_id: Some(command_id(step, recipient)),
        actor: Some("share-distribution".into()),
        role: Some("system".into()),
        correlation_id: correlation.clone(),
        causation_id: Some(format!("event/{}", event.position)),
        ..CommandContext::default()
    };
    for part in recipients {
        let recipient = part.member.as_str();
        if store.command_recorded(&command_id("refund", recipient)).await? {
            continue;
        }
        let receive = WalletCommand::ReceiveShared {
            member: part.member.clone(),
            share: share.clone(),
            from: sender.clone(),
            store: at.clone(),
            points: part.points,
        };
        match store.execute::<Wallet>(recipient, receive, context("receive", recipient)).await {
            Ok(_) => {}
            Err(CommandError::Rejected(reason @ (DomainError::MemberInactive(_) | DomainError::UnknownMember(_)))) => {
                tracing::info!(share = share.as_str(), recipient, %reason, "recipient cannot receive; refunding");
                let refund = WalletCommand::RefundShare { share: share.clone(), recipient: part.member.clone() };
                store.execute::<Wallet>(sender.as_str(), refund, context("refund", recipient)).await?;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}
