//! Specification of the Wallet aggregate: earning under a store's policy,
//! sharing, receiving and refunding shares, redeeming, adjusting, expiring.

mod support;

use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;
use pointstream_domain::values::{MAX_POINTS, ValueError};
use pointstream_domain::wallet::{MAX_BALANCE, MAX_RECIPIENTS, purchase_claim};
use pointstream_domain::{Claim, Claims, DomainError, InMemoryDirectory, Wallet, WalletCommand, WalletEvent};
use support::{
    adjustment, amount, cast, execute, member, message, open_terms, part, points, policy, purchase, reason, share,
    store,
};

fn framework() -> TestFramework<Wallet> {
    TestFramework::with(cast().services())
}

/// The history of `owner`'s wallet holding `balance` points at `at`.
fn funded(owner: &str, at: &str, balance: u64) -> Vec<WalletEvent> {
    vec![
        WalletEvent::WalletOpened { member: member(owner) },
        WalletEvent::PointsEarned {
            store: store(at),
            purchase_ref: purchase("r0"),
            amount_paid: amount(balance * 20),
            points: points(balance),
            policy_version: 1,
        },
    ]
}

/// Ann's wallet with 300 points at the cafe, 150 of which she shared with
/// bob (100) and cat (50) in share `s1`.
fn ann_shared_with_bob_and_cat() -> Vec<WalletEvent> {
    let mut events = funded("ann", "cafe", 300);
    events.push(WalletEvent::PointsShared {
        share: share("s1"),
        store: store("cafe"),
        recipients: vec![part("bob", 100), part("cat", 50)],
        total: points(150),
        message: message("enjoy"),
    });
    events
}

/// A wallet as restored from a snapshot, for balances no test history of
/// reasonable length can reach.
fn restored(snapshot: serde_json::Value) -> Wallet {
    serde_json::from_value(snapshot).expect("wallet snapshot is valid")
}

fn earn(who: &str, at: &str, receipt: &str, paid: u64) -> WalletCommand {
    WalletCommand::Earn { member: member(who), store: store(at), purchase_ref: purchase(receipt), amount: amount(paid) }
}

fn share_with(recipients: Vec<pointstream_domain::SharePart>) -> WalletCommand {
    WalletCommand::Share { share: share("s1"), store: store("cafe"), recipients, message: message("enjoy") }
}

fn receive(who: &str, from: &str, raw_points: u64) -> WalletCommand {
    WalletCommand::ReceiveShared {
        member: member(who),
        share: share("s1"),
        from: member(from),
        store: store("cafe"),
        points: points(raw_points),
    }
}

fn refund(recipient: &str) -> WalletCommand {
    WalletCommand::RefundShare { share: share("s1"), recipient: member(recipient) }
}

fn redeem(raw_points: u64) -> WalletCommand {
    WalletCommand::Redeem { store: store("cafe"), points: points(raw_points), reward: reason("free coffee") }
}

fn adjust(who: &str, change: i64) -> WalletCommand {
    WalletCommand::Adjust {
        member: member(who),
        store: store("cafe"),
        adjustment: adjustment(change),
        reason: reason("till error"),
    }
}

fn expire(raw_points: u64) -> WalletCommand {
    WalletCommand::Expire { store: store("cafe"), points: points(raw_points) }
}

fn insufficient(at: &str, balance: u64, needed: u64) -> DomainError {
    DomainError::InsufficientPoints { store: store(at), balance, needed }
}

// --- Earn -------------------------------------------------------------------

#[test]
fn the_first_purchase_opens_the_wallet_and_earns_under_the_store_policy() {
    framework().given_no_previous_events().when(earn("ann", "cafe", "r1", 1_500)).then_expect_events(vec![
        WalletEvent::WalletOpened { member: member("ann") },
        WalletEvent::PointsEarned {
            store: store("cafe"),
            purchase_ref: purchase("r1"),
            amount_paid: amount(1_500),
            points: points(75),
            policy_version: 1,
        },
    ]);
}

