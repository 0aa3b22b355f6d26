//! The Wallet aggregate: one per member (its id is the member id), holding a
//! balance of points per store.
//!
//! Every movement is an event; the balance at a store is the sum of the
//! movements there and never goes below zero.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::{Claim, Claims, Services};
use crate::error::DomainError;
use crate::values::{Adjustment, Amount, MemberId, Points, PurchaseRef, Reason, ShareId, ShareMessage, StoreId};

/// The largest balance a wallet may hold at one store.
pub const MAX_BALANCE: u64 = 1_000_000_000_000_000;

/// The most recipients one share may have.
pub const MAX_RECIPIENTS: usize = 20;

/// One recipient's part of a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePart {
    /// Who receives.
    pub member: MemberId,
    /// How many points.
    pub points: Points,
}

/// What can be asked of a wallet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalletCommand {
    /// Earn points for a purchase at a store, under the store's policy in force.
    Earn { member: MemberId, store: StoreId, purchase_ref: PurchaseRef, amount: Amount },
    /// Distribute points held at one store to one or more other members.
    Share { share: ShareId, store: StoreId, recipients: Vec<SharePart>, message: ShareMessage },
    /// Credit a recipient's part of a share (issued by the share distribution).
    ReceiveShared { member: MemberId, share: ShareId, from: MemberId, store: StoreId, points: Points },
    /// Give a recipient's part back to the sender (the recipient could not receive).
    RefundShare { share: ShareId, recipient: MemberId },
    /// Spend points on a reward.
    Redeem { store: StoreId, points: Points, reward: Reason },
    /// Correct a balance (admin), with the reason on record.
    Adjust { member: MemberId, store: StoreId, adjustment: Adjustment, reason: Reason },
    /// Let points lapse.
    Expire { store: StoreId, points: Points },
}

impl Claims for WalletCommand {
    fn claims(&self) -> Vec<Claim> {
        match self {
            WalletCommand::Earn { store, purchase_ref, .. } => vec![purchase_claim(store, purchase_ref)],
            // Share ids name the share everywhere (read models, distribution): unique across senders.
            WalletCommand::Share { share, .. } => vec![Claim { kind: "share", key: share.as_str().to_string() }],
            _ => Vec::new(),
        }
    }

    fn claim_taken(&self, claim: &Claim) -> DomainError {
        match self {
            WalletCommand::Earn { store, purchase_ref, .. } => {
                DomainError::DuplicatePurchaseRef { store: store.clone(), purchase_ref: purchase_ref.clone() }
            }
            WalletCommand::Share { share, .. } => DomainError::AlreadyRegistered(format!("share {}", share.as_str())),
            _ => DomainError::AlreadyRegistered(format!("{} {}", claim.kind, claim.key)),
        }
    }
}

/// The claim that makes a purchase ref unique per store.
pub fn purchase_claim(store: &StoreId, purchase_ref: &PurchaseRef) -> Claim {
    Claim { kind: "purchase", key: format!("{store}/{purchase_ref}") }
}

/// What happened to a wallet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalletEvent {
    /// The wallet of a registered member came into being (before its first credit).
    WalletOpened { member: MemberId },
    /// Points earned for a purchase; `policy_version` is the store policy applied.
    PointsEarned { store: StoreId, purchase_ref: PurchaseRef, amount_paid: Amount, points: Points, policy_version: u32 },
    /// Points left this wallet for the recipients of a share.
    PointsShared { share: ShareId, store: StoreId, recipients: Vec<SharePart>, total: Points, message: ShareMessage },
    /// A part of someone's share arrived.
    SharedPointsReceived { share: ShareId, from: MemberId, store: StoreId, points: Points },
    /// A recipient's part came back to the sender.
    ShareRefunded { share: ShareId, recipient: MemberId, store: StoreId, points: Points },
    /// Points spent on a reward.
    PointsRedeemed { store: StoreId, points: Points, reward: Reason },
    /// An admin corrected the balance.
    PointsAdjusted { store: StoreId, adjustment: Adjustment, reason: Reason },
    /// Points lapsed.
    PointsExpired { store: StoreId, points: Points },
}

