//! Traces end to end: `pointstream serve` and a separate `pointstream worker
//! social` export spans over OTLP (HTTP/protobuf) to a receiver in the test,
//! which decodes them. One `createPost` is one trace across both processes,
//! from the HTTP request to both networks' calls; a client's `traceparent`
//! makes the request a part of the client's trace.

mod app;

#[path = "../workers/tests/services/mod.rs"]
mod services;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::auth::Role;
use app::{App, setup, token};
use eventstore::scratch::ScratchDatabase;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use poem::web::Data;
use poem::{EndpointExt, Route, handler, post};
use prost::Message;
use serde_json::json;
use services::{Fake, RedisServer, fake_networks};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    /// The exporting process's `pointstream.role`.
    role: String,
    /// Trace ids of its links.
    links: Vec<String>,
}

/// An OTLP/HTTP trace receiver on a free loopback port: keeps every span.
#[derive(Default)]
struct Receiver {
    spans: Mutex<Vec<Received>>,
}

impl Receiver {
    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to 30 s for `done` to accept the spans received; them.
    fn until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "{what} within 30 s; spans received: {spans:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[handler]
fn export(receiver: Data<&Arc<Receiver>>, body: Vec<u8>) -> poem::Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) else {
        return poem::Response::builder().status(poem::http::StatusCode::BAD_REQUEST).body("not an export request");
    };
    let mut spans = receiver.spans.lock().unwrap_or_else(|p| p.into_inner());
    for resource_spans in request.resource_spans {
        let role = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "pointstream.role")
            .and_then(|attribute| match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(role)) => Some(role.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
            spans.push(Received {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                name: span.name,
                role: role.clone(),
                links: span.links.iter().map(|link| hex::encode(&link.trace_id)).collect(),
            });
        }
    }
    poem::Response::builder()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

/// Starts a receiver; returns it and its base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
async fn receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app = Route::new().at("/v1/traces", post(export)).data(receiver.clone());
    let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("the receiver listens");
    let address = poem::listener::Acceptor::local_addr(&acceptor)
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .expect("an address");
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    (receiver, format!("http://{address}"))
}

/// The environment that sends a process's traces to `endpoint` at once.
fn otel_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_string()),
        ("OTEL_SERVICE_NAME", "pointstream-test".to_string()),
    ]
}