#[test]
fn a_later_purchase_earns_without_opening_the_wallet_again() {
    framework().given(funded("ann", "cafe", 300)).when(earn("ann", "cafe", "r1", 1_500)).then_expect_events(vec![
        WalletEvent::PointsEarned {
            store: store("cafe"),
            purchase_ref: purchase("r1"),
            amount_paid: amount(1_500),
            points: points(75),
            policy_version: 1,
        },
    ]);
}

#[test]
fn earning_applies_and_records_the_policy_version_in_force() {
    let directory = InMemoryDirectory::default()
        .with_member(&member("ann"), true)
        .with_store(&store("cafe"), open_terms(policy(1_000, None, 0), 3));

    TestFramework::<Wallet>::with(directory.services())
        .given(funded("ann", "cafe", 300))
        .when(earn("ann", "cafe", "r1", 1_500))
        .then_expect_events(vec![WalletEvent::PointsEarned {
            store: store("cafe"),
            purchase_ref: purchase("r1"),
            amount_paid: amount(1_500),
            points: points(150),
            policy_version: 3,
        }]);
}

#[test]
fn a_purchase_earns_no_more_than_the_policy_cap() {
    let events = framework().given(funded("ann", "cafe", 300)).when(earn("ann", "cafe", "r1", 10_000)).inspect_result();

    assert!(matches!(events.as_deref(), Ok([WalletEvent::PointsEarned { points, .. }]) if points.get() == 100));
}

#[test]
fn a_purchase_of_exactly_the_minimum_earns() {
    let events = framework().given(funded("ann", "cafe", 300)).when(earn("ann", "cafe", "r1", 1_000)).inspect_result();

    assert!(matches!(events.as_deref(), Ok([WalletEvent::PointsEarned { points, .. }]) if points.get() == 50));
}

#[test]
fn a_purchase_below_the_minimum_earns_nothing() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(earn("ann", "cafe", "r1", 999))
        .then_expect_error(DomainError::NothingToEarn { store: store("cafe"), amount: 999, min_purchase: 1_000 });
}

#[test]
fn a_purchase_whose_points_round_to_zero_earns_nothing() {
    // 0.01% of 9999 is 0.9999 points.
    let directory = InMemoryDirectory::default()
        .with_member(&member("ann"), true)
        .with_store(&store("cafe"), open_terms(policy(1, None, 0), 1));

    TestFramework::<Wallet>::with(directory.services())
        .given_no_previous_events()
        .when(earn("ann", "cafe", "r1", 9_999))
        .then_expect_error(DomainError::NothingToEarn { store: store("cafe"), amount: 9_999, min_purchase: 0 });
}

#[test]
fn an_unknown_member_cannot_earn() {
    framework()
        .given_no_previous_events()
        .when(earn("zed", "cafe", "r1", 1_500))
        .then_expect_error(DomainError::UnknownMember(member("zed")));
}

#[test]
fn a_deactivated_member_cannot_earn() {
    framework()
        .given(funded("dan", "cafe", 300))
        .when(earn("dan", "cafe", "r1", 1_500))
        .then_expect_error(DomainError::MemberInactive(member("dan")));
}

#[test]
fn nothing_is_earned_at_an_unknown_store() {
    framework()
        .given_no_previous_events()
        .when(earn("ann", "nowhere", "r1", 1_500))
        .then_expect_error(DomainError::UnknownStore(store("nowhere")));
}

#[test]
fn nothing_is_earned_at_a_closed_store() {
    framework()
        .given_no_previous_events()
        .when(earn("ann", "bakery", "r1", 1_500))
        .then_expect_error(DomainError::StoreClosed(store("bakery")));
}

#[test]
fn earning_into_another_members_wallet_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(earn("bob", "cafe", "r1", 1_500))
        .then_expect_error(DomainError::WrongWallet(member("ann")));
}

#[test]
fn earning_beyond_the_largest_balance_is_refused() {
    let mut wallet = restored(serde_json::json!({
        "owner": "ann", "balances": { "cafe": MAX_BALANCE - 74 }, "open_shares": {}
    }));

    let result = execute(&mut wallet, earn("ann", "cafe", "r1", 1_500), &cast().services());

    assert_eq!(result, Err(DomainError::BalanceOverflow));
    assert_eq!(wallet.balance(&store("cafe")), MAX_BALANCE - 74);
}