impl WalletEvent {
    /// The signed change this event makes to the balance at its store, if any.
    pub fn balance_change(&self) -> Option<(&StoreId, i128)> {
        match self {
            WalletEvent::WalletOpened { .. } => None,
            WalletEvent::PointsEarned { store, points, .. }
            | WalletEvent::SharedPointsReceived { store, points, .. }
            | WalletEvent::ShareRefunded { store, points, .. } => Some((store, i128::from(points.get()))),
            WalletEvent::PointsShared { store, total, .. } => Some((store, -i128::from(total.get()))),
            WalletEvent::PointsRedeemed { store, points, .. } | WalletEvent::PointsExpired { store, points } => {
                Some((store, -i128::from(points.get())))
            }
            WalletEvent::PointsAdjusted { store, adjustment, .. } => Some((store, i128::from(adjustment.get()))),
        }
    }
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> String {
        match self {
            WalletEvent::WalletOpened { .. } => "WalletOpened",
            WalletEvent::PointsEarned { .. } => "PointsEarned",
            WalletEvent::PointsShared { .. } => "PointsShared",
            WalletEvent::SharedPointsReceived { .. } => "SharedPointsReceived",
            WalletEvent::ShareRefunded { .. } => "ShareRefunded",
            WalletEvent::PointsRedeemed { .. } => "PointsRedeemed",
            WalletEvent::PointsAdjusted { .. } => "PointsAdjusted",
            WalletEvent::PointsExpired { .. } => "PointsExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            // v1 had `amount` instead of `amount_paid` and no policy version.
            WalletEvent::PointsEarned { .. } => "2",
            _ => "1",
        }
        .to_string()
    }
}

/// A wallet's current state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Wallet {
    owner: Option<MemberId>,
    balances: BTreeMap<StoreId, u64>,
    /// Parts of this wallet's shares that may still be refunded.
    open_shares: BTreeMap<ShareId, OpenShare>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenShare {
    store: StoreId,
    parts: BTreeMap<MemberId, Points>,
}

impl Wallet {
    /// The balance at `store` (0 where nothing was ever earned).
    pub fn balance(&self, store: &StoreId) -> u64 {
        self.balances.get(store).copied().unwrap_or(0)
    }

    /// All balances, by store.
    pub fn balances(&self) -> &BTreeMap<StoreId, u64> {
        &self.balances
    }

    /// The owner, `None` before the first credit.
    pub fn owner(&self) -> Option<&MemberId> {
        self.owner.as_ref()
    }

    fn require_owner(&self) -> Result<&MemberId, DomainError> {
        self.owner.as_ref().ok_or(DomainError::NotFound("wallet"))
    }

    /// Checks that `member` may receive into this wallet; returns the
    /// `WalletOpened` event to write first when the wallet is new.
    async fn admit_credit(
        &self,
        member: &MemberId,
        directory: &Services,
        require_active: bool,
    ) -> Result<Option<WalletEvent>, DomainError> {
        if let Some(owner) = &self.owner
            && owner != member
        {
            return Err(DomainError::WrongWallet(owner.clone()));
        }
        let status = directory.member(member).await?.ok_or_else(|| DomainError::UnknownMember(member.clone()))?;
        if require_active && !status.active {
            return Err(DomainError::MemberInactive(member.clone()));
        }
        Ok(self.owner.is_none().then(|| WalletEvent::WalletOpened { member: member.clone() }))
    }

    fn check_credit(&self, store: &StoreId, points: u64) -> Result<(), DomainError> {
        match self.balance(store).checked_add(points) {
            Some(total) if total <= MAX_BALANCE => Ok(()),
            _ => Err(DomainError::BalanceOverflow),
        }
    }

    fn check_debit(&self, store: &StoreId, points: Points) -> Result<(), DomainError> {
        let balance = self.balance(store);
        if balance < points.get() {
            return Err(DomainError::insufficient(store, balance, points));
        }
        Ok(())
    }

