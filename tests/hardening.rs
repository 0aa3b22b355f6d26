//! An outsider's attacks, each refused cheaply and without a write: documents
//! whose cost doubles with each line, alias floods, over-long and invisible
//! text, idempotency keys of other callers or of any length, request floods,
//! and the authorization of uploads and of every subscription.

mod app;

use std::time::Duration;

use api::auth::Role;
use app::{App, FilePart, code, multipart, next_json, setup, subscribe, token, token_of};
use eventstore::scratch::ScratchDatabase;
use serde_json::{Value, json};

const PNG: &[u8] = include_bytes!("fixtures/photo.png");

fn sqlite_app(args: &[&str]) -> App {
    App::spawn(ScratchDatabase::sqlite(), args)
}

/// A document whose fragments each spread the next twice, `levels` deep.
fn doubling(levels: usize) -> String {
    let mut query = String::from("query { ...F0 }");
    for level in 0..levels {
        query.push_str(&format!(" fragment F{level} on Query {{ ...F{next} ...F{next} }}", next = level + 1));
    }
    query.push_str(&format!(" fragment F{levels} on Query {{ stores {{ id }} }}"));
    query
}

#[test]
fn documents_that_double_with_each_line_are_refused_while_the_server_keeps_answering() {
    let app = sqlite_app(&[]);
    let flooding: Vec<_> = (0..4)
        .map(|i| {
            let client = app.client.clone();
            std::thread::spawn(move || {
                let document = doubling(if i % 2 == 0 { 24 } else { 30 });
                assert!(document.len() < 1_600, "a small document: {} bytes", document.len());
                for _ in 0..5 {
                    let answer = client.graphql(None, &document, json!({}));
                    assert_eq!(answer["errors"][0]["message"], "Query is too complex.", "{answer}");
                    assert_eq!(code(&answer), "BAD_USER_INPUT");
                }
            })
        })
        .collect();
    for _ in 0..20 {
        assert_eq!(app.get("/healthz").0, 200);
    }
    for thread in flooding {
        thread.join().expect("every flood request was refused");
    }
}

#[test]
fn alias_floods_and_a_second_audit_report_are_refused() {
    let app = sqlite_app(&[]);
    let auditor = token(Role::Auditor, None, None);
    let two = "{ a: auditReport { clean } b: auditReport { clean } }";
    let answer = app.graphql(Some(&auditor), two, json!({}));
    assert!(answer["errors"][0]["message"].as_str().is_some_and(|m| m.contains("one auditReport")), "{answer}");
    let one = app.graphql(Some(&auditor), "{ auditReport { clean } }", json!({}));
    assert_eq!(one["data"]["auditReport"]["clean"], true, "{one}");
    let aliases: String = (0..5_001).map(|i| format!(" a{i}: logHead")).collect();
    let flood = app.graphql(Some(&auditor), &format!("{{{aliases} }}"), json!({}));
    assert_eq!(
        flood["errors"][0]["message"],
        "Query is too complex.",
        "{}",
        &flood.to_string()[..200.min(flood.to_string().len())]
    );
    let long = "x".repeat(5_001);
    let literal = app.graphql(None, &format!("{{ store(id: \"{long}\") {{ id }} }}"), json!({}));
    assert_eq!(code(&literal), "BAD_USER_INPUT", "{literal}");
    let variable = app.graphql(None, "query($id: String!) { store(id: $id) { id } }", json!({ "id": long }));
    assert_eq!(code(&variable), "BAD_USER_INPUT", "{variable}");
}

#[test]
fn invisible_formatting_in_names_and_bodies_is_refused_and_writes_nothing() {
    let app = sqlite_app(&[]);
    setup(&app, &["ann"], &[("cafe", "ann")]);
    let admin = token(Role::Admin, None, None);
    let head = app.head();
    let spoof =
        "mutation($name: String!) { registerMember(id: \"eve\", handle: \"eve_h\", displayName: $name) { position } }";
    for name in ["ann\u{202E}nimda", "ad\u{2066}min", "b\u{200B}ob"] {
        let answer = app.graphql(Some(&admin), spoof, json!({ "name": name }));
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    }
    let ann = token(Role::Member, Some("ann"), None);
    let post = "mutation($body: String!) { createPost(author: \"ann\", store: \"cafe\", body: $body) { position } }";
    let answer = app.graphql(Some(&ann), post, json!({ "body": "best \u{202E}efac" }));
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    assert_eq!(app.head(), head, "nothing was written");
}