#[test]
fn earning_up_to_exactly_the_largest_balance_is_accepted() {
    let mut wallet = restored(serde_json::json!({
        "owner": "ann", "balances": { "cafe": MAX_BALANCE - 75 }, "open_shares": {}
    }));

    let result = execute(&mut wallet, earn("ann", "cafe", "r1", 1_500), &cast().services());

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(wallet.balance(&store("cafe")), MAX_BALANCE);
}

#[test]
fn earning_claims_the_purchase_ref_at_its_store() {
    let command = earn("ann", "cafe", "r1", 1_500);

    let claims = command.claims();

    assert_eq!(claims, vec![Claim { kind: "purchase", key: "cafe/r1".to_string() }]);
    assert_eq!(claims, vec![purchase_claim(&store("cafe"), &purchase("r1"))]);
}

#[test]
fn the_same_purchase_ref_at_two_stores_makes_two_claims() {
    let at_cafe = earn("ann", "cafe", "r1", 1_500).claims();
    let at_bakery = earn("ann", "bakery", "r1", 1_500).claims();

    assert_ne!(at_cafe, at_bakery);
}

#[test]
fn a_taken_purchase_ref_is_reported_as_a_duplicate_purchase() {
    let command = earn("ann", "cafe", "r1", 1_500);
    let claim = command.claims().remove(0);

    let error = command.claim_taken(&claim);

    assert_eq!(error, DomainError::DuplicatePurchaseRef { store: store("cafe"), purchase_ref: purchase("r1") });
    assert_eq!(error.to_string(), "purchase r1 was already recorded at store cafe");
}

#[test]
fn sharing_claims_the_share_id_across_all_senders() {
    let command = share_with(vec![part("bob", 10)]);
    let claims = command.claims();

    assert_eq!(claims, vec![Claim { kind: "share", key: "s1".to_string() }]);
    assert_eq!(command.claim_taken(&claims[0]), DomainError::AlreadyRegistered("share s1".to_string()));
}

#[test]
fn wallet_commands_other_than_earn_and_share_claim_nothing() {
    let commands = [receive("bob", "ann", 10), refund("bob"), redeem(10), adjust("ann", 10), expire(10)];

    for command in commands {
        assert!(command.claims().is_empty(), "{command:?} should claim nothing");
    }
}

// --- Share ------------------------------------------------------------------

#[test]
fn points_are_shared_with_one_recipient() {
    framework().given(funded("ann", "cafe", 300)).when(share_with(vec![part("bob", 100)])).then_expect_events(vec![
        WalletEvent::PointsShared {
            share: share("s1"),
            store: store("cafe"),
            recipients: vec![part("bob", 100)],
            total: points(100),
            message: message("enjoy"),
        },
    ]);
}

#[test]
fn a_share_to_several_recipients_debits_their_total() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![part("bob", 100), part("cat", 50), part("eve", 150)]))
        .then_expect_events(vec![WalletEvent::PointsShared {
            share: share("s1"),
            store: store("cafe"),
            recipients: vec![part("bob", 100), part("cat", 50), part("eve", 150)],
            total: points(300),
            message: message("enjoy"),
        }]);
}

#[test]
fn sharing_more_than_the_balance_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![part("bob", 200), part("cat", 101)]))
        .then_expect_error(insufficient("cafe", 300, 301));
}

#[test]
fn points_held_at_another_store_cannot_be_shared() {
    framework()
        .given(funded("ann", "bakery", 300))
        .when(share_with(vec![part("bob", 100)]))
        .then_expect_error(insufficient("cafe", 0, 100));
}

#[test]
fn sharing_with_oneself_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![part("bob", 10), part("ann", 10)]))
        .then_expect_error(DomainError::SelfShare);
}

#[test]
fn a_recipient_listed_twice_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![part("bob", 10), part("bob", 20)]))
        .then_expect_error(DomainError::InvalidRecipients("bob is listed twice".to_string()));
}

#[test]
fn a_share_without_recipients_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![]))
        .then_expect_error(DomainError::InvalidRecipients(format!("a share needs 1 to {MAX_RECIPIENTS} recipients")));
}

