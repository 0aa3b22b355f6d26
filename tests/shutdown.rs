//! Operating the server: its logs as a collector reads them, and stopping it
//! as an orchestrator does (SIGTERM), under load and idle.

mod app;

#[path = "../workers/tests/services/mod.rs"]
mod services;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::auth::Role;
use app::{App, Client, REGISTER_MEMBER, Sending, Unanswered, setup, token};
use eventstore::scratch::ScratchDatabase;
use futures_util::StreamExt;
use migrations::tables::Leases;
use sea_orm::sea_query::Query;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use services::RedisServer;
use tokio_tungstenite::tungstenite::Message;

/// With its log redirected (as under any supervisor), every line is one JSON
/// object, without terminal escapes, and the lines about a mutation carry
/// its request id (the client's `X-Request-Id`, echoed), its command id and
/// correlation id, and the position it was written at.
#[test]
fn a_redirected_log_is_json_lines_that_name_the_request_the_command_and_its_position() {
    let app = App::spawn_verbose(ScratchDatabase::sqlite(), &[]);
    let body = json!({ "query": REGISTER_MEMBER, "variables": { "id": "ann", "handle": "ann_h" } }).to_string();
    let admin = format!("Bearer {}", token(Role::Admin, None, None));
    let headers = [("Content-Type", "application/json"), ("Authorization", &admin), ("X-Request-Id", "req-logs-1")];
    let reply = app.exchange("POST", "/graphql", &headers, body.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-request-id"), Some("req-logs-1"));
    let position = reply.json()["data"]["registerMember"]["position"].as_u64().expect("a position");
    // A request id that is not plausible is replaced by one of the server's.
    let odd = [("Content-Type", "application/json"), ("Authorization", &admin), ("X-Request-Id", "a b\tc")];
    let reply = app.exchange("POST", "/graphql", &odd, br#"{"query":"{ __typename }"}"#);
    let made_up = reply.header("x-request-id").expect("an id").to_string();
    assert!(made_up.len() == 32 && made_up.bytes().all(|b| b.is_ascii_hexdigit()), "{made_up}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let logs = app.logs();
        assert!(!logs.contains('\u{1b}'), "no terminal escapes in a redirected log:\n{logs}");
        let lines: Vec<Value> = logs
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
            .collect();
        let found = lines.into_iter().find(|line| {
            line["message"] == "command recorded"
                && line["spans"].as_array().is_some_and(|spans| spans.iter().any(|s| s["request_id"] == "req-logs-1"))
        });
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "a line about the command:\n{}", app.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    let command = &line["span"];
    assert_eq!(command["name"], "command", "{line}");
    assert_eq!(command["command"], "register_member", "{line}");
    assert_eq!(command["position"].as_u64(), Some(position), "{line}");
    let command_id = command["command_id"].as_str().expect("a command id");
    assert!(!command_id.is_empty(), "{line}");
    assert_eq!(command["correlation_id"].as_str(), Some(command_id), "{line}");
    assert!(line["timestamp"].is_string() && line["level"] == "DEBUG", "{line}");
}

/// The leases `pid` holds, by name.
async fn leases_of(db: &sea_orm::DatabaseConnection, pid: u32) -> Vec<String> {
    let rows = db
        .query_all(Query::select().columns([Leases::Name, Leases::Holder]).from(Leases::Table))
        .await
        .expect("the leases read");
    let mut held: Vec<String> = rows
        .iter()
        .filter(|row| row.try_get::<String>("", "holder").is_ok_and(|h| h.starts_with(&format!("pid {pid} "))))
        .map(|row| row.try_get::<String>("", "name").expect("a name"))
        .collect();
    held.sort();
    held
}

/// The roles a serving process takes leases for, with Redis.
const ROLES: [&str; 8] = [
    "notary",
    "projector:members",
    "projector:posts",
    "projector:share_distribution",
    "projector:shares",
    "projector:stores",
    "projector:wallets",
    "relay",
];

/// What one client saw of its requests.
#[derive(Debug, Default)]
struct Seen {
    answered: usize,
    /// Each request without an answer, and when its sending began.
    unanswered: Vec<(String, Instant)>,
}

/// Earns in a loop until `stop`: only requests started before it are sent.
fn client(client: Client, member: String, stop: Arc<AtomicBool>) -> Seen {
    let staff = format!("Bearer {}", token(Role::Staff, None, Some("cafe")));
    let mut seen = Seen::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("{member}-{n}");
        let body = json!({
            "query": "mutation($m: String!, $ref: String!, $key: String!) { earnPoints(member: $m, store: \"cafe\", \
                      purchaseRef: $ref, amount: 500, idempotencyKey: $key) { position } }",
            "variables": { "m": member, "ref": key, "key": key },
        })
        .to_string();
        let headers = [("Content-Type", "application/json"), ("Authorization", staff.as_str())];
        let sent = Instant::now();
        match client.try_exchange("POST", "/graphql", &headers, body.as_bytes(), Sending::default()) {
            Ok(reply) if reply.status == 200 => seen.answered += 1,
            Ok(reply) => seen.unanswered.push((format!("{key}: status {}: {}", reply.status, reply.body), sent)),
            Err(Unanswered::NotSent(why)) | Err(Unanswered::Lost(why)) => {
                seen.unanswered.push((format!("{key}: {why}"), sent))
            }
        }
    }
    seen
}

/// SIGTERM under load: `/readyz` turns 503, the WebSocket is closed with
/// 1001, every request sent before the signal is answered (none reset), the
/// standby takes over every lease within a second (not the lease's TTL),
/// and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_in_flight_and_hands_the_leases_over_at_once() {
    let Some(db) = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}")) else { return };
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let args = ["--redis-url", redis_url.as_str(), "--lease-ttl-ms", "10000", "--shutdown-grace-ms", "10000"];
    let url = db.url.clone();
    let mut first = App::spawn_verbose(db, &args);
    let conn = Database::connect(&first.url).await.expect("the database opens");
    let first_pid = first.pid();
    let deadline = Instant::now() + Duration::from_secs(20);
    while leases_of(&conn, first_pid).await != ROLES {
        assert!(
            Instant::now() < deadline,
            "the first server took every lease: {:?}",
            leases_of(&conn, first_pid).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = App::serve_at(&url, "127.0.0.1:0", &args, &[]);
    let members: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();
    setup(&first, &ids, &[("cafe", "m0")]);

    let mut socket = first.socket("graphql-transport-ws", &token(Role::Member, Some("m1"), None)).await;
    app::subscribe(
        &mut socket,
        "graphql-transport-ws",
        "w",
        "subscription { walletUpdates(member: \"m1\") { balance } }",
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = members
        .iter()
        .map(|member| {
            let (c, m, s) = (first.client.clone(), member.clone(), stop.clone());
            std::thread::spawn(move || client(c, m, s))
        })
        .collect();
    // Let the load build up, then stop new requests and send the signal
    // while those already sent are in flight. A client that read the flag
    // just before it was set may begin one more request after it, as the
    // signal arrives: on a keep-alive connection the server has not read
    // from, that one may meet the connection closing, as HTTP/1.1 allows
    // (clients resend such requests). What must be answered is every
    // request whose sending began before the clients were told to stop, a
    // moment before the signal.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stopped = Instant::now();
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let signalled = Instant::now();
    first.terminate();

    // The standby holds every lease within a second.
    let second_pid = second.pid();
    while leases_of(&conn, second_pid).await != ROLES {
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "the standby held {:?} a second after SIGTERM",
            leases_of(&conn, second_pid).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = signalled.elapsed();

    // The WebSocket is told the server is going away.
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1001));

    let mut answered = 0;
    for handle in clients {
        let seen = handle.join().expect("the client ran");
        let before: Vec<&String> =
            seen.unanswered.iter().filter(|(_, sent)| *sent < stopped).map(|(request, _)| request).collect();
        assert!(before.is_empty(), "requests sent before SIGTERM went unanswered: {before:?}");
        answered += seen.answered;
    }
    assert!(answered > 0, "the load ran");
    let status = first.exited_within(Duration::from_secs(15)).expect("the server exits");
    assert!(status.success(), "exit status {status:?}:\n{}", first.logs());
    let logs = first.logs();
    assert!(logs.contains("SIGTERM") && logs.contains("stopped"), "each step is logged:\n{logs}");
    eprintln!("{answered} requests answered; leases taken over {} ms after SIGTERM", takeover.as_millis());

    // The standby serves on.
    let answer = second.graphql(Some(&token(Role::Admin, None, None)), "{ logHead }", json!({}));
    assert!(answer["data"]["logHead"].as_i64().is_some_and(|head| head > 0), "{answer}");
    drop(redis);
}

/// SIGTERM to an idle server: it is gone at once, with exit code 0.
#[test]
fn sigterm_to_an_idle_server_exits_at_once() {
    let mut app = App::spawn(ScratchDatabase::sqlite(), &[]);
    assert_eq!(app.get("/readyz").0, 200);
    let signalled = Instant::now();
    app.terminate();
    let status = app.exited_within(Duration::from_secs(10)).expect("the server exits");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}:\n{}", app.logs());
    eprintln!("exited {} ms after SIGTERM", took.as_millis());
    // Nothing to wait for: well under a second where nothing else runs,
    // and within two on however busy a machine.
    assert!(took < Duration::from_secs(2), "exited {} ms after SIGTERM", took.as_millis());
}
