//! Fixtures shared by the domain specifications: checked values built from
//! literals, the usual cast of members and stores, and a way to run one
//! command against an aggregate held in a variable.

// Each test crate uses only some of these fixtures.
#![allow(dead_code)]

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use pointstream_domain::values::{
    Adjustment, Amount, DisplayName, EarnPolicy, ExternalRef, Handle, MemberId, PostBody, PostId, PurchaseRef, Reason,
    ShareId, ShareMessage, StoreId, StoreName,
};
use pointstream_domain::{InMemoryDirectory, SharePart, StoreTerms, values::Points};

pub fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("member id literal is valid")
}

pub fn store(id: &str) -> StoreId {
    StoreId::parse(id).expect("store id literal is valid")
}

pub fn post_id(id: &str) -> PostId {
    PostId::parse(id).expect("post id literal is valid")
}

pub fn share(id: &str) -> ShareId {
    ShareId::parse(id).expect("share id literal is valid")
}

pub fn purchase(id: &str) -> PurchaseRef {
    PurchaseRef::parse(id).expect("purchase ref literal is valid")
}

pub fn handle(raw: &str) -> Handle {
    Handle::parse(raw).expect("handle literal is valid")
}

pub fn display_name(raw: &str) -> DisplayName {
    DisplayName::parse(raw).expect("display name literal is valid")
}

pub fn store_name(raw: &str) -> StoreName {
    StoreName::parse(raw).expect("store name literal is valid")
}

pub fn body(raw: &str) -> PostBody {
    PostBody::parse(raw).expect("post body literal is valid")
}

pub fn external(raw: &str) -> ExternalRef {
    ExternalRef::parse(raw).expect("external reference literal is valid")
}

pub fn reason(raw: &str) -> Reason {
    Reason::parse(raw).expect("reason literal is valid")
}

pub fn message(raw: &str) -> ShareMessage {
    ShareMessage::parse(raw).expect("message literal is valid")
}

pub fn points(raw: u64) -> Points {
    Points::new(raw).expect("points literal is valid")
}

pub fn amount(raw: u64) -> Amount {
    Amount::new(raw).expect("amount literal is valid")
}

pub fn adjustment(raw: i64) -> Adjustment {
    Adjustment::new(raw).expect("adjustment literal is valid")
}

pub fn part(recipient: &str, raw_points: u64) -> SharePart {
    SharePart { member: member(recipient), points: points(raw_points) }
}

/// `rate_basis_points` of the amount, at most `cap` points, nothing below `min_purchase`.
pub fn policy(rate_basis_points: u32, cap: Option<u64>, min_purchase: u64) -> EarnPolicy {
    EarnPolicy::new(rate_basis_points, cap.map(points), min_purchase).expect("policy literal is valid")
}

/// The cafe's policy: 5%, at most 100 points a purchase, from 1000 up.
pub fn cafe_policy() -> EarnPolicy {
    policy(500, Some(100), 1_000)
}

pub fn open_terms(policy: EarnPolicy, policy_version: u32) -> StoreTerms {
    StoreTerms { open: true, policy, policy_version }
}

/// The usual cast: members `ann`, `bob`, `cat` and `eve` (active) and `dan`
/// (deactivated); the `cafe` (open, [`cafe_policy`] version 1) and the
/// `bakery` (closed).
pub fn cast() -> InMemoryDirectory {
    InMemoryDirectory::default()
        .with_member(&member("ann"), true)
        .with_member(&member("bob"), true)
        .with_member(&member("cat"), true)
        .with_member(&member("eve"), true)
        .with_member(&member("dan"), false)
        .with_store(&store("cafe"), open_terms(cafe_policy(), 1))
        .with_store(&store("bakery"), StoreTerms { open: false, policy: cafe_policy(), policy_version: 1 })
}

/// Runs one command against `aggregate` as the command handler would and
/// returns the events it emitted (the sink applies them to `aggregate`).
pub fn execute<A: Aggregate>(
    aggregate: &mut A,
    command: A::Command,
    services: &A::Services,
) -> Result<Vec<A::Event>, A::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime starts");
    runtime.block_on(async {
        let sink = EventSink::default();
        aggregate.handle(command, services, &sink).await?;
        Ok(sink.collect().await)
    })
}