#[test]
fn a_share_with_more_than_the_most_recipients_is_refused() {
    let recipients = (0..=MAX_RECIPIENTS).map(|i| part(&format!("m{i}"), 1)).collect();

    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(recipients))
        .then_expect_error(DomainError::InvalidRecipients(format!("a share needs 1 to {MAX_RECIPIENTS} recipients")));
}

#[test]
fn sharing_with_an_unknown_member_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![part("bob", 10), part("zed", 10)]))
        .then_expect_error(DomainError::UnknownMember(member("zed")));
}

#[test]
fn a_share_totalling_more_than_one_movement_may_carry_is_refused() {
    let half = MAX_POINTS / 2 + 1;

    framework()
        .given(funded("ann", "cafe", 300))
        .when(share_with(vec![part("bob", half), part("cat", half)]))
        .then_expect_error(DomainError::Invalid(ValueError {
            field: "points",
            reason: format!("must be at most {MAX_POINTS}"),
        }));
}

#[test]
fn a_share_id_with_open_parts_cannot_be_used_again() {
    framework()
        .given(ann_shared_with_bob_and_cat())
        .when(share_with(vec![part("bob", 10)]))
        .then_expect_error(DomainError::AlreadyRegistered("share s1".to_string()));
}

#[test]
fn a_wallet_never_opened_cannot_share() {
    framework()
        .given_no_previous_events()
        .when(share_with(vec![part("bob", 10)]))
        .then_expect_error(DomainError::NotFound("wallet"));
}

// --- ReceiveShared ----------------------------------------------------------

#[test]
fn a_received_part_opens_the_recipients_wallet_and_credits_it() {
    framework().given_no_previous_events().when(receive("bob", "ann", 100)).then_expect_events(vec![
        WalletEvent::WalletOpened { member: member("bob") },
        WalletEvent::SharedPointsReceived {
            share: share("s1"),
            from: member("ann"),
            store: store("cafe"),
            points: points(100),
        },
    ]);
}

#[test]
fn a_received_part_credits_an_open_wallet() {
    framework().given(funded("bob", "cafe", 10)).when(receive("bob", "ann", 100)).then_expect_events(vec![
        WalletEvent::SharedPointsReceived {
            share: share("s1"),
            from: member("ann"),
            store: store("cafe"),
            points: points(100),
        },
    ]);
}

#[test]
fn receiving_ones_own_share_is_refused() {
    framework()
        .given(funded("ann", "cafe", 10))
        .when(receive("ann", "ann", 100))
        .then_expect_error(DomainError::SelfShare);
}

#[test]
fn receiving_into_another_members_wallet_is_refused() {
    framework()
        .given(funded("cat", "cafe", 10))
        .when(receive("bob", "ann", 100))
        .then_expect_error(DomainError::WrongWallet(member("cat")));
}

#[test]
fn an_unknown_member_cannot_receive() {
    framework()
        .given_no_previous_events()
        .when(receive("zed", "ann", 100))
        .then_expect_error(DomainError::UnknownMember(member("zed")));
}

#[test]
fn a_deactivated_member_cannot_receive() {
    framework()
        .given(funded("dan", "cafe", 10))
        .when(receive("dan", "ann", 100))
        .then_expect_error(DomainError::MemberInactive(member("dan")));
}

#[test]
fn receiving_beyond_the_largest_balance_is_refused() {
    let mut wallet = restored(serde_json::json!({
        "owner": "bob", "balances": { "cafe": MAX_BALANCE - 99 }, "open_shares": {}
    }));

    let result = execute(&mut wallet, receive("bob", "ann", 100), &cast().services());

    assert_eq!(result, Err(DomainError::BalanceOverflow));
    assert_eq!(wallet.balance(&store("cafe")), MAX_BALANCE - 99);
}

// --- RefundShare ------------------------------------------------------------

#[test]
fn a_refunded_part_returns_to_the_sender_at_the_share_store() {
    framework().given(ann_shared_with_bob_and_cat()).when(refund("bob")).then_expect_events(vec![
        WalletEvent::ShareRefunded {
            share: share("s1"),
            recipient: member("bob"),
            store: store("cafe"),
            points: points(100),
        },
    ]);
}

