//! `postSocialStatus` over a real WebSocket: each provider's outcome, as the
//! social workers record it, reaches the post's author. (Wallet updates, store
//! activity and the event log are tested end to end on the binary in the
//! root `tests/api.rs`.)

extern crate pointstream_api as api;

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod serving;

use std::time::Duration;

use api::auth::{Claims, Role, mint};
use api::build;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Backend, open, quiet, scratch, world};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &[u8] = b"subscription test secret";

fn token(role: Role, member: Option<&str>) -> String {
    // An hour: within the verifier's maximum token lifetime.
    let exp = api::auth::now_seconds() + 3_600;
    let claims = Claims { sub: "t".into(), role, member: member.map(str::to_string), store: None, exp };
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
async fn post_social_status_follows_each_providers_outcome() {
    use domain::values::{ExternalRef, MemberId, PhotoKey, PostBody, PostId, Provider, Reason, StoreId};
    use domain::{Photo, Post, PostCommand, SocialOutcome};
    use eventstore::CommandContext;

    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let store = open(&db, quiet()).await;
    world(&store, &["ann", "bob"]).await;
    let create = PostCommand::Create {
        post: PostId::parse("p1").expect("id"),
        author: MemberId::parse("bob").expect("id"),
        store: StoreId::parse("cafe").expect("id"),
        body: PostBody::parse("Great coffee").expect("body"),
        photos: Vec::new(),
        providers: vec![Provider::Facebook, Provider::Twitter],
    };
    store.execute::<Post>("p1", create, CommandContext::default()).await.expect("posts");
    let (stop, shutdown) = watch::channel(false);
    let running = projections::spawn_all(&store, &projections::ProjectorConfig::default(), &shutdown);
    // The projectors run in this process, but the API is not told: it
    // polls their checkpoints as it does when they run elsewhere.
    let state = serving::state(store.clone());
    let app = api::server::app(build(state.clone()), state, api::server::HttpConfig::new(SECRET.to_vec()));
    let mut stopped = shutdown.clone();
    let (address, server) = api::server::bind("127.0.0.1:0".to_string(), |_| app, async move {
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await
    .expect("binds");
    let server = tokio::spawn(server);
    let subscribe = |id: &str, post: &str| {
        let query = format!(
            "subscription {{ postSocialStatus(post: \"{post}\") {{ photoKey provider status externalId url reason attempts }} }}"
        );
        Message::text(json!({ "id": id, "type": "subscribe", "payload": { "query": query } }).to_string())
    };

    // The projector may still be catching up: the post must be visible first.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while projections::checkpoint::read(store.db(), "posts", &projections::Names::LIVE).await.expect("reads")
        < store.read_head().await.expect("head")
    {
        assert!(std::time::Instant::now() < deadline, "the posts projection caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut author = connect(&address, "graphql-transport-ws", &token(Role::Member, Some("bob"))).await;
    author.send(subscribe("1", "p1")).await.expect("sends");
    let mut other = connect(&address, "graphql-transport-ws", &token(Role::Member, Some("ann"))).await;
    other.send(subscribe("2", "p1")).await.expect("sends");
    let refused = next_json(&mut other).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    other.send(subscribe("3", "nope")).await.expect("sends");
    // Subscription 2's `complete` and subscription 3's answer may come in either order.
    let missing = loop {
        let message = next_json(&mut other).await;
        if message["id"] == "3" && message["type"] != "complete" {
            break message;
        }
    };
    assert_eq!(missing["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{missing}");
    // The protocol has no acknowledgement of a subscribe; give the server a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // What the social workers record.
    let outcomes = [
        (
            Provider::Facebook,
            SocialOutcome::Published {
                external_id: ExternalRef::parse("fb-1").expect("ref"),
                url: ExternalRef::parse("https://facebook.example/fb-1").expect("ref"),
            },
        ),
        (Provider::Twitter, SocialOutcome::Failed { reason: Reason::parse("HTTP 503").expect("reason"), attempt: 1 }),
    ];
    for (provider, outcome) in outcomes {
        let command = PostCommand::RecordSocialResult { provider, outcome };
        store.execute::<Post>("p1", command, CommandContext::default()).await.expect("records");
    }
    // And a photo added later, published on its own.
    let key = PhotoKey::parse("photos/later.png").expect("key");
    let photo = Photo { key: key.clone(), content_type: "image/png".into(), size: 68, sha256: "ab".repeat(32) };
    let later = [
        PostCommand::AddPhoto { photo },
        PostCommand::RecordPhotoResult {
            photo: key,
            provider: Provider::Twitter,
            outcome: SocialOutcome::Published {
                external_id: ExternalRef::parse("tw-2").expect("ref"),
                url: ExternalRef::parse("https://twitter.example/tw-2").expect("ref"),
            },
        },
    ];
    for command in later {
        store.execute::<Post>("p1", command, CommandContext::default()).await.expect("records");
    }

    let published = next_json(&mut author).await;
    assert_eq!(
        published["payload"]["data"]["postSocialStatus"],
        json!({ "photoKey": null, "provider": "facebook", "status": "published", "externalId": "fb-1",
                "url": "https://facebook.example/fb-1", "reason": null, "attempts": 1 }),
        "{published}"
    );
    let failed = next_json(&mut author).await;
    assert_eq!(failed["payload"]["data"]["postSocialStatus"]["status"], "failed", "{failed}");
    assert_eq!(failed["payload"]["data"]["postSocialStatus"]["reason"], "HTTP 503");
    let photo = next_json(&mut author).await;
    assert_eq!(
        photo["payload"]["data"]["postSocialStatus"],
        json!({ "photoKey": "photos/later.png", "provider": "twitter", "status": "published", "externalId": "tw-2",
                "url": "https://twitter.example/tw-2", "reason": null, "attempts": 1 }),
        "{photo}"
    );

    stop.send_replace(true);
    for task in running.tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
    drop((author, other));
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// The ledger tail reads the ledger while someone follows it, and not once
/// after the last one has gone; a subscriber joining later gets what comes
/// after it joined, nothing from the time in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_tail_reads_nothing_while_nobody_follows_it() {
    use std::sync::atomic::Ordering;

    use api::checkpoints::Checkpoints;
    use api::tail::{Interest, Tails};
    use domain::Wallet;
    use eventstore::CommandContext;

    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let (store, reads) = support::open_counting(&db, |sql| sql.starts_with("SELECT") && sql.contains("ledger")).await;
    projections::write_inline(&store, &projections::PROJECTIONS).expect("known projections");
    world(&store, &["ann", "bob"]).await;
    let earn = |who: &'static str, purchase: String| {
        let store = store.clone();
        async move {
            let command = support::earn(who, &purchase, 1_000);
            store.execute::<Wallet>(who, command, CommandContext::default()).await.expect("earns")
        }
    };
    let tails = Tails::new(store.clone(), api::replicas::Reads::primary(&store), Checkpoints::new(store.clone(), &[]));

    let mut first = tails.ledger(Interest::All).await.expect("a cursor");
    let earned = earn("bob", "r1".into()).await;
    let row = tokio::time::timeout(Duration::from_secs(10), first.next()).await.expect("in time").expect("a row");
    assert_eq!((row.member_id.as_str(), row.position as u64), ("bob", earned.last_position));
    assert!(reads.load(Ordering::SeqCst) > 0, "read while followed");

    // The row it got was read and sent: the tail has nothing left to read
    // for it, and nobody follows from here on.
    drop(first);
    let before = reads.load(Ordering::SeqCst);
    for n in 2..8 {
        earn("bob", format!("r{n}")).await;
    }
    // The tail moves on past these earns without reading: wait until it has,
    // so that the subscriber below joins after them.
    let last = store.head();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tails.ledger_published() < Some(last) {
        assert!(std::time::Instant::now() < deadline, "the idle tail moved past the earns");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let when_joined = reads.load(Ordering::SeqCst);

    let mut second = tails.ledger(Interest::All).await.expect("a cursor");
    let earned = earn("ann", "a1".into()).await;
    let row = tokio::time::timeout(Duration::from_secs(10), second.next()).await.expect("in time").expect("a row");
    assert_eq!((row.member_id.as_str(), row.position as u64), ("ann", earned.last_position), "nothing older");
    // Nothing older reached it: so the tail had moved past bob's earns before
    // it joined (had it not, it would have read and sent them to it), and
    // whatever the tail read for them was read by then.
    assert_eq!(when_joined, before, "no read while nobody follows");
}
