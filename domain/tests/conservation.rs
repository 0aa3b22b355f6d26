//! Property: points are neither created nor lost.
//!
//! Random sequences of wallet commands run against the wallets of several
//! members at two stores, each command through `Aggregate::handle` as the
//! command handler runs it. Every part of an accepted share is settled as the
//! share distribution settles it: received by the recipient, or refunded to
//! the sender when the recipient cannot receive (or the distribution gives
//! up). Along the way:
//!
//! - a refused command changes nothing, and a debit larger than the balance
//!   is always refused;
//! - every decision is the one a plain model of the rules predicts;
//! - each wallet's balance at a store is the sum of its events there, which
//!   never dips below zero;
//!
//! and at the end the balances add up to earned - redeemed - expired +
//! adjustments, with every share part received or refunded exactly once.

mod support;

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use pointstream_domain::values::{Adjustment, Amount, EarnPolicy, MemberId, Points, ShareId, StoreId};
use pointstream_domain::{DomainError, InMemoryDirectory, Services, SharePart, Wallet, WalletCommand, WalletEvent};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use support::{member, message, open_terms, policy, purchase, reason, store};

/// `ann`..`eve` are registered; `dan` is deactivated (he cannot earn or
/// receive, so his parts of a share are always refunded); `zed` was never
/// registered.
const MEMBERS: [&str; 6] = ["ann", "bob", "cat", "eve", "dan", "zed"];
const DAN: usize = 4;
const ZED: usize = 5;
const STORES: [&str; 2] = ["cafe", "deli"];