#[test]
fn the_other_parts_stay_refundable_after_one_is_refunded() {
    let mut history = ann_shared_with_bob_and_cat();
    history.push(WalletEvent::ShareRefunded {
        share: share("s1"),
        recipient: member("bob"),
        store: store("cafe"),
        points: points(100),
    });

    framework().given(history).when(refund("cat")).then_expect_events(vec![WalletEvent::ShareRefunded {
        share: share("s1"),
        recipient: member("cat"),
        store: store("cafe"),
        points: points(50),
    }]);
}

#[test]
fn a_part_refunded_already_cannot_be_refunded_again() {
    let mut history = ann_shared_with_bob_and_cat();
    history.push(WalletEvent::ShareRefunded {
        share: share("s1"),
        recipient: member("bob"),
        store: store("cafe"),
        points: points(100),
    });

    framework()
        .given(history)
        .when(refund("bob"))
        .then_expect_error(DomainError::UnknownSharePart { share: share("s1"), recipient: member("bob") });
}

#[test]
fn refunding_a_share_the_wallet_never_made_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(refund("bob"))
        .then_expect_error(DomainError::UnknownSharePart { share: share("s1"), recipient: member("bob") });
}

#[test]
fn refunding_a_member_who_had_no_part_in_the_share_is_refused() {
    framework()
        .given(ann_shared_with_bob_and_cat())
        .when(refund("dan"))
        .then_expect_error(DomainError::UnknownSharePart { share: share("s1"), recipient: member("dan") });
}

#[test]
fn a_wallet_never_opened_has_nothing_to_refund() {
    framework().given_no_previous_events().when(refund("bob")).then_expect_error(DomainError::NotFound("wallet"));
}

#[test]
fn refunding_beyond_the_largest_balance_is_refused() {
    let mut wallet = restored(serde_json::json!({
        "owner": "ann",
        "balances": { "cafe": MAX_BALANCE - 99 },
        "open_shares": { "s1": { "store": "cafe", "parts": { "bob": 100 } } }
    }));

    let result = execute(&mut wallet, refund("bob"), &cast().services());

    assert_eq!(result, Err(DomainError::BalanceOverflow));
    assert_eq!(wallet.balance(&store("cafe")), MAX_BALANCE - 99);
}

// --- Redeem -----------------------------------------------------------------

#[test]
fn points_are_redeemed_for_a_reward() {
    framework().given(funded("ann", "cafe", 300)).when(redeem(120)).then_expect_events(vec![
        WalletEvent::PointsRedeemed { store: store("cafe"), points: points(120), reward: reason("free coffee") },
    ]);
}

#[test]
fn the_whole_balance_may_be_redeemed() {
    framework().given(funded("ann", "cafe", 300)).when(redeem(300)).then_expect_events(vec![
        WalletEvent::PointsRedeemed { store: store("cafe"), points: points(300), reward: reason("free coffee") },
    ]);
}

#[test]
fn redeeming_more_than_the_balance_is_refused() {
    framework().given(funded("ann", "cafe", 300)).when(redeem(301)).then_expect_error(insufficient("cafe", 300, 301));
}

#[test]
fn the_refusal_says_what_the_balance_is_and_what_was_needed() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(redeem(301))
        .then_expect_error_message("insufficient points at store cafe: balance 300, needed 301");
}

#[test]
fn points_held_at_another_store_cannot_be_redeemed() {
    framework().given(funded("ann", "bakery", 300)).when(redeem(10)).then_expect_error(insufficient("cafe", 0, 10));
}

#[test]
fn a_wallet_never_opened_cannot_redeem() {
    framework().given_no_previous_events().when(redeem(10)).then_expect_error(DomainError::NotFound("wallet"));
}

// --- Adjust -----------------------------------------------------------------

#[test]
fn an_admin_credits_a_balance() {
    framework().given(funded("ann", "cafe", 300)).when(adjust("ann", 40)).then_expect_events(vec![
        WalletEvent::PointsAdjusted { store: store("cafe"), adjustment: adjustment(40), reason: reason("till error") },
    ]);
}

#[test]
fn a_credit_opens_the_wallet_of_a_member_who_has_none() {
    framework().given_no_previous_events().when(adjust("bob", 40)).then_expect_events(vec![
        WalletEvent::WalletOpened { member: member("bob") },
        WalletEvent::PointsAdjusted { store: store("cafe"), adjustment: adjustment(40), reason: reason("till error") },
    ]);
}