#[test]
fn idempotency_keys_belong_to_their_caller_and_are_bounded() {
    let app = sqlite_app(&[]);
    setup(&app, &["bob", "cat"], &[("cafe", "bob")]);
    let staff = token_of("till-1", Role::Staff, None, Some("cafe"));
    let cat = token_of("cat", Role::Member, Some("cat"), None);
    let earn = "mutation($who: String!, $ref: String!, $key: String) { earnPoints(member: $who, store: \"cafe\", \
                purchaseRef: $ref, amount: 10000, idempotencyKey: $key) { position replayed balance { balance } } }";
    let first = app.graphql(Some(&staff), earn, json!({ "who": "cat", "ref": "r-1", "key": "warm-up" }));
    assert!(first.get("errors").is_none(), "{first}");
    let key = "till-1/2026-12-06-0099";
    // Cat uses the till's next key first: it is cat's own key, not the till's.
    let redeem = "mutation($key: String) { redeemPoints(member: \"cat\", store: \"cafe\", points: 1, reward: \"mint\", \
                  idempotencyKey: $key) { position replayed } }";
    let cats = app.graphql(Some(&cat), redeem, json!({ "key": key }));
    assert_eq!(cats["data"]["redeemPoints"]["replayed"], false, "{cats}");
    let tills = app.graphql(Some(&staff), earn, json!({ "who": "bob", "ref": "r-2", "key": key }));
    assert_eq!(tills["data"]["earnPoints"]["replayed"], false, "the till's command runs: {tills}");
    let again = app.graphql(Some(&staff), earn, json!({ "who": "bob", "ref": "r-2", "key": key }));
    assert_eq!(again["data"]["earnPoints"]["replayed"], true, "and its retry is its own replay: {again}");
    assert_eq!(again["data"]["earnPoints"]["position"], tills["data"]["earnPoints"]["position"]);

    let head = app.head();
    for bad in ["k".repeat(256), String::new(), "tab\tinside".into(), "caf\u{e9}".into()] {
        let answer = app.graphql(Some(&staff), earn, json!({ "who": "bob", "ref": "r-3", "key": bad }));
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    }
    let longest = app.graphql(Some(&staff), earn, json!({ "who": "bob", "ref": "r-4", "key": "k".repeat(255) }));
    assert!(longest.get("errors").is_none(), "255 characters are allowed: {longest}");
    assert_eq!(app.head(), head + 1, "only the valid key's command was written");
}