fn store_policy(index: usize) -> EarnPolicy {
    match index {
        0 => policy(500, Some(100), 1_000),
        _ => policy(1_000, None, 0),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Earn {
        who: usize,
        at: usize,
        paid: u64,
    },
    Share {
        from: usize,
        at: usize,
        parts: Vec<(usize, u64)>,
    },
    /// Settle one pending share part: received, or refunded when `refund`.
    Settle {
        pick: Index,
        refund: bool,
    },
    /// Ask again for a part that was refunded already.
    RefundAgain {
        pick: Index,
    },
    Redeem {
        who: usize,
        at: usize,
        points: u64,
    },
    Expire {
        who: usize,
        at: usize,
        points: u64,
    },
    Adjust {
        who: usize,
        at: usize,
        change: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..MEMBERS.len();
    let at = 0..STORES.len();
    prop_oneof![
        4 => (who.clone(), at.clone(), 1..=40_000u64).prop_map(|(who, at, paid)| Op::Earn { who, at, paid }),
        3 => (who.clone(), at.clone(), prop::collection::vec((0..MEMBERS.len(), 1..=400u64), 1..=3))
            .prop_map(|(from, at, parts)| Op::Share { from, at, parts }),
        3 => (any::<Index>(), prop::bool::weighted(0.3)).prop_map(|(pick, refund)| Op::Settle { pick, refund }),
        1 => any::<Index>().prop_map(|pick| Op::RefundAgain { pick }),
        2 => (who.clone(), at.clone(), 1..=3_000u64).prop_map(|(who, at, points)| Op::Redeem { who, at, points }),
        1 => (who.clone(), at.clone(), 1..=3_000u64).prop_map(|(who, at, points)| Op::Expire { who, at, points }),
        2 => (who, at, -3_000..=3_000i64)
            .prop_filter("an adjustment is never zero", |(_, _, change)| *change != 0)
            .prop_map(|(who, at, change)| Op::Adjust { who, at, change }),
    ]
}

/// One recipient's part of an accepted share, not yet settled.
#[derive(Debug, Clone)]
struct Part {
    share: ShareId,
    from: MemberId,
    to: MemberId,
    store: StoreId,
    points: Points,
}

/// Totals computed from the events the wallets emitted.
#[derive(Debug, Default)]
struct Ledger {
    earned: i128,
    redeemed: i128,
    expired: i128,
    adjusted: i128,
    /// Parts of accepted shares not yet received or refunded, by share and recipient.
    open_parts: BTreeMap<(ShareId, MemberId), Points>,
    /// Each wallet's balance at each store, folded from its events without clamping.
    folded: BTreeMap<(MemberId, StoreId), i128>,
}

impl Ledger {
    fn record(&mut self, wallet: &MemberId, event: &WalletEvent) -> Result<(), TestCaseError> {
        if let Some((at, change)) = event.balance_change() {
            let balance = self.folded.entry((wallet.clone(), at.clone())).or_insert(0);
            *balance += change;
            prop_assert!(*balance >= 0, "{wallet}'s balance at {at} fell to {balance} with {event:?}");
        }
        match event {
            WalletEvent::WalletOpened { .. } => {}
            WalletEvent::PointsEarned { points, .. } => self.earned += i128::from(points.get()),
            WalletEvent::PointsRedeemed { points, .. } => self.redeemed += i128::from(points.get()),
            WalletEvent::PointsExpired { points, .. } => self.expired += i128::from(points.get()),
            WalletEvent::PointsAdjusted { adjustment, .. } => self.adjusted += i128::from(adjustment.get()),
            WalletEvent::PointsShared { share, recipients, total, .. } => {
                prop_assert_eq!(recipients.iter().map(|p| p.points.get()).sum::<u64>(), total.get());
                for part in recipients {
                    let earlier = self.open_parts.insert((share.clone(), part.member.clone()), part.points);
                    prop_assert!(earlier.is_none(), "part of {} for {} opened twice", share, part.member);
                }
            }
            WalletEvent::SharedPointsReceived { share, points, .. } => {
                let part = self.open_parts.remove(&(share.clone(), wallet.clone()));
                prop_assert_eq!(part, Some(*points), "{} received a part of {} that was not open", wallet, share);
            }
            WalletEvent::ShareRefunded { share, recipient, points, .. } => {
                let part = self.open_parts.remove(&(share.clone(), recipient.clone()));
                prop_assert_eq!(part, Some(*points), "{} refunded a part of {} that was not open", wallet, share);
            }
        }
        Ok(())
    }
}

struct World {
    services: Services,
    wallets: BTreeMap<MemberId, Wallet>,
    ledger: Ledger,
    pending: Vec<Part>,
    refunded: Vec<Part>,
    next_id: u32,
}

impl World {
    fn new() -> Self {
        let mut directory = InMemoryDirectory::default();
        for (i, name) in MEMBERS.iter().enumerate().filter(|(i, _)| *i != ZED) {
            directory = directory.with_member(&member(name), i != DAN);
        }
        for (i, name) in STORES.iter().enumerate() {
            directory = directory.with_store(&store(name), open_terms(store_policy(i), 1));
        }
        Self {
            services: directory.services(),
            wallets: BTreeMap::new(),
            ledger: Ledger::default(),
            pending: Vec::new(),
            refunded: Vec::new(),
            next_id: 0,
        }
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn balance(&self, who: &MemberId, at: &StoreId) -> u64 {
        self.wallets.get(who).map_or(0, |w| w.balance(at))
    }

    fn is_open(&self, who: &MemberId) -> bool {
        self.wallets.get(who).and_then(Wallet::owner).is_some()
    }

    /// Handles `command` on `who`'s wallet; checks that a refusal changed
    /// nothing and that an acceptance moved the balance as its events say.
    async fn handle(
        &mut self,
        who: &MemberId,
        command: WalletCommand,
    ) -> Result<Result<(), DomainError>, TestCaseError> {
        let wallet = self.wallets.entry(who.clone()).or_default();
        let before = wallet.clone();
        let sink = EventSink::default();
        let result = wallet.handle(command.clone(), &self.services, &sink).await;
        let events = sink.collect().await;
        if let Err(error) = &result {
            prop_assert_eq!(&*wallet, &before, "{:?} was refused ({}) but changed the wallet", command, error);
            prop_assert!(events.is_empty(), "{command:?} was refused but emitted {events:?}");
            return Ok(result);
        }
        prop_assert!(!events.is_empty(), "{command:?} was accepted but emitted nothing");
        for event in &events {
            self.ledger.record(who, event)?;
        }
        for (at, balance) in wallet.balances() {
            let folded = self.ledger.folded.get(&(who.clone(), at.clone())).copied().unwrap_or(0);
            prop_assert_eq!(i128::from(*balance), folded, "{}'s balance at {} differs from its events", who, at);
        }
        Ok(result)
    }

    /// Handles a debit of `needed` points and checks it was accepted exactly
    /// when the wallet is open and holds enough.
    async fn debit(
        &mut self,
        who: &MemberId,
        at: &StoreId,
        needed: u64,
        command: WalletCommand,
    ) -> Result<(), TestCaseError> {
        let balance = self.balance(who, at);
        let open = self.is_open(who);
        let result = self.handle(who, command).await?;
        if !open {
            prop_assert_eq!(
                result,
                Err(DomainError::NotFound("wallet")),
                "a debit from a wallet never opened was accepted"
            );
        } else if needed > balance {
            prop_assert_eq!(
                result,
                Err(DomainError::InsufficientPoints { store: at.clone(), balance, needed }),
                "a debit of {} from a balance of {} was not refused as insufficient",
                needed,
                balance
            );
        } else {
            prop_assert_eq!(
                result.is_ok(),
                self.is_open(who),
                "a debit of {} from {} was decided wrongly",
                needed,
                balance
            );
        }
        Ok(())
    }

    async fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Earn { who, at, paid } => {
                let (who_id, at_id) = (member(MEMBERS[who]), store(STORES[at]));
                let purchase_ref = purchase(&self.fresh_id("r"));
                let amount = Amount::new(paid)?;
                let command = WalletCommand::Earn { member: who_id.clone(), store: at_id, purchase_ref, amount };
                let result = self.handle(&who_id, command).await?;
                let expected = (who != DAN && who != ZED).then(|| store_policy(at).points_for(amount)).flatten();
                prop_assert_eq!(result.is_ok(), expected.is_some(), "earning {} at {} was decided wrongly", paid, at);
            }
            Op::Share { from, at, parts } => {
                let (from_id, at_id) = (member(MEMBERS[from]), store(STORES[at]));
                let share = ShareId::parse(self.fresh_id("s"))?;
                let recipients = parts
                    .iter()
                    .map(|&(to, raw)| Ok(SharePart { member: member(MEMBERS[to]), points: Points::new(raw)? }))
                    .collect::<Result<Vec<_>, TestCaseError>>()?;
                let total: u64 = parts.iter().map(|&(_, raw)| raw).sum();
                let balance = self.balance(&from_id, &at_id);
                let mut listed: Vec<usize> = parts.iter().map(|&(to, _)| to).collect();
                listed.sort_unstable();
                listed.dedup();
                let valid_recipients = listed.len() == parts.len() && !listed.contains(&from) && !listed.contains(&ZED);

                let command = WalletCommand::Share {
                    share: share.clone(),
                    store: at_id.clone(),
                    recipients: recipients.clone(),
                    message: message(""),
                };
                let result = self.handle(&from_id, command).await?;

                if total > balance {
                    prop_assert!(result.is_err(), "a share of {total} from a balance of {balance} was accepted");
                }
                let expected = self.is_open(&from_id) && valid_recipients && total <= balance;
                prop_assert_eq!(result.is_ok(), expected, "sharing {:?} from {} was decided wrongly", parts, balance);
                if result.is_ok() {
                    self.pending.extend(recipients.into_iter().map(|p| Part {
                        share: share.clone(),
                        from: from_id.clone(),
                        to: p.member,
                        store: at_id.clone(),
                        points: p.points,
                    }));
                }
            }
            Op::Settle { pick, refund } => {
                if !self.pending.is_empty() {
                    let part = self.pending.swap_remove(pick.index(self.pending.len()));
                    self.settle(part, refund).await?;
                }
            }
            Op::RefundAgain { pick } => {
                if !self.refunded.is_empty() {
                    let part = self.refunded[pick.index(self.refunded.len())].clone();
                    let command = WalletCommand::RefundShare { share: part.share.clone(), recipient: part.to.clone() };
                    let result = self.handle(&part.from, command).await?;
                    prop_assert_eq!(
                        result,
                        Err(DomainError::UnknownSharePart { share: part.share, recipient: part.to })
                    );
                }
            }
            Op::Redeem { who, at, points } => {
                let (who_id, at_id) = (member(MEMBERS[who]), store(STORES[at]));
                let command = WalletCommand::Redeem {
                    store: at_id.clone(),
                    points: Points::new(points)?,
                    reward: reason("reward"),
                };
                self.debit(&who_id, &at_id, points, command).await?;
            }
            Op::Expire { who, at, points } => {
                let (who_id, at_id) = (member(MEMBERS[who]), store(STORES[at]));
                let command = WalletCommand::Expire { store: at_id.clone(), points: Points::new(points)? };
                self.debit(&who_id, &at_id, points, command).await?;
            }
            Op::Adjust { who, at, change } => {
                let (who_id, at_id) = (member(MEMBERS[who]), store(STORES[at]));
                let command = WalletCommand::Adjust {
                    member: who_id.clone(),
                    store: at_id.clone(),
                    adjustment: Adjustment::new(change)?,
                    reason: reason("correction"),
                };
                if who == ZED {
                    let result = self.handle(&who_id, command).await?;
                    prop_assert_eq!(result, Err(DomainError::UnknownMember(who_id)));
                } else if change < 0 {
                    // A debit may open the wallet of a registered member, so
                    // it is decided on the balance alone.
                    let balance = self.balance(&who_id, &at_id);
                    let result = self.handle(&who_id, command).await?;
                    let needed = change.unsigned_abs();
                    if needed > balance {
                        prop_assert_eq!(result, Err(DomainError::InsufficientPoints { store: at_id, balance, needed }));
                    } else {
                        prop_assert!(result.is_ok(), "a debit of {needed} from {balance} was refused: {result:?}");
                    }
                } else {
                    let result = self.handle(&who_id, command).await?;
                    prop_assert!(result.is_ok(), "a credit of {change} was refused: {result:?}");
                }
            }
        }
        Ok(())
    }

    /// Delivers `part` to its recipient, or refunds it to the sender when
    /// `refund` is set or the recipient cannot receive.
    async fn settle(&mut self, part: Part, refund: bool) -> Result<(), TestCaseError> {
        if !refund {
            let command = WalletCommand::ReceiveShared {
                member: part.to.clone(),
                share: part.share.clone(),
                from: part.from.clone(),
                store: part.store.clone(),
                points: part.points,
            };
            let result = self.handle(&part.to, command).await?;
            if part.to.as_str() == MEMBERS[DAN] {
                prop_assert_eq!(result, Err(DomainError::MemberInactive(part.to.clone())));
            } else {
                prop_assert!(result.is_ok(), "{} could not receive: {result:?}", part.to);
                return Ok(());
            }
        }
        let command = WalletCommand::RefundShare { share: part.share.clone(), recipient: part.to.clone() };
        let result = self.handle(&part.from, command).await?;
        prop_assert!(result.is_ok(), "the part of {} for {} could not be refunded: {result:?}", part.share, part.to);
        self.refunded.push(part);
        Ok(())
    }

    /// Settles every part still pending, then checks the books balance.
    async fn close_books(&mut self) -> Result<(), TestCaseError> {
        while let Some(part) = self.pending.pop() {
            self.settle(part, false).await?;
        }
        prop_assert!(self.ledger.open_parts.is_empty(), "share parts left unsettled: {:?}", self.ledger.open_parts);

        let held: i128 = self.wallets.values().flat_map(|w| w.balances().values()).map(|&b| i128::from(b)).sum();
        let ledger = &self.ledger;
        prop_assert_eq!(held, ledger.earned - ledger.redeemed - ledger.expired + ledger.adjusted);
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(format!("no runtime: {e}")))?;
    runtime.block_on(async {
        let mut world = World::new();
        for op in ops {
            world.apply(op).await?;
        }
        world.close_books().await
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn points_are_neither_created_nor_lost(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