    async fn decide(&self, command: WalletCommand, directory: &Services) -> Result<Vec<WalletEvent>, DomainError> {
        let mut events = Vec::with_capacity(2);
        match command {
            WalletCommand::Earn { member, store, purchase_ref, amount } => {
                events.extend(self.admit_credit(&member, directory, true).await?);
                let terms = directory.store(&store).await?.ok_or_else(|| DomainError::UnknownStore(store.clone()))?;
                if !terms.open {
                    return Err(DomainError::StoreClosed(store));
                }
                let points = terms.policy.points_for(amount).ok_or_else(|| DomainError::NothingToEarn {
                    store: store.clone(),
                    amount: amount.get(),
                    min_purchase: terms.policy.min_purchase(),
                })?;
                self.check_credit(&store, points.get())?;
                events.push(WalletEvent::PointsEarned {
                    store,
                    purchase_ref,
                    amount_paid: amount,
                    points,
                    policy_version: terms.policy_version,
                });
            }
            WalletCommand::Share { share, store, recipients, message } => {
                let owner = self.require_owner()?;
                if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
                    return Err(DomainError::InvalidRecipients(format!(
                        "a share needs 1 to {MAX_RECIPIENTS} recipients"
                    )));
                }
                let mut seen = std::collections::BTreeSet::new();
                let mut total = 0u64;
                for part in &recipients {
                    if &part.member == owner {
                        return Err(DomainError::SelfShare);
                    }
                    if !seen.insert(&part.member) {
                        return Err(DomainError::InvalidRecipients(format!("{} is listed twice", part.member)));
                    }
                    if directory.member(&part.member).await?.is_none() {
                        return Err(DomainError::UnknownMember(part.member.clone()));
                    }
                    total += part.points.get();
                }
                if self.open_shares.contains_key(&share) {
                    return Err(DomainError::AlreadyRegistered(format!("share {share}")));
                }
                let total = Points::new(total)?;
                self.check_debit(&store, total)?;
                events.push(WalletEvent::PointsShared { share, store, recipients, total, message });
            }
            WalletCommand::ReceiveShared { member, share, from, store, points } => {
                if member == from {
                    return Err(DomainError::SelfShare);
                }
                events.extend(self.admit_credit(&member, directory, true).await?);
                self.check_credit(&store, points.get())?;
                events.push(WalletEvent::SharedPointsReceived { share, from, store, points });
            }
            WalletCommand::RefundShare { share, recipient } => {
                self.require_owner()?;
                let unknown = || DomainError::UnknownSharePart { share: share.clone(), recipient: recipient.clone() };
                let open = self.open_shares.get(&share).ok_or_else(unknown)?;
                let points = *open.parts.get(&recipient).ok_or_else(unknown)?;
                self.check_credit(&open.store, points.get())?;
                events.push(WalletEvent::ShareRefunded { store: open.store.clone(), share, recipient, points });
            }
            WalletCommand::Redeem { store, points, reward } => {
                self.require_owner()?;
                self.check_debit(&store, points)?;
                events.push(WalletEvent::PointsRedeemed { store, points, reward });
            }
            WalletCommand::Adjust { member, store, adjustment, reason } => {
                events.extend(self.admit_credit(&member, directory, false).await?);
                let size = adjustment.get().unsigned_abs();
                if adjustment.get() > 0 {
                    self.check_credit(&store, size)?;
                } else {
                    self.check_debit(&store, Points::new(size)?)?;
                }
                events.push(WalletEvent::PointsAdjusted { store, adjustment, reason });
            }
            WalletCommand::Expire { store, points } => {
                self.require_owner()?;
                self.check_debit(&store, points)?;
                events.push(WalletEvent::PointsExpired { store, points });
            }
        }
        Ok(events)
    }
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "Wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = DomainError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: WalletCommand,
        directory: &Services,
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(command, directory).await? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: WalletEvent) {
        if let Some((store, change)) = event.balance_change() {
            let balance = self.balances.entry(store.clone()).or_insert(0);
            // Decisions keep balances in 0..=MAX_BALANCE; clamp rather than wrap
            // should a corrupted log ever say otherwise.
            *balance = (i128::from(*balance) + change).clamp(0, i128::from(MAX_BALANCE)) as u64;
        }
        match event {
            WalletEvent::WalletOpened { member } => self.owner = Some(member),
            WalletEvent::PointsShared { share, store, recipients, .. } => {
                let parts = recipients.into_iter().map(|p| (p.member, p.points)).collect();
                self.open_shares.insert(share, OpenShare { store, parts });
            }
            WalletEvent::ShareRefunded { share, recipient, .. } => {
                if let Some(open) = self.open_shares.get_mut(&share) {
                    open.parts.remove(&recipient);
                    if open.parts.is_empty() {
                        self.open_shares.remove(&share);
                    }
                }
            }
            _ => {}
        }
    }
}