#[test]
fn a_caller_past_its_rate_is_told_when_to_come_back() {
    let app = sqlite_app(&["--rate-limit-per-minute", "60", "--rate-limit-burst", "3"]);
    let ann = token(Role::Member, Some("ann"), None);
    let body = json!({ "query": "{ __typename }" }).to_string();
    let statuses: Vec<u16> = (0..4).map(|_| app.post_json(Some(&ann), &body).0).collect();
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    let bearer = format!("Bearer {ann}");
    let limited = app.exchange(
        "POST",
        "/graphql",
        &[("Content-Type", "application/json"), ("Authorization", &bearer)],
        body.as_bytes(),
    );
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(code(&limited.json()), "RATE_LIMITED");
    let retry: u64 = limited.header("retry-after").and_then(|s| s.parse().ok()).expect("a Retry-After in seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let bob = token_of("bob", Role::Member, Some("bob"), None);
    assert_eq!(app.post_json(Some(&bob), &body).0, 200, "another caller has a rate of its own");
    assert_eq!(app.post_json(None, &body).0, 200, "and so has an address");
}

#[test]
fn only_a_posts_author_or_an_admin_may_upload_a_photo_to_it() {
    let app = sqlite_app(&[]);
    setup(&app, &["ann", "bob"], &[("cafe", "bob")]);
    let ann = token(Role::Member, Some("ann"), None);
    let created = app.graphql(
        Some(&ann),
        "mutation { createPost(author: \"ann\", store: \"cafe\", body: \"Hi\", id: \"p-1\") { position } }",
        json!({}),
    );
    assert!(created.get("errors").is_none(), "{created}");
    let upload = |bearer: Option<&str>| {
        let request = multipart(
            "mutation($file: Upload!) { uploadPhoto(post: \"p-1\", file: $file) { position } }",
            json!({ "file": null }),
            json!({ "f": ["variables.file"] }),
            &[FilePart { field: "f", filename: "x.png", content_type: "image/png", bytes: PNG }],
        );
        let (_, text) = app.post_multipart(bearer, &request);
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    let head = app.head();
    for (bearer, expected) in [
        (None, "UNAUTHENTICATED"),
        (Some(token(Role::Member, Some("bob"), None)), "FORBIDDEN"),
        (Some(token(Role::Staff, None, Some("cafe"))), "FORBIDDEN"),
        (Some(token(Role::Auditor, None, None)), "FORBIDDEN"),
    ] {
        let answer = upload(bearer.as_deref());
        assert_eq!(code(&answer), expected, "{answer}");
    }
    assert_eq!(app.head(), head, "refused uploads write nothing");
    for bearer in [ann.clone(), token(Role::Admin, None, None)] {
        let answer = upload(Some(&bearer));
        assert!(answer["data"]["uploadPhoto"]["position"].as_i64().is_some(), "{answer}");
    }
}

/// What a subscription sends first: `Ok(data)` or `Err(code)`, within 10 s.
async fn first_of(app: &App, bearer: &str, query: &str) -> Result<Value, String> {
    let mut socket = app.socket("graphql-transport-ws", bearer).await;
    subscribe(&mut socket, "graphql-transport-ws", "s", query).await;
    // An allowed subscription waits for an event: give it one (an earn for
    // ann at the cafe, and a post by ann that the logging networks publish).
    let admin = token(Role::Admin, None, None);
    let client = app.client.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let earn = "mutation($ref: String!) { earnPoints(member: \"ann\", store: \"cafe\", purchaseRef: $ref, \
                    amount: 5000) { position } }";
        client.graphql(Some(&admin), earn, json!({ "ref": format!("r-{}", uuid::Uuid::new_v4().simple()) }));
    });
    let message = next_json(&mut socket).await;
    match message["type"].as_str() {
        Some("next") if message["payload"].get("errors").is_none() => Ok(message["payload"]["data"].clone()),
        Some("next") | Some("error") => {
            let errors = if message["type"] == "error" { &message["payload"] } else { &message["payload"]["errors"] };
            Err(errors[0]["extensions"]["code"].as_str().unwrap_or("none").to_string())
        }
        _ => panic!("unexpected {message}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_subscription_refuses_other_members_and_stores_and_serves_the_allowed() {
    let app = sqlite_app(&[]);
    setup(&app, &["ann", "bob"], &[("cafe", "bob"), ("deli", "bob")]);
    let ann = token(Role::Member, Some("ann"), None);
    let post = "mutation { createPost(author: \"ann\", store: \"cafe\", body: \"Hi\", id: \"p-1\", providers: [TWITTER]) { position } }";
    assert!(app.graphql(Some(&ann), post, json!({})).get("errors").is_none());
    let bob = token(Role::Member, Some("bob"), None);
    let cafe = token(Role::Staff, None, Some("cafe"));
    let deli = token(Role::Staff, None, Some("deli"));
    let admin = token(Role::Admin, None, None);
    let auditor = token(Role::Auditor, None, None);
    // Each subscription, who is refused it (and with what), and who is served.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a String)>, Vec<&'a String>);
    let cases: [Case; 3] = [
        (
            "subscription { walletUpdates(member: \"ann\") { delta } }",
            vec![("FORBIDDEN", &bob), ("FORBIDDEN", &cafe), ("FORBIDDEN", &deli)],
            vec![&ann, &admin, &auditor],
        ),
        (
            "subscription { storeActivity(store: \"cafe\") { delta } }",
            vec![("FORBIDDEN", &ann), ("FORBIDDEN", &deli)],
            vec![&cafe, &admin, &auditor],
        ),
        (
            "subscription { eventLog(after: 0) { position } }",
            vec![("FORBIDDEN", &ann), ("FORBIDDEN", &cafe)],
            vec![&admin, &auditor],
        ),
    ];
    for (query, refused, allowed) in cases {
        for (expected, bearer) in refused {
            assert_eq!(first_of(&app, bearer, query).await, Err(expected.to_string()), "{query}");
        }
        for bearer in allowed {
            let data = first_of(&app, bearer, query).await;
            assert!(data.is_ok(), "{query}: {data:?}");
        }
    }
    let status = "subscription { postSocialStatus(post: \"p-1\") { provider status } }";
    for bearer in [&bob, &deli] {
        assert_eq!(first_of(&app, bearer, status).await, Err("FORBIDDEN".to_string()), "{status}");
    }
    // The post's author, its store's staff and an admin are answered: each photo added to the
    // post goes to its network once the post is there (the logging network
    // in the embedded mode), and its status is sent.
    app.eventually(&admin, "{ post(id: \"p-1\") { social { status } } }", json!({}), |answer| {
        answer["data"]["post"]["social"][0]["status"] == "published"
    });
    for bearer in [&ann, &cafe, &admin] {
        let mut socket = app.socket("graphql-transport-ws", bearer).await;
        subscribe(&mut socket, "graphql-transport-ws", "s", status).await;
        let client = app.client.clone();
        let uploader = ann.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let request = multipart(
                "mutation($file: Upload!) { uploadPhoto(post: \"p-1\", file: $file) { position } }",
                json!({ "file": null }),
                json!({ "f": ["variables.file"] }),
                &[FilePart { field: "f", filename: "x.png", content_type: "image/png", bytes: PNG }],
            );
            client.post_multipart(Some(&uploader), &request);
        });
        let message = next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"]["data"]["postSocialStatus"]["provider"].is_string(), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mutation_past_its_deadline_is_told_its_outcome_is_unknown_and_its_retry_is_safe() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let Some(db) = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}")) else { return };
    let app = App::spawn(db, &["--mutation-deadline-ms", "500"]);
    setup(&app, &["ann", "bob"], &[("cafe", "ann")]);
    // Another connection holds the log head's row lock: every append waits.
    let blocker = sea_orm::Database::connect(&app.url).await.expect("connects");
    let lock = blocker.begin().await.expect("begins");
    lock.execute_unprepared("UPDATE log_head SET position = position").await.expect("locks the log head");
    let staff = token(Role::Staff, None, Some("cafe"));
    let earn = |member: &str, key: &str| {
        format!(
            "mutation {{ earnPoints(member: \"{member}\", store: \"cafe\", purchaseRef: \"r-{key}\", amount: 5000, \
             idempotencyKey: \"{key}\") {{ position replayed }} }}"
        )
    };
    // Ann's earn goes into a group commit that waits on the lock; bob's,
    // sent while it waits, stays in the writer's queue.
    let late = |document: String| {
        let (client, bearer) = (app.client.clone(), staff.clone());
        tokio::task::spawn_blocking(move || client.graphql(Some(&bearer), &document, json!({})))
    };
    let in_commit = late(earn("ann", "late-1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let in_queue = late(earn("bob", "late-2"));
    for answer in [in_commit.await.expect("the request ends"), in_queue.await.expect("the request ends")] {
        assert_eq!(code(&answer), "OUTCOME_UNKNOWN", "{answer}");
        assert!(answer["errors"][0]["message"].as_str().is_some_and(|m| m.contains("idempotencyKey")), "{answer}");
    }
    lock.rollback().await.expect("releases the lock");
    // The command that was in a commit lands; its retry with the same key
    // answers with that one outcome.
    let admin = token(Role::Admin, None, None);
    let earned = |member: &str| {
        let query = format!(
            "{{ events(first: 100, aggregateId: \"{member}\", eventType: \"PointsEarned\") {{ edges {{ node {{ position }} }} }} }}"
        );
        app.graphql(Some(&admin), &query, json!({}))["data"]["events"]["edges"].as_array().map_or(0, Vec::len)
    };
    let retry = app.graphql(Some(&staff), &earn("ann", "late-1"), json!({}));
    assert!(retry["data"]["earnPoints"]["position"].as_i64().is_some(), "{retry}");
    let again = app.graphql(Some(&staff), &earn("ann", "late-1"), json!({}));
    assert_eq!(again["data"]["earnPoints"]["replayed"], true, "{again}");
    assert_eq!(earned("ann"), 1, "recorded once");
    // The command still queued when its caller gave up was dropped before
    // any transaction: nothing of it is in the log, and its retry runs it.
    assert_eq!(earned("bob"), 0, "the abandoned command was not written");
    let retry = app.graphql(Some(&staff), &earn("bob", "late-2"), json!({}));
    assert_eq!(retry["data"]["earnPoints"]["replayed"], false, "{retry}");
    assert_eq!(earned("bob"), 1);
}
