//! `walletUpdates` over a real WebSocket, in both protocols, fed by a
//! mutation made on another connection.

extern crate pointstream_api as api;

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use api::auth::{Claims, Role, mint};
use api::{ApiState, Limits, build};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Backend, earn, open, quiet, scratch, world};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &[u8] = b"subscription test secret";

fn token(role: Role, member: Option<&str>) -> String {
    let claims = Claims { sub: "t".into(), role, member: member.map(str::to_string), store: None, exp: 4_000_000_000 };
    mint(SECRET, &claims).expect("mints")
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(address: &str, protocol: &str, bearer: &str) -> Socket {
    let mut request = format!("ws://{address}/graphql/ws").into_client_request().expect("a request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("a header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the WebSocket opens");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {bearer}") } });
    socket.send(Message::text(init.to_string())).await.expect("sends");
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).expect("JSON");
            if value["type"] != "ka" && value["type"] != "ping" {
                return value;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_updates_arrive_over_both_websocket_protocols() {
    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    let (stop, shutdown) = watch::channel(false);
    let running = projections::spawn_all(&store, &projections::ProjectorConfig::default(), &shutdown);
    let state = ApiState { store: store.clone(), read_timeout: Duration::from_secs(10), limits: Limits::default() };
    let app = api::server::app(build(state.clone()), state, SECRET.to_vec(), Vec::new());
    let mut stopped = shutdown.clone();
    let (address, server) = api::server::bind("127.0.0.1:0".to_string(), app, async move {
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await
    .expect("binds");
    let server = tokio::spawn(server);

    let query = "subscription { walletUpdates(member: \"bob\") { kind delta balanceAfter } }";
    let bob = token(Role::Member, Some("bob"));
    let mut modern = connect(&address, "graphql-transport-ws", &bob).await;
    modern
        .send(Message::text(json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }).to_string()))
        .await
        .expect("sends");
    let mut legacy = connect(&address, "graphql-ws", &bob).await;
    legacy
        .send(Message::text(json!({ "id": "1", "type": "start", "payload": { "query": query } }).to_string()))
        .await
        .expect("sends");
    // Someone else's socket may not follow bob's wallet.
    let mut nosy = connect(&address, "graphql-transport-ws", &token(Role::Member, Some("ann"))).await;
    nosy.send(Message::text(json!({ "id": "9", "type": "subscribe", "payload": { "query": query } }).to_string()))
        .await
        .expect("sends");
    let refused = next_json(&mut nosy).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert!(refused["payload"]["data"].is_null());
    // The protocols have no acknowledgement of a subscribe; give the server a
    // moment to start the streams, which begin at the read model's position.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A command from elsewhere (here: the store directly, as another API instance would).
    store
        .execute::<domain::Wallet>("bob", earn("bob", "r1", 1_000), eventstore::CommandContext::default())
        .await
        .expect("lands");

    let expected = json!({ "walletUpdates": { "kind": "earn", "delta": 100, "balanceAfter": 100 } });
    let next = next_json(&mut modern).await;
    assert_eq!((next["type"].as_str(), &next["payload"]["data"]), (Some("next"), &expected), "{next}");
    let data = next_json(&mut legacy).await;
    assert_eq!((data["type"].as_str(), &data["payload"]["data"]), (Some("data"), &expected), "{data}");

    stop.send_replace(true);
    for task in running.tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
    drop((modern, legacy, nosy));
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