#[test]
fn the_balance_of_a_deactivated_member_may_still_be_corrected() {
    framework().given(funded("dan", "cafe", 300)).when(adjust("dan", -40)).then_expect_events(vec![
        WalletEvent::PointsAdjusted { store: store("cafe"), adjustment: adjustment(-40), reason: reason("till error") },
    ]);
}

#[test]
fn an_admin_debits_a_balance_down_to_zero() {
    framework().given(funded("ann", "cafe", 300)).when(adjust("ann", -300)).then_expect_events(vec![
        WalletEvent::PointsAdjusted {
            store: store("cafe"),
            adjustment: adjustment(-300),
            reason: reason("till error"),
        },
    ]);
}

#[test]
fn a_debit_larger_than_the_balance_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(adjust("ann", -301))
        .then_expect_error(insufficient("cafe", 300, 301));
}

#[test]
fn a_debit_of_a_wallet_never_opened_is_refused() {
    framework().given_no_previous_events().when(adjust("bob", -1)).then_expect_error(insufficient("cafe", 0, 1));
}

#[test]
fn adjusting_an_unknown_members_balance_is_refused() {
    framework()
        .given_no_previous_events()
        .when(adjust("zed", 40))
        .then_expect_error(DomainError::UnknownMember(member("zed")));
}

#[test]
fn adjusting_another_members_wallet_is_refused() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(adjust("bob", 40))
        .then_expect_error(DomainError::WrongWallet(member("ann")));
}

#[test]
fn crediting_beyond_the_largest_balance_is_refused() {
    let mut wallet = restored(serde_json::json!({
        "owner": "ann", "balances": { "cafe": MAX_BALANCE - 39 }, "open_shares": {}
    }));

    let result = execute(&mut wallet, adjust("ann", 40), &cast().services());

    assert_eq!(result, Err(DomainError::BalanceOverflow));
    assert_eq!(wallet.balance(&store("cafe")), MAX_BALANCE - 39);
}

// --- Expire -----------------------------------------------------------------

#[test]
fn points_lapse() {
    framework()
        .given(funded("ann", "cafe", 300))
        .when(expire(300))
        .then_expect_events(vec![WalletEvent::PointsExpired { store: store("cafe"), points: points(300) }]);
}

#[test]
fn more_points_than_the_balance_cannot_lapse() {
    framework().given(funded("ann", "cafe", 300)).when(expire(301)).then_expect_error(insufficient("cafe", 300, 301));
}

#[test]
fn nothing_lapses_in_a_wallet_never_opened() {
    framework().given_no_previous_events().when(expire(1)).then_expect_error(DomainError::NotFound("wallet"));
}

// --- State ------------------------------------------------------------------

#[test]
fn the_balance_at_each_store_is_the_sum_of_its_movements() {
    let mut wallet = Wallet::default();
    let mut history = ann_shared_with_bob_and_cat();
    history.extend([
        WalletEvent::ShareRefunded {
            share: share("s1"),
            recipient: member("cat"),
            store: store("cafe"),
            points: points(50),
        },
        WalletEvent::SharedPointsReceived {
            share: share("s9"),
            from: member("bob"),
            store: store("cafe"),
            points: points(7),
        },
        WalletEvent::PointsRedeemed { store: store("cafe"), points: points(20), reward: reason("free coffee") },
        WalletEvent::PointsAdjusted { store: store("cafe"), adjustment: adjustment(-3), reason: reason("till error") },
        WalletEvent::PointsExpired { store: store("cafe"), points: points(4) },
        WalletEvent::PointsAdjusted { store: store("bakery"), adjustment: adjustment(12), reason: reason("welcome") },
    ]);

    for event in history {
        wallet.apply(event);
    }

    assert_eq!(wallet.owner(), Some(&member("ann")));
    assert_eq!(wallet.balance(&store("cafe")), 300 - 150 + 50 + 7 - 20 - 3 - 4);
    assert_eq!(wallet.balance(&store("bakery")), 12);
    assert_eq!(wallet.balance(&store("nowhere")), 0);
}
