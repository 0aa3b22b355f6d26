//! The GraphQL API in process (poem's test client), on SQLite and MariaDB.

extern crate pointstream_api as api;

#[macro_use]
#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod serving;

use std::time::Duration;

use api::auth::{Claims, Role, mint};
use api::{ApiState, Limits, build};
use eventstore::EventStore;
use poem::test::TestClient;
use serde_json::{Value, json};
use support::{Backend, open, quiet, scratch, world};
use tokio::sync::watch;

const SECRET: &[u8] = b"api test secret";

on_both_backends!(earn_then_read_with_roles_errors_and_idempotency, a_feed_page_costs_the_same_few_queries_at_any_size);

fn token(role: Role, member: Option<&str>, store: Option<&str>) -> String {
    let claims = Claims {
        sub: "tester".into(),
        role,
        member: member.map(str::to_string),
        store: store.map(str::to_string),
        exp: in_an_hour(),
    };
    mint(SECRET, &claims).expect("mints")
}

/// An hour from now: within the verifier's maximum token lifetime.
fn in_an_hour() -> u64 {
    api::auth::now_seconds() + 3_600
}

async fn graphql(
    client: &TestClient<impl poem::Endpoint>,
    bearer: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let mut request =
        client.post("/graphql").content_type("application/json").header("content-length", body.len()).body(body);
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    let response = request.send().await;
    response.assert_status_is_ok();
    let body = response.0.into_body().into_string().await.expect("a body");
    serde_json::from_str(&body).expect("JSON")
}

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or("none")
}

const EARN: &str = "mutation($m: String!, $s: String!, $r: String!, $a: Int!, $k: String) { \
    earnPoints(member: $m, store: $s, purchaseRef: $r, amount: $a, idempotencyKey: $k) { \
    position replayed balance { balance earned } } }";
const BALANCES: &str = "query($m: String!) { balances(member: $m) { storeId balance } }";