/// A `pointstream worker social` process; killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn any_named<'a>(spans: &'a [Received], name: &str) -> Option<&'a Received> {
    spans.iter().find(|span| span.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_one_trace_from_its_request_to_both_networks_across_two_processes() {
    let db = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}"));
    let Some(db) = db else { return };
    let redis = RedisServer::start();
    let (receiver, endpoint) = receiver().await;
    let fake = Arc::new(Fake::default());
    let base = fake_networks(fake.clone()).await;
    let social_env = [
        ("REDIS_URL", redis.url()),
        ("POINTSTREAM_TOKEN_KEY", KEY.to_string()),
        ("POINTSTREAM_FACEBOOK_URL", format!("{base}/fb")),
        ("POINTSTREAM_TWITTER_URL", base.clone()),
    ];
    // The server relays but leaves cross-posting to the worker process.
    let mut env: Vec<(&str, String)> = otel_env(&endpoint);
    env.extend(social_env.iter().cloned());
    env.push(("POINTSTREAM_SERVE_SOCIAL", "false".to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = App::serve_at(&db.url, "127.0.0.1:0", &[], &env);
    let _worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_pointstream"))
            .args(["worker", "social"])
            .env("DATABASE_URL", &db.url)
            .envs(social_env.iter().cloned())
            .envs(otel_env(&endpoint))
            .env("POINTSTREAM_CONSUMER", "traced")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the worker starts"),
    );

    setup(&app, &["ann"], &[("cafe", "ann")]);
    let ann = token(Role::Member, Some("ann"), None);
    for (provider, account) in [("FACEBOOK", "ann-page"), ("TWITTER", "@ann")] {
        let link = format!(
            "mutation {{ linkSocialAccount(member: \"ann\", provider: {provider}, externalId: \"{account}\", \
             accessToken: \"token\") {{ position }} }}"
        );
        let linked = app.graphql(Some(&ann), &link, json!({}));
        assert!(linked.get("errors").is_none(), "{linked}");
    }
    let created = app.graphql(
        Some(&ann),
        "mutation Post { createPost(author: \"ann\", store: \"cafe\", body: \"Traced\", id: \"p-traced\", \
         providers: [FACEBOOK, TWITTER]) { position } }",
        json!({}),
    );
    assert!(created.get("errors").is_none(), "{created}");

    // The trace of the `createPost` request: the one whose command executed on a Post.
    let spans = receiver.until("the post's command span", |spans| any_named(spans, "execute Post").is_some());
    let command = any_named(&spans, "execute Post").expect("found").clone();
    let trace = command.trace_id.clone();
    let in_trace = |spans: &[Received], name: &str| spans.iter().any(|s| s.trace_id == trace && s.name == name);
    let wanted = [
        "request",
        "resolve createPost",
        "command",
        "execute Post",
        "load",
        "decide",
        "append",
        "group_commit",
        "relay",
        "cross-post PostCreated",
        "publish to facebook",
        "publish to twitter",
    ];
    let spans = receiver.until("every step of the post in its trace, and a relay batch linked to it", |spans| {
        wanted.iter().all(|name| in_trace(spans, name))
            && spans.iter().any(|s| s.name == "relay_batch" && s.links.contains(&trace))
    });
    let trace_spans: Vec<&Received> = spans.iter().filter(|s| s.trace_id == trace).collect();
    // Two processes: the request, command and relay in `serve`, the
    // cross-posting in the worker (which runs commands of its own in the same
    // trace: recording each network's outcome).
    let named = |name: &str| {
        let role =
            if name.starts_with("cross-post") || name.starts_with("publish to") { "worker social" } else { "serve" };
        trace_spans
            .iter()
            .find(|s| s.name == name && s.role == role)
            .copied()
            .unwrap_or_else(|| panic!("no {name} span from {role} in the trace"))
    };
    for name in ["request", "execute Post", "group_commit", "relay"] {
        assert_eq!(named(name).role, "serve", "{name}");
    }
    for name in ["cross-post PostCreated", "publish to facebook", "publish to twitter"] {
        assert_eq!(named(name).role, "worker social", "{name}");
    }
    // The request is the root; the rest hang together by their parents.
    let request = named("request");
    assert_eq!(request.parent_span_id, "", "the request starts the trace");
    assert_eq!(named("resolve createPost").parent_span_id, request.span_id, "the root field is the request's");
    assert_eq!(named("command").parent_span_id, named("resolve createPost").span_id);
    assert_eq!(named("group_commit").parent_span_id, named("append").span_id, "the group commit carries the append");
    // The cross-posting is a child of the span that wrote the event.
    assert_eq!(named("cross-post PostCreated").parent_span_id, named("execute Post").span_id);
    assert_eq!(named("relay").parent_span_id, named("execute Post").span_id);
    for call in ["publish to facebook", "publish to twitter"] {
        assert_eq!(named(call).parent_span_id, named("cross-post PostCreated").span_id, "{call}");
    }
    // Each network was called once.
    assert_eq!((fake.calls("facebook").len(), fake.calls("twitter").len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_traceparent_makes_the_request_a_part_of_its_trace() {
    let db = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}"));
    let Some(db) = db else { return };
    let (receiver, endpoint) = receiver().await;
    let env = otel_env(&endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = App::serve_at(&db.url, "127.0.0.1:0", &[], &env);
    setup(&app, &["ann"], &[("cafe", "ann")]);

    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace}-{parent}-01");
    let staff = token(Role::Staff, None, Some("cafe"));
    let earn = json!({
        "query": "mutation Earn { earnPoints(member: \"ann\", store: \"cafe\", purchaseRef: \"r-1\", amount: 1000) { position } }"
    });
    let reply = app.exchange(
        "POST",
        "/graphql",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {staff}")),
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
        earn.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!reply.body.contains("errors"), "{}", reply.body);

    let spans = receiver
        .until("the client's trace", |spans| spans.iter().any(|s| s.trace_id == trace && s.name == "group_commit"));
    let request = spans.iter().find(|s| s.trace_id == trace && s.name == "request").expect("the request span");
    assert_eq!(request.parent_span_id, parent, "the request is a child of the client's span");
    // Its events carry the client's trace on.
    let admin = token(Role::Admin, None, None);
    let log = app.graphql(Some(&admin), "{ events(first: 100) { edges { node { eventType metadata } } } }", json!({}));
    let earned = log["data"]["events"]["edges"]
        .as_array()
        .expect("events")
        .iter()
        .find(|edge| edge["node"]["eventType"] == "PointsEarned")
        .map(|edge| edge["node"]["metadata"].to_string())
        .expect("a PointsEarned");
    assert!(earned.contains(trace), "{earned}");
    assert!(earned.contains("vendor=opaque"), "{earned}");
}
