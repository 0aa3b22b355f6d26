//! The front door as clients meet it, over real HTTP and WebSocket against
//! the `pointstream` binary: GraphQL over HTTP (GET, media types, statuses,
//! persisted queries), tokens refused on every request, introspection under
//! the default limits, CORS, and the WebSocket protocols' close codes.
//! (Third-party clients and a real browser are in `tests/js/`.)

mod app;

use std::time::Duration;

use api::auth::Role;
use app::{App, code, next_json, subscribe, token, token_expiring_in};
use eventstore::scratch::ScratchDatabase;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

fn sqlite_app(args: &[&str]) -> App {
    App::spawn(ScratchDatabase::sqlite(), args)
}

/// `path` with `pairs` as its query string, form-encoded.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: String = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.bytes().map(|b| format!("%{b:02X}")).collect::<String>()))
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

#[test]
fn a_malformed_or_foreign_token_is_refused_even_on_a_public_query() {
    let app = sqlite_app(&[]);
    for bearer in ["not.a.jwt", "Bearer-less", &app::foreign_token(), &app::expired_token()] {
        let answer = app.graphql(Some(bearer), "{ __typename stores { id } }", json!({}));
        assert_eq!(code(&answer), "UNAUTHENTICATED", "{bearer}: {answer}");
        assert!(answer.get("data").is_none_or(Value::is_null), "nothing ran: {answer}");
    }
    let body = json!({ "query": "{ __typename }" }).to_string();
    let reply = app.exchange(
        "POST",
        "/graphql",
        &[("Content-Type", "application/json"), ("Accept", GRAPHQL_RESPONSE), ("Authorization", "Bearer not.a.jwt")],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{reply:?}");
    let anonymous = app.graphql(None, "{ __typename }", json!({}));
    assert_eq!(anonymous["data"]["__typename"], "Query", "no token at all is anonymous: {anonymous}");
}

#[test]
fn queries_run_over_get_and_a_mutation_over_get_is_405() {
    let app = sqlite_app(&[]);
    let admin = token(Role::Admin, None, None);
    let bearer = format!("Bearer {admin}");
    let get = app.exchange("GET", &with_query("/graphql", &[("query", "{ __typename stores { id } }")]), &[], b"");
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.json(), json!({ "data": { "__typename": "Query", "stores": [] } }));
    assert!(get.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{get:?}");
    let with_variables = app.exchange(
        "GET",
        &with_query(
            "/graphql",
            &[
                ("query", "query Balances($m: String!) { balances(member: $m) { balance } }"),
                ("variables", r#"{"m": "ann"}"#),
                ("operationName", "Balances"),
            ],
        ),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(with_variables.json(), json!({ "data": { "balances": [] } }), "{with_variables:?}");
    let mutation = "mutation { registerMember(id: \"zed\", handle: \"zed_h\", displayName: \"Zed\") { position } }";
    let over_get = app.exchange(
        "GET",
        &with_query("/graphql", &[("query", mutation)]),
        &[("Authorization", &bearer), ("Accept", GRAPHQL_RESPONSE)],
        b"",
    );
    assert_eq!(over_get.status, 405, "{over_get:?}");
    assert_eq!(over_get.header("allow"), Some("POST"));
    assert_eq!(app.head(), 0, "nothing was written");
    let page = app.exchange("GET", "/graphql", &[("Accept", "text/html,application/xhtml+xml")], b"");
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").is_some(), "{:?}", page.headers);
    let no_query = app.exchange("GET", "/graphql", &[("Accept", "application/json")], b"");
    assert_eq!(no_query.status, 400, "{no_query:?}");
}

#[test]
fn the_graphql_response_media_type_says_with_its_status_how_far_a_request_got() {
    let app = sqlite_app(&[]);
    let post = |accept: &str, body: &str| {
        app.exchange("POST", "/graphql", &[("Content-Type", "application/json"), ("Accept", accept)], body.as_bytes())
    };
    let ok = post(GRAPHQL_RESPONSE, r#"{"query": "{ __typename }"}"#);
    assert_eq!((ok.status, ok.json()), (200, json!({ "data": { "__typename": "Query" } })));
    assert!(ok.header("content-type").is_some_and(|t| t.starts_with(GRAPHQL_RESPONSE)), "{ok:?}");
    for document in ["{", "{ noSuchField }", "query($id: ID!) { __typename }"] {
        let body = json!({ "query": document, "variables": { "id": null } }).to_string();
        let refused = post(GRAPHQL_RESPONSE, &body);
        assert_eq!(refused.status, 400, "{document}: {refused:?}");
        assert!(refused.json().get("data").is_none(), "no data key when nothing ran: {refused:?}");
        let legacy = post("application/json", &body);
        assert_eq!(legacy.status, 200, "{document}: {legacy:?}");
        assert!(legacy.json()["errors"].is_array());
    }
    for body in [r#"{"query": 0}"#, r#"{"query": "{ a }", "variables": "x"}"#, r#"{"notquery": "{ a }"}"#, "{ no"] {
        assert_eq!(post("application/json", body).status, 400, "{body}");
    }
    let nulls = post("application/json", r#"{"query": "{ __typename }", "variables": null, "extensions": null}"#);
    assert_eq!(nulls.status, 200, "{nulls:?}");
}

#[test]
fn a_persisted_query_is_sent_by_its_hash_once_the_server_knows_it() {
    let app = sqlite_app(&[]);
    let query = "{ stores { id name } }";
    let hash = hex::encode(Sha256::digest(query.as_bytes()));
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let hash_only = with_query("/graphql", &[("extensions", &extensions)]);
    let unknown = app.exchange("GET", &hash_only, &[], b"");
    assert_eq!(unknown.status, 200);
    assert_eq!(code(&unknown.json()), "PERSISTED_QUERY_NOT_FOUND", "{unknown:?}");
    assert_eq!(unknown.json()["errors"][0]["message"], "PersistedQueryNotFound");
    let wrong =
        json!({ "query": "{ __typename }", "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } });
    assert_eq!(app.post_json(None, &wrong.to_string()).0, 400, "a query must match its hash");
    let full = json!({ "query": query, "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } });
    assert_eq!(app.post_json(None, &full.to_string()), (200, r#"{"data":{"stores":[]}}"#.to_string()));
    let known = app.exchange("GET", &hash_only, &[], b"");
    assert_eq!((known.status, known.json()), (200, json!({ "data": { "stores": [] } })), "{known:?}");
}

#[test]
fn the_standard_introspection_query_passes_the_default_limits_and_other_depths_do_not() {
    let app = sqlite_app(&[]);
    let standard = include_str!("fixtures/introspection.graphql");
    let answer = app.graphql(None, standard, json!({}));
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(answer["data"]["__schema"]["queryType"]["name"], "Query");
    assert_eq!(answer["data"]["__schema"]["mutationType"]["name"], "Mutation");
    assert_eq!(answer["data"]["__schema"]["subscriptionType"]["name"], "Subscription");
    // Nested lists of introspection multiply: refused.
    let lists = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    assert!(app.graphql(None, lists, json!({}))["errors"][0]["message"].as_str().is_some_and(|m| m.contains("deep")));
    // A selection 13 deep outside introspection: over the default of 12,
    // refused before validation looks at its fields.
    let deep = format!("{{ {} x {} }}", "a { ".repeat(12), "} ".repeat(12));
    let refused = app.graphql(None, &deep, json!({}));
    assert_eq!(refused["errors"][0]["message"], "Query is nested too deep.", "{refused}");
    let twelve = format!("{{ {} x {} }}", "a { ".repeat(11), "} ".repeat(11));
    let other = app.graphql(None, &twelve, json!({}));
    assert_ne!(other["errors"][0]["message"], "Query is nested too deep.", "{other}");
    let mut tower = String::from("query { ...F0 }");
    for level in 0..30 {
        tower.push_str(&format!(" fragment F{level} on Query {{ ...F{next} ...F{next} }}", next = level + 1));
    }
    tower.push_str(" fragment F30 on Query { stores { id } }");
    let refused = app.graphql(None, &tower, json!({}));
    assert_eq!(refused["errors"][0]["message"], "Query is too complex.", "{refused}");
    assert_eq!(app.get("/healthz").0, 200);
}

#[test]
fn introspection_can_be_turned_off() {
    let app = sqlite_app(&["--introspection", "false"]);
    let answer = app.graphql(None, "{ __schema { queryType { name } } }", json!({}));
    assert!(answer.get("errors").is_some(), "{answer}");
    assert_eq!(app.graphql(None, "{ stores { id } }", json!({}))["data"]["stores"], json!([]));
}

#[test]
fn cross_origin_requests_are_answered_for_allowed_origins_only() {
    let preflight = |app: &App, origin: &str| {
        app.exchange(
            "OPTIONS",
            "/graphql",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization,content-type"),
            ],
            b"",
        )
    };
    let loopback = sqlite_app(&[]);
    let allowed = preflight(&loopback, "http://localhost:5173");
    assert_eq!(allowed.status, 204, "{allowed:?}");
    assert_eq!(allowed.header("access-control-allow-origin"), Some("http://localhost:5173"));
    assert_eq!(allowed.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(preflight(&loopback, "https://elsewhere.example").status, 403);

    let configured = sqlite_app(&["--cors-origins", "https://app.example.com"]);
    assert_eq!(preflight(&configured, "https://app.example.com").status, 204);
    assert_eq!(preflight(&configured, "http://localhost:5173").status, 403);
    let body = json!({ "query": "{ stores { id } }" }).to_string();
    let actual = configured.exchange(
        "POST",
        "/graphql",
        &[("Origin", "https://app.example.com"), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(actual.status, 200);
    assert_eq!(actual.header("access-control-allow-origin"), Some("https://app.example.com"));
    let simple_from_elsewhere = configured.exchange(
        "POST",
        "/graphql",
        &[("Origin", "https://evil.example.com"), ("Content-Type", "text/plain")],
        body.as_bytes(),
    );
    assert_eq!(simple_from_elsewhere.status, 403, "not even a simple request runs");
}

/// The close frame that ends `socket`, within 10 s.
async fn close_of(socket: &mut app::Socket) -> (CloseCode, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the server closes within 10 s")
            .expect("a close frame before the end")
            .expect("a frame");
        if let Message::Close(frame) = message {
            let frame = frame.expect("a close code");
            return (frame.code, frame.reason.to_string());
        }
    }
}

async fn init(socket: &mut app::Socket, payload: Value) {
    let init = json!({ "type": "connection_init", "payload": payload });
    socket.send(Message::text(init.to_string())).await.expect("sends");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_close_with_the_protocols_codes() {
    let app = sqlite_app(&["--ws-init-timeout-ms", "500"]);

    let mut bad = app.raw_socket("graphql-transport-ws").await;
    init(&mut bad, json!({ "Authorization": "Bearer not.a.jwt" })).await;
    assert_eq!(close_of(&mut bad).await.0, CloseCode::from(4403));

    let mut missing = app.raw_socket("graphql-transport-ws").await;
    init(&mut missing, json!({})).await;
    assert_eq!(close_of(&mut missing).await.0, CloseCode::from(4403));

    let mut silent = app.raw_socket("graphql-transport-ws").await;
    assert_eq!(close_of(&mut silent).await.0, CloseCode::from(4408));

    let mut early = app.raw_socket("graphql-transport-ws").await;
    subscribe(&mut early, "graphql-transport-ws", "1", "subscription { eventLog { position } }").await;
    assert_eq!(close_of(&mut early).await.0, CloseCode::from(4401));

    let mut legacy = app.raw_socket("graphql-ws").await;
    init(&mut legacy, json!({ "Authorization": format!("Bearer {}", app::expired_token()) })).await;
    assert_eq!(next_json(&mut legacy).await["type"], "connection_error");
    assert_eq!(close_of(&mut legacy).await.0, CloseCode::from(4403));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_is_closed_when_its_token_expires_and_nothing_runs_on_it_after() {
    let app = sqlite_app(&[]);
    let admin = token(Role::Admin, None, None);
    app::setup(&app, &["ann"], &[("cafe", "ann")]);
    let short = token_expiring_in(Role::Admin, None, None, 2);
    let mut socket = app.socket("graphql-transport-ws", &short).await;
    subscribe(&mut socket, "graphql-transport-ws", "w", "subscription { walletUpdates(member: \"ann\") { delta } }")
        .await;
    let started = std::time::Instant::now();
    let (closed_with, reason) = close_of(&mut socket).await;
    assert_eq!(closed_with, CloseCode::from(4403), "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The same token over HTTP: refused too.
    let answer = app.graphql(
        Some(&short),
        "mutation { adjustPoints(member: \"ann\", store: \"cafe\", delta: 5, reason: \"late\") { position } }",
        json!({}),
    );
    assert_eq!(code(&answer), "UNAUTHENTICATED", "{answer}");
    let events = app.graphql(
        Some(&admin),
        "{ events(first: 100, eventType: \"PointsAdjusted\") { edges { node { position } } } }",
        json!({}),
    );
    assert_eq!(events["data"]["events"]["edges"], json!([]), "{events}");
}

#[test]
fn an_empty_embedded_database_is_announced_with_how_to_load_the_demo() {
    let (app, _token) = App::spawn_development(ScratchDatabase::sqlite());
    let printed = app.printed_until(|lines| lines.iter().any(|line| line.contains("pointstream demo")));
    assert!(printed.iter().any(|line| line.contains("pointstream demo")), "{printed:?}");
}