async fn earn_then_read_with_roles_errors_and_idempotency(backend: Backend) {
    let Some(db) = scratch(backend).await else { return };
    let store: EventStore = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    let (stop, shutdown) = watch::channel(false);
    let running = projections::spawn_all(&store, &projections::ProjectorConfig::default(), &shutdown);
    // Start from read models that show the world (stores, members).
    let head = store.read_head().await.expect("head");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for name in projections::PROJECTIONS {
        while projections::checkpoint::read(store.db(), name, &projections::Names::LIVE).await.expect("reads") < head {
            assert!(std::time::Instant::now() < deadline, "the {name} projection did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let state = ApiState { projectors: running.statuses.clone(), ..serving::state(store.clone()) };
    let client =
        TestClient::new(api::server::app(build(state.clone()), state, api::server::HttpConfig::new(SECRET.to_vec())));

    let staff = token(Role::Staff, None, Some("cafe"));
    let vars = |amount: i64, key: &str| json!({ "m": "bob", "s": "cafe", "r": "till-1", "a": amount, "k": key });

    // Staff of the store earns for bob; the answer already shows the new balance.
    let earned = graphql(&client, Some(&staff), EARN, vars(1_000, "k1")).await;
    assert_eq!(earned["data"]["earnPoints"]["balance"], json!({ "balance": 100, "earned": 100 }), "{earned}");
    assert_eq!(earned["data"]["earnPoints"]["replayed"], false);
    let head = store.read_head().await.expect("head");

    // The same key again: the same answer, nothing written.
    let again = graphql(&client, Some(&staff), EARN, vars(1_000, "k1")).await;
    assert_eq!(again["data"]["earnPoints"]["replayed"], true, "{again}");
    assert_eq!(again["data"]["earnPoints"]["position"], earned["data"]["earnPoints"]["position"]);
    let reused = graphql(&client, Some(&staff), EARN, vars(2_000, "k1")).await;
    assert_eq!(code(&reused), "IDEMPOTENCY_KEY_REUSED", "{reused}");

    // Refusals, each with its code, none writing anything.
    let refusals = [
        (None, vars(1_000, "k2"), "UNAUTHENTICATED"),
        (Some("not-a-token".to_string()), vars(1_000, "k2"), "UNAUTHENTICATED"),
        (Some(token(Role::Staff, None, Some("bakery"))), vars(1_000, "k2"), "FORBIDDEN"),
        (Some(token(Role::Member, Some("bob"), None)), vars(1_000, "k2"), "FORBIDDEN"),
        (Some(token(Role::Auditor, None, None)), vars(1_000, "k2"), "FORBIDDEN"),
        (Some(staff.clone()), vars(-5, "k2"), "BAD_USER_INPUT"),
        (Some(staff.clone()), json!({ "m": "zed", "s": "cafe", "r": "till-2", "a": 1000 }), "NOT_FOUND"),
    ];
    for (bearer, variables, expected) in refusals {
        let refused = graphql(&client, bearer.as_deref(), EARN, variables.clone()).await;
        assert_eq!(code(&refused), expected, "{variables}: {refused}");
    }
    let bad_signature = mint(
        b"another secret",
        &Claims { sub: "x".into(), role: Role::Admin, member: None, store: None, exp: in_an_hour() },
    )
    .expect("mints");
    assert_eq!(code(&graphql(&client, Some(&bad_signature), EARN, vars(1_000, "k3")).await), "UNAUTHENTICATED");
    assert_eq!(store.read_head().await.expect("head"), head, "refusals wrote nothing");

    // Reading: bob himself, admins; not another member; stores are public.
    let own = graphql(&client, Some(&token(Role::Member, Some("bob"), None)), BALANCES, json!({ "m": "bob" })).await;
    assert_eq!(own["data"]["balances"], json!([{ "storeId": "cafe", "balance": 100 }]), "{own}");
    let other = graphql(&client, Some(&token(Role::Member, Some("ann"), None)), BALANCES, json!({ "m": "bob" })).await;
    assert_eq!(code(&other), "FORBIDDEN");
    let admin = graphql(&client, Some(&token(Role::Admin, None, None)), BALANCES, json!({ "m": "bob" })).await;
    assert_eq!(admin["data"]["balances"][0]["balance"], 100);
    let stores = graphql(&client, None, "{ stores { id name ratePerTenThousand: rateBasisPoints } }", json!({})).await;
    assert_eq!(stores["data"]["stores"], json!([{ "id": "cafe", "name": "The Cafe", "ratePerTenThousand": 1000 }]));
    let deep = graphql(&client, None, "{ __typename stores { id } }", json!({})).await;
    assert!(deep["errors"].is_null(), "{deep}");

    // More earns, then the ledger page by page (newest first).
    for (i, key) in ["k4", "k5"].iter().enumerate() {
        let more = json!({ "m": "bob", "s": "cafe", "r": format!("till-{}", i + 10), "a": 1_000, "k": key });
        assert!(graphql(&client, Some(&staff), EARN, more).await["errors"].is_null());
    }
    let bob = token(Role::Member, Some("bob"), None);
    let page_query = "query($after: String) { ledger(member: \"bob\", first: 2, after: $after) { \
        edges { cursor node { kind delta balanceAfter purchaseRef } } pageInfo { hasNextPage endCursor } } }";
    let page = graphql(&client, Some(&bob), page_query, json!({})).await;
    let ledger = &page["data"]["ledger"];
    assert_eq!(ledger["edges"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(ledger["edges"][0]["node"]["balanceAfter"], 300);
    assert_eq!(ledger["pageInfo"]["hasNextPage"], true);
    let next = graphql(&client, Some(&bob), page_query, json!({ "after": ledger["pageInfo"]["endCursor"] })).await;
    assert_eq!(next["data"]["ledger"]["edges"][0]["node"]["purchaseRef"], "till-1", "{next}");
    assert_eq!(next["data"]["ledger"]["pageInfo"]["hasNextPage"], false);
    let too_big = graphql(
        &client,
        Some(&bob),
        "{ ledger(member: \"bob\", first: 1000) { pageInfo { hasNextPage } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&too_big), "BAD_USER_INPUT");

    // Redeem: too much is refused with its code; the member may redeem their own.
    let redeem = "mutation($p: Int!) { redeemPoints(member: \"bob\", store: \"cafe\", points: $p, reward: \"cake\") { balance { balance redeemed } } }";
    assert_eq!(code(&graphql(&client, Some(&bob), redeem, json!({ "p": 1_000 })).await), "INSUFFICIENT_POINTS");
    let redeemed = graphql(&client, Some(&bob), redeem, json!({ "p": 50 })).await;
    assert_eq!(redeemed["data"]["redeemPoints"]["balance"], json!({ "balance": 250, "redeemed": 50 }), "{redeemed}");

    // Share: bob gives ann 30; the distribution credits her shortly after.
    let share = "mutation { sharePoints(from: \"bob\", store: \"cafe\", recipients: [{ member: \"ann\", points: 30 }], \
        message: \"coffee on me\", idempotencyKey: \"gift/1 for ann\") { balance { balance sharedOut } } }";
    assert_eq!(
        code(&graphql(&client, Some(&token(Role::Member, Some("ann"), None)), share, json!({})).await),
        "FORBIDDEN"
    );
    let shared = graphql(&client, Some(&bob), share, json!({})).await;
    assert_eq!(shared["data"]["sharePoints"]["balance"], json!({ "balance": 220, "sharedOut": 30 }), "{shared}");
    let retried = graphql(&client, Some(&bob), share, json!({})).await;
    assert_eq!(retried["data"]["sharePoints"]["balance"]["balance"], 220, "a retry shares nothing twice: {retried}");
    let ann = token(Role::Member, Some("ann"), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let balances = graphql(&client, Some(&ann), BALANCES, json!({ "m": "ann" })).await;
        if balances["data"]["balances"] == json!([{ "storeId": "cafe", "balance": 30 }]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "ann was not credited: {balances}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let me = graphql(&client, Some(&ann), "{ me { role subject member { id } storeId } }", json!({})).await;
    assert_eq!(
        me["data"]["me"],
        json!({ "role": "MEMBER", "subject": "tester", "member": { "id": "ann" }, "storeId": null }),
        "{me}"
    );
    let entries = graphql(
        &client,
        Some(&bob),
        "{ ledger(member: \"bob\", first: 100) { edges { node { kind shareId recordedAt } } } }",
        json!({}),
    )
    .await;
    let share_entry = entries["data"]["ledger"]["edges"][0]["node"].clone();
    assert_eq!(share_entry["kind"], "share", "{entries}");
    let share_id = share_entry["shareId"].as_str().expect("a share id").to_string();
    let share_query =
        "query($id: String!) { share(id: $id) { senderId total status recipients { memberId points status } } }";
    // The shares read model follows on its own; wait for it to show the settlement.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = graphql(&client, Some(&ann), share_query, json!({ "id": share_id })).await;
        if seen["data"]["share"]["status"] == "settled" || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        seen["data"]["share"],
        json!({ "senderId": "bob", "total": 30, "status": "settled", "recipients": [{ "memberId": "ann", "points": 30, "status": "received" }] }),
        "{seen}"
    );
    let stranger =
        graphql(&client, Some(&token(Role::Member, Some("cat"), None)), share_query, json!({ "id": share_id })).await;
    assert_eq!(code(&stranger), "FORBIDDEN");
    let recorded = share_entry["recordedAt"].as_str().expect("an RFC 3339 time");
    let recorded = chrono::DateTime::parse_from_rfc3339(recorded).expect("an RFC 3339 time");
    let before_share = (recorded - chrono::Duration::microseconds(1)).to_rfc3339();
    let then = graphql(
        &client,
        Some(&bob),
        "query($t: DateTime!) { balanceAt(member: \"bob\", store: \"cafe\", at: $t) }",
        json!({ "t": before_share }),
    )
    .await;
    assert_eq!(then["data"]["balanceAt"], 250, "{then}");
    let member = graphql(&client, Some(&ann), "{ member(id: \"ann\") { handle active } }", json!({})).await;
    assert_eq!(member["data"]["member"], json!({ "handle": "ann", "active": true }), "{member}");

    // Tighter limits: each hit is an error in the response, never a server failure.
    let tight = ApiState {
        limits: Limits { max_depth: 2, max_page: 5, max_body_bytes: 200, ..Limits::default() },
        ..serving::state(store.clone())
    };
    let strict =
        TestClient::new(api::server::app(build(tight.clone()), tight, api::server::HttpConfig::new(SECRET.to_vec())));
    let deep =
        graphql(&strict, Some(&bob), "{ ledger(member: \"bob\", first: 2) { edges { node { kind } } } }", json!({}))
            .await;
    assert!(deep["errors"][0]["message"].as_str().is_some_and(|m| m.contains("nested too deep")), "{deep}");
    let page = graphql(&strict, Some(&bob), "{ ledger(member: \"bob\", first: 6) { __typename } }", json!({})).await;
    assert_eq!(code(&page), "BAD_USER_INPUT", "{page}");
    let body = json!({ "query": format!("{{ stores {{ id }} }} # {}", "x".repeat(300)) }).to_string();
    let oversized = strict
        .post("/graphql")
        .content_type("application/json")
        .header("content-length", body.len())
        .body(body)
        .send()
        .await;
    oversized.assert_status(poem::http::StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(client.get("/healthz").send().await.0.status(), poem::http::StatusCode::OK, "still healthy");

    // Metrics: requests and their latency, errors by code, command latency,
    // the read-your-writes wait, projection lag.
    let metrics = client.get("/metrics").send().await;
    metrics.assert_status_is_ok();
    let text = metrics.0.into_body().into_string().await.expect("a body");
    for expected in [
        "pointstream_graphql_requests_total",
        "pointstream_graphql_errors_total{code=\"FORBIDDEN\"}",
        "pointstream_command_seconds_bucket{command=\"earn\"",
        "pointstream_read_wait_seconds_bucket{projection=\"wallets\"",
        "pointstream_graphql_request_seconds_bucket",
        "pointstream_projection_lag_events{projection=\"wallets\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from /metrics:\n{text}");
    }

    stop.send_replace(true);
    for task in running.tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
}

#[test]
fn schema_graphql_is_the_served_schema() {
    let committed = include_str!("../../schema.graphql");
    assert_eq!(committed, api::sdl(), "schema.graphql is stale: run `cargo run -- schema > schema.graphql`");
}

/// 100 posts by 10 authors about 3 stores, each with a photo: a feed page
/// with authors, stores, photos and social status costs the same handful of
/// queries for 10 posts as for 100 (DataLoaders batch each table).
async fn a_feed_page_costs_the_same_few_queries_at_any_size(backend: Backend) {
    use std::sync::atomic::Ordering;

    use domain::values::{MemberId, PhotoKey, PostBody, PostId, Provider, StoreId};
    use domain::{Photo, Post, PostCommand};
    use eventstore::CommandContext;

    let Some(db) = scratch(backend).await else { return };
    let (store, statements) = support::open_counting(&db, |_| true).await;
    let authors: Vec<String> = (0..10).map(|n| format!("author{n}")).collect();
    world(&store, &authors.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for (id, name) in [("bakery", "Bakery"), ("deli", "Deli")] {
        let command = domain::StoreCommand::Register {
            store: StoreId::parse(id).expect("id"),
            name: domain::values::StoreName::parse(name).expect("name"),
            owner: MemberId::parse("author0").expect("id"),
            policy: support::tenth(),
        };
        store.execute::<domain::Store>(id, command, CommandContext::default()).await.expect("registers");
    }
    for n in 0..100 {
        let id = format!("post{n}");
        let command = PostCommand::Create {
            post: PostId::parse(id.as_str()).expect("id"),
            author: MemberId::parse(authors[n % 10].as_str()).expect("id"),
            store: StoreId::parse(["cafe", "bakery", "deli"][n % 3]).expect("id"),
            body: PostBody::parse(format!("post number {n}")).expect("body"),
            photos: vec![Photo {
                key: PhotoKey::parse(format!("photos/{id}.jpg")).expect("key"),
                content_type: "image/jpeg".into(),
                size: 1_000,
                sha256: "00".repeat(32),
            }],
            providers: vec![Provider::Facebook, Provider::Twitter],
        };
        store.execute::<Post>(&id, command, CommandContext::default()).await.expect("posts");
    }
    projections::catch_up(&store, 1_000).await.expect("projects");
    let state = serving::state(store.clone());
    let client =
        TestClient::new(api::server::app(build(state.clone()), state, api::server::HttpConfig::new(SECRET.to_vec())));
    let reader = token(Role::Member, Some("author1"), None);
    let feed = "query($first: Int!) { feed(first: $first) { edges { node { id author { handle } store { name } \
                photos { key social { status } } social { provider status } } } } }";

    let mut costs = Vec::new();
    for first in [10, 100] {
        let before = statements.load(Ordering::SeqCst);
        let page = graphql(&client, Some(&reader), feed, json!({ "first": first })).await;
        costs.push(statements.load(Ordering::SeqCst) - before);
        let edges = page["data"]["feed"]["edges"].as_array().unwrap_or_else(|| panic!("{page}"));
        assert_eq!(edges.len(), first, "{page}");
        assert_eq!(edges[0]["node"]["id"], "post99", "newest first");
        assert_eq!(edges[0]["node"]["author"]["handle"], "author9");
        assert_eq!(edges[0]["node"]["store"]["name"], "The Cafe");
        assert_eq!(edges[0]["node"]["photos"], json!([{ "key": "photos/post99.jpg", "social": [] }]));
        assert_eq!(edges[0]["node"]["social"].as_array().map(Vec::len), Some(2));
    }
    // The posts page, then one query each for members, stores, photos, social
    // status and the photos' own social status.
    assert_eq!(costs, [6, 6], "statements per feed page of 10 and of 100");
}
