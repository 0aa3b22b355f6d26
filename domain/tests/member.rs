//! Specification of the Member aggregate: registration with a unique handle,
//! social accounts, deactivation.

mod support;

use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;
use pointstream_domain::values::Provider;
use pointstream_domain::{Claim, Claims, DomainError, Member, MemberCommand, MemberEvent, MemberStatus};
use support::{cast, display_name, external, handle, member};

fn framework() -> TestFramework<Member> {
    TestFramework::with(cast().services())
}

fn register_ann() -> MemberCommand {
    MemberCommand::Register { member: member("ann"), handle: handle("ann_k"), display_name: display_name("Ann K.") }
}

fn ann_registered() -> MemberEvent {
    MemberEvent::MemberRegistered {
        member: member("ann"),
        handle: handle("ann_k"),
        display_name: display_name("Ann K."),
    }
}

fn facebook_linked() -> MemberEvent {
    MemberEvent::SocialAccountLinked {
        provider: Provider::Facebook,
        external_id: external("fb-1001"),
        instance: None,
        link: None,
    }
}

fn link_facebook() -> MemberCommand {
    MemberCommand::LinkSocialAccount {
        provider: Provider::Facebook,
        external_id: external("fb-1001"),
        instance: None,
        link: None,
    }
}

#[test]
fn a_new_member_registers_with_handle_and_display_name() {
    framework().given_no_previous_events().when(register_ann()).then_expect_events(vec![ann_registered()]);
}

#[test]
fn registering_a_member_twice_is_refused() {
    framework()
        .given(vec![ann_registered()])
        .when(register_ann())
        .then_expect_error(DomainError::AlreadyRegistered("member ann".to_string()));
}

#[test]
fn registering_claims_the_handle() {
    let command = register_ann();

    let claims = command.claims();

    assert_eq!(claims, vec![Claim { kind: "handle", key: "ann_k".to_string() }]);
}

#[test]
fn a_taken_handle_is_reported_as_handle_taken() {
    let command = register_ann();
    let claim = command.claims().remove(0);

    let error = command.claim_taken(&claim);

    assert_eq!(error, DomainError::HandleTaken("ann_k".to_string()));
    assert_eq!(error.to_string(), "handle ann_k is taken");
}

#[test]
fn commands_other_than_register_claim_nothing() {
    let commands = [
        link_facebook(),
        MemberCommand::UnlinkSocialAccount { provider: Provider::Facebook },
        MemberCommand::Deactivate,
    ];

    for command in commands {
        assert!(command.claims().is_empty(), "{command:?} should claim nothing");
    }
}

#[test]
fn an_active_member_links_a_social_account() {
    framework().given(vec![ann_registered()]).when(link_facebook()).then_expect_events(vec![facebook_linked()]);
}

#[test]
fn a_member_links_one_account_per_provider() {
    framework()
        .given(vec![ann_registered(), facebook_linked()])
        .when(MemberCommand::LinkSocialAccount {
            provider: Provider::Twitter,
            external_id: external("tw-7"),
            instance: None,
            link: None,
        })
        .then_expect_events(vec![MemberEvent::SocialAccountLinked {
            provider: Provider::Twitter,
            external_id: external("tw-7"),
            instance: None,
            link: None,
        }]);
}

#[test]
fn linking_a_provider_that_is_linked_already_is_refused() {
    framework()
        .given(vec![ann_registered(), facebook_linked()])
        .when(MemberCommand::LinkSocialAccount {
            provider: Provider::Facebook,
            external_id: external("fb-2002"),
            instance: None,
            link: None,
        })
        .then_expect_error(DomainError::AlreadyLinked(Provider::Facebook));
}

#[test]
fn a_provider_unlinked_before_may_be_linked_again() {
    framework()
        .given(vec![
            ann_registered(),
            facebook_linked(),
            MemberEvent::SocialAccountUnlinked { provider: Provider::Facebook },
        ])
        .when(link_facebook())
        .then_expect_events(vec![facebook_linked()]);
}

#[test]
fn linking_for_an_unregistered_member_is_refused() {
    framework().given_no_previous_events().when(link_facebook()).then_expect_error(DomainError::NotFound("member"));
}

#[test]
fn linking_for_a_deactivated_member_is_refused() {
    framework()
        .given(vec![ann_registered(), MemberEvent::MemberDeactivated])
        .when(link_facebook())
        .then_expect_error(DomainError::MemberInactive(member("ann")));
}

#[test]
fn a_linked_account_is_unlinked() {
    framework()
        .given(vec![ann_registered(), facebook_linked()])
        .when(MemberCommand::UnlinkSocialAccount { provider: Provider::Facebook })
        .then_expect_events(vec![MemberEvent::SocialAccountUnlinked { provider: Provider::Facebook }]);
}

#[test]
fn a_deactivated_member_may_still_unlink_an_account() {
    framework()
        .given(vec![ann_registered(), facebook_linked(), MemberEvent::MemberDeactivated])
        .when(MemberCommand::UnlinkSocialAccount { provider: Provider::Facebook })
        .then_expect_events(vec![MemberEvent::SocialAccountUnlinked { provider: Provider::Facebook }]);
}

#[test]
fn unlinking_a_provider_that_is_not_linked_is_refused() {
    framework()
        .given(vec![ann_registered(), facebook_linked()])
        .when(MemberCommand::UnlinkSocialAccount { provider: Provider::Twitter })
        .then_expect_error(DomainError::NotLinked(Provider::Twitter));
}

#[test]
fn unlinking_twice_is_refused() {
    framework()
        .given(vec![
            ann_registered(),
            facebook_linked(),
            MemberEvent::SocialAccountUnlinked { provider: Provider::Facebook },
        ])
        .when(MemberCommand::UnlinkSocialAccount { provider: Provider::Facebook })
        .then_expect_error(DomainError::NotLinked(Provider::Facebook));
}

#[test]
fn unlinking_for_an_unregistered_member_is_refused() {
    framework()
        .given_no_previous_events()
        .when(MemberCommand::UnlinkSocialAccount { provider: Provider::Facebook })
        .then_expect_error(DomainError::NotFound("member"));
}

#[test]
fn an_active_member_is_deactivated() {
    framework()
        .given(vec![ann_registered()])
        .when(MemberCommand::Deactivate)
        .then_expect_events(vec![MemberEvent::MemberDeactivated]);
}

#[test]
fn deactivating_twice_is_refused() {
    framework()
        .given(vec![ann_registered(), MemberEvent::MemberDeactivated])
        .when(MemberCommand::Deactivate)
        .then_expect_error(DomainError::MemberInactive(member("ann")));
}

#[test]
fn deactivating_an_unregistered_member_is_refused() {
    framework()
        .given_no_previous_events()
        .when(MemberCommand::Deactivate)
        .then_expect_error(DomainError::NotFound("member"));
}

#[test]
fn the_status_is_unknown_until_registered_then_follows_deactivation() {
    let mut ann = Member::default();
    assert_eq!(ann.status(), None);

    ann.apply(ann_registered());
    assert_eq!(ann.status(), Some(MemberStatus { active: true }));

    ann.apply(MemberEvent::MemberDeactivated);
    assert_eq!(ann.status(), Some(MemberStatus { active: false }));
}
