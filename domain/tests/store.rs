//! Specification of the Store aggregate: registration, earn policy versions,
//! closing and reopening.

mod support;

use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;
use pointstream_domain::{Claims, DomainError, Store, StoreCommand, StoreEvent, StoreTerms};
use support::{cafe_policy, cast, member, policy, store, store_name};

fn cafe_registered() -> StoreEvent {
    StoreEvent::StoreRegistered {
        store: store("cafe"),
        name: store_name("Cafe Ann"),
        owner: member("ann"),
        policy: cafe_policy(),
    }
}

fn register_cafe_owned_by(owner: &str) -> StoreCommand {
    StoreCommand::Register {
        store: store("cafe"),
        name: store_name("Cafe Ann"),
        owner: member(owner),
        policy: cafe_policy(),
    }
}

fn framework() -> TestFramework<Store> {
    TestFramework::with(cast().services())
}

#[test]
fn a_registered_member_registers_a_store_with_its_first_policy() {
    framework()
        .given_no_previous_events()
        .when(register_cafe_owned_by("ann"))
        .then_expect_events(vec![cafe_registered()]);
}

#[test]
fn registering_a_store_for_an_unknown_owner_is_refused() {
    framework()
        .given_no_previous_events()
        .when(register_cafe_owned_by("zed"))
        .then_expect_error(DomainError::UnknownMember(member("zed")));
}

#[test]
fn registering_a_store_twice_is_refused() {
    framework()
        .given(vec![cafe_registered()])
        .when(register_cafe_owned_by("ann"))
        .then_expect_error(DomainError::AlreadyRegistered("store cafe".to_string()));
}

#[test]
fn updating_the_policy_raises_its_version_by_one() {
    let new_policy = policy(1_000, None, 0);

    framework()
        .given(vec![cafe_registered()])
        .when(StoreCommand::UpdateEarnPolicy { policy: new_policy })
        .then_expect_events(vec![StoreEvent::EarnPolicyUpdated { policy: new_policy, policy_version: 2 }]);
}

#[test]
fn each_policy_update_gets_the_next_version() {
    let second = policy(1_000, None, 0);
    let third = policy(200, Some(50), 500);

    framework()
        .given(vec![cafe_registered(), StoreEvent::EarnPolicyUpdated { policy: second, policy_version: 2 }])
        .when(StoreCommand::UpdateEarnPolicy { policy: third })
        .then_expect_events(vec![StoreEvent::EarnPolicyUpdated { policy: third, policy_version: 3 }]);
}

#[test]
fn a_closed_store_may_still_change_its_policy() {
    let new_policy = policy(1_000, None, 0);

    framework()
        .given(vec![cafe_registered(), StoreEvent::StoreClosed])
        .when(StoreCommand::UpdateEarnPolicy { policy: new_policy })
        .then_expect_events(vec![StoreEvent::EarnPolicyUpdated { policy: new_policy, policy_version: 2 }]);
}

#[test]
fn updating_the_policy_of_an_unregistered_store_is_refused() {
    framework()
        .given_no_previous_events()
        .when(StoreCommand::UpdateEarnPolicy { policy: cafe_policy() })
        .then_expect_error(DomainError::NotFound("store"));
}

#[test]
fn an_open_store_closes() {
    framework()
        .given(vec![cafe_registered()])
        .when(StoreCommand::Close)
        .then_expect_events(vec![StoreEvent::StoreClosed]);
}

#[test]
fn closing_a_closed_store_is_refused() {
    framework()
        .given(vec![cafe_registered(), StoreEvent::StoreClosed])
        .when(StoreCommand::Close)
        .then_expect_error(DomainError::StoreClosed(store("cafe")));
}

#[test]
fn closing_an_unregistered_store_is_refused() {
    framework().given_no_previous_events().when(StoreCommand::Close).then_expect_error(DomainError::NotFound("store"));
}

#[test]
fn a_closed_store_reopens() {
    framework()
        .given(vec![cafe_registered(), StoreEvent::StoreClosed])
        .when(StoreCommand::Reopen)
        .then_expect_events(vec![StoreEvent::StoreReopened]);
}

#[test]
fn reopening_an_open_store_is_refused() {
    framework()
        .given(vec![cafe_registered()])
        .when(StoreCommand::Reopen)
        .then_expect_error(DomainError::StoreOpen(store("cafe")));
}

#[test]
fn reopening_a_store_closed_and_reopened_before_is_refused() {
    framework()
        .given(vec![cafe_registered(), StoreEvent::StoreClosed, StoreEvent::StoreReopened])
        .when(StoreCommand::Reopen)
        .then_expect_error(DomainError::StoreOpen(store("cafe")));
}

#[test]
fn reopening_an_unregistered_store_is_refused() {
    framework().given_no_previous_events().when(StoreCommand::Reopen).then_expect_error(DomainError::NotFound("store"));
}

#[test]
fn the_terms_follow_the_latest_policy_version_and_the_open_flag() {
    let new_policy = policy(1_000, None, 0);
    let mut cafe = Store::default();
    assert_eq!(cafe.terms(), None);

    for event in [
        cafe_registered(),
        StoreEvent::EarnPolicyUpdated { policy: new_policy, policy_version: 2 },
        StoreEvent::StoreClosed,
    ] {
        cafe.apply(event);
    }

    assert_eq!(cafe.terms(), Some(StoreTerms { open: false, policy: new_policy, policy_version: 2 }));
    assert_eq!(cafe.owner(), Some(&member("ann")));
}

#[test]
fn store_commands_claim_nothing() {
    let commands = [
        register_cafe_owned_by("ann"),
        StoreCommand::UpdateEarnPolicy { policy: cafe_policy() },
        StoreCommand::Close,
        StoreCommand::Reopen,
    ];

    for command in commands {
        assert!(command.claims().is_empty(), "{command:?} should claim nothing");
    }
}
