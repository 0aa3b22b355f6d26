//! The GraphQL API end to end: `pointstream serve` on a free port, real
//! HTTP and WebSocket clients, on SQLite and on MariaDB.

mod app;

#[path = "../workers/tests/services/mod.rs"]
mod services;

use std::time::Duration;

use api::auth::Role;
use app::{App, Socket, code, expired_token, foreign_token, next_json, setup, subscribe, token};
use eventstore::scratch::ScratchDatabase;
use serde_json::{Value, json};

const EARN: &str = "mutation($member: String!, $store: String!, $ref: String!, $amount: Int!, $key: String) { \
    earnPoints(member: $member, store: $store, purchaseRef: $ref, amount: $amount, idempotencyKey: $key) { \
    position replayed balance { balance earned } } }";
const SHARE: &str = "mutation($from: String!, $to: String!, $points: Int!, $id: String) { \
    sharePoints(from: $from, store: \"cafe\", recipients: [{ member: $to, points: $points }], shareId: $id) { \
    position balance { balance sharedOut } } }";
const BALANCE: &str = "query($member: String!) { balances(member: $member) { storeId balance } }";

/// A fresh MariaDB database; `None` only when MySQL was explicitly opted out of locally.
async fn mariadb() -> Option<ScratchDatabase> {
    ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}"))
}

/// The server's group commits so far that went by `path` (`script` or `statements`).
fn group_commits(app: &App, path: &str) -> f64 {
    app.counted("pointstream_group_commits_total", &[&format!("path=\"{path}\"")])
}

/// Whether `answer` came without errors.
fn data(answer: &Value) -> bool {
    answer.get("errors").is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earn_share_and_balances_on_sqlite() {
    let app = App::spawn(ScratchDatabase::sqlite(), &[]);
    earn_share_and_balances(&app).await;
    // SQLite is in process: every append goes statement by statement.
    let commits = |path| group_commits(&app, path);
    assert!(commits("statements") >= 5.0 && commits("script") == 0.0, "{}", app.get("/metrics").1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earn_share_and_balances_on_mariadb() {
    let Some(db) = mariadb().await else { return };
    let app = App::spawn(db, &[]);
    earn_share_and_balances(&app).await;

    // On MariaDB an append goes as one script (its statements in one round
    // trip) when its rows need no read: balances the server keeps (after a
    // member's first earn here), posts created in the append.
    let staff = token(Role::Staff, None, Some("cafe"));
    let bob = token(Role::Member, Some("bob"), None);
    let earn = |app: &App, purchase: &str| {
        let vars = json!({ "member": "bob", "store": "cafe", "ref": purchase, "amount": 1_000 });
        let earned = app.graphql(Some(&staff), EARN, vars);
        assert!(data(&earned), "{earned}");
    };
    let post = |id: &str| {
        let query = format!(
            "mutation {{ createPost(author: \"bob\", store: \"cafe\", body: \"Hi\", id: \"{id}\") {{ position }} }}"
        );
        let posted = app.graphql(Some(&bob), &query, json!({}));
        assert!(data(&posted), "{posted}");
    };
    let scripts = group_commits(&app, "script");
    for n in 0..4 {
        earn(&app, &format!("more-{n}"));
    }
    post("p-2");
    assert!(group_commits(&app, "script") >= scripts + 3.0, "{}", app.get("/metrics").1);

    // Another server appends: this one's guess of the log head is then
    // wrong, its script is rolled back and the append goes statement by
    // statement, with nothing lost on either side.
    let rolled_back = || app.counted("pointstream_group_commit_scripts_rolled_back_total", &[]);
    let before = rolled_back();
    let beside = App::spawn_beside(&app, &[]);
    earn(&beside, "beside-1");
    post("p-3");
    assert!(rolled_back() >= before + 1.0, "{}", app.get("/metrics").1);
    let stored = app.graphql(Some(&bob), "{ post(id: \"p-3\") { body } }", json!({}));
    assert_eq!(stored["data"]["post"]["body"], "Hi", "{stored}");
    let balance = app.graphql(Some(&bob), BALANCE, json!({ "member": "bob" }));
    assert_eq!(balance["data"]["balances"], json!([{ "storeId": "cafe", "balance": 650 }]), "{balance}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb_appends_go_statement_by_statement_when_scripts_are_off() {
    let Some(db) = mariadb().await else { return };
    let app = App::spawn(db, &["--append-scripts", "false"]);
    setup(&app, &["bob"], &[("cafe", "bob")]);
    let staff = token(Role::Staff, None, Some("cafe"));
    for (n, balance) in [(1, 100), (2, 200), (3, 300)] {
        let vars = json!({ "member": "bob", "store": "cafe", "ref": format!("till-{n}"), "amount": 1_000 });
        let earned = app.graphql(Some(&staff), EARN, vars);
        assert_eq!(earned["data"]["earnPoints"]["balance"]["balance"], balance, "{earned}");
    }
    let commits = |path| group_commits(&app, path);
    assert!(commits("statements") >= 5.0 && commits("script") == 0.0, "{}", app.get("/metrics").1);
}

async fn earn_share_and_balances(app: &App) {
    setup(app, &["ann", "bob"], &[("cafe", "ann")]);
    let bob = token(Role::Member, Some("bob"), None);
    let staff = token(Role::Staff, None, Some("cafe"));

    // Bob follows his wallet in both protocols; staff follow the store.
    let mut modern = app.socket("graphql-transport-ws", &bob).await;
    let mut legacy = app.socket("graphql-ws", &bob).await;
    let mut till = app.socket("graphql-transport-ws", &staff).await;
    let wallet = "subscription { walletUpdates(member: \"bob\") { position kind delta balanceAfter } }";
    subscribe(&mut modern, "graphql-transport-ws", "w", wallet).await;
    subscribe(&mut legacy, "graphql-ws", "w", wallet).await;
    subscribe(
        &mut till,
        "graphql-transport-ws",
        "s",
        "subscription { storeActivity(store: \"cafe\") { memberId kind delta } }",
    )
    .await;
    // Neither protocol acknowledges a subscribe; let the server register them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Staff earn for bob; a retry with the same key answers the same and writes nothing.
    let vars = json!({ "member": "bob", "store": "cafe", "ref": "till-1", "amount": 2_000, "key": "e-1" });
    let earned = app.graphql(Some(&staff), EARN, vars.clone());
    assert_eq!(earned["data"]["earnPoints"]["balance"], json!({ "balance": 200, "earned": 200 }), "{earned}");
    let head = app.head();
    let again = app.graphql(Some(&staff), EARN, vars);
    assert_eq!(again["data"]["earnPoints"]["replayed"], true, "{again}");
    assert_eq!(again["data"]["earnPoints"]["position"], earned["data"]["earnPoints"]["position"]);
    assert_eq!(app.head(), head, "the retry wrote nothing");

    // Each subscription got the update made on the other connection.
    for (socket, protocol) in [(&mut modern, "graphql-transport-ws"), (&mut legacy, "graphql-ws")] {
        let update = next_json(socket).await;
        assert_eq!(update["type"], if protocol == "graphql-ws" { "data" } else { "next" }, "{update}");
        assert_eq!(update["payload"]["data"]["walletUpdates"]["balanceAfter"], 200, "{protocol}: {update}");
        assert_eq!(update["payload"]["data"]["walletUpdates"]["position"], earned["data"]["earnPoints"]["position"]);
    }
    let activity = next_json(&mut till).await;
    assert_eq!(
        activity["payload"]["data"]["storeActivity"],
        json!({ "memberId": "bob", "kind": "earn", "delta": 200 })
    );

    // Bob shares 50 with Ann: his balance at once, hers when the distribution has credited it.
    let shared = app.graphql(Some(&bob), SHARE, json!({ "from": "bob", "to": "ann", "points": 50, "id": "gift-1" }));
    assert_eq!(shared["data"]["sharePoints"]["balance"], json!({ "balance": 150, "sharedOut": 50 }), "{shared}");
    let ann = token(Role::Member, Some("ann"), None);
    let credited = json!([{ "storeId": "cafe", "balance": 50 }]);
    app.eventually(&ann, BALANCE, json!({ "member": "ann" }), |a| a["data"]["balances"] == credited);
    let own = app.graphql(Some(&bob), BALANCE, json!({ "member": "bob" }));
    assert_eq!(own["data"]["balances"], json!([{ "storeId": "cafe", "balance": 150 }]), "{own}");
    let status =
        app.eventually(&bob, "{ share(id: \"gift-1\") { status recipients { memberId status } } }", json!({}), |a| {
            a["data"]["share"]["status"] == "settled"
        });
    assert_eq!(status["data"]["share"]["recipients"], json!([{ "memberId": "ann", "status": "received" }]));
    let shared_out = next_json(&mut modern).await;
    assert_eq!(shared_out["payload"]["data"]["walletUpdates"]["kind"], "share", "{shared_out}");

    // A post shows in the feed with its author and store, and the embedded
    // social worker (no Redis, no token key: a network that logs) publishes
    // it; deleted, it is gone.
    let post = app.graphql(
        Some(&bob),
        "mutation { createPost(author: \"bob\", store: \"cafe\", body: \"Great coffee\", providers: [FACEBOOK], id: \"p-1\") \
         { post { id deleted } } }",
        json!({}),
    );
    assert_eq!(post["data"]["createPost"]["post"], json!({ "id": "p-1", "deleted": false }), "{post}");
    // A post id that is taken is refused and changes nothing. Sent to another
    // instance, which has not cached the post: its command takes the post's
    // stream to be empty and learns otherwise on append.
    let beside = App::spawn_beside(app, &[]);
    let again = beside.graphql(
        Some(&bob),
        "mutation { createPost(author: \"bob\", store: \"cafe\", body: \"Again\", id: \"p-1\") { position } }",
        json!({}),
    );
    assert_eq!(code(&again), "BAD_USER_INPUT", "{again}");
    assert!(again["errors"][0]["message"].as_str().is_some_and(|m| m.contains("p-1")), "{again}");
    let stored = app.graphql(Some(&bob), "{ post(id: \"p-1\") { body } }", json!({}));
    assert_eq!(stored["data"]["post"]["body"], "Great coffee", "{stored}");
    let feed =
        "{ feed(first: 10) { edges { node { id body author { handle } store { id } social { provider status } } } } }";
    let shown = app.eventually(&ann, feed, json!({}), |a| {
        a["data"]["feed"]["edges"][0]["node"]["social"][0]["status"] == "published"
    });
    assert_eq!(
        shown["data"]["feed"]["edges"],
        json!([{ "node": { "id": "p-1", "body": "Great coffee", "author": { "handle": "bob_h" }, "store": { "id": "cafe" },
            "social": [{ "provider": "facebook", "status": "published" }] } }]),
        "{shown}"
    );
    let deleted = app.graphql(Some(&bob), "mutation { deletePost(id: \"p-1\") { post { deleted } } }", json!({}));
    assert_eq!(deleted["data"]["deletePost"]["post"]["deleted"], true, "{deleted}");
    assert_eq!(app.graphql(Some(&ann), feed, json!({}))["data"]["feed"]["edges"], json!([]));
}

/// Who calls in the authorization matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Expired,
    ForeignSignature,
    /// Member ann: the subject of every operation.
    Ann,
    /// Member bob: another member.
    Bob,
    /// Staff of the cafe, where the operations happen.
    CafeStaff,
    /// Staff of another store.
    BakeryStaff,
    Admin,
    Auditor,
}

const CALLERS: [Caller; 9] = [
    Caller::Anonymous,
    Caller::Expired,
    Caller::ForeignSignature,
    Caller::Ann,
    Caller::Bob,
    Caller::CafeStaff,
    Caller::BakeryStaff,
    Caller::Admin,
    Caller::Auditor,
];

impl Caller {
    fn bearer(self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::Expired => Some(expired_token()),
            Caller::ForeignSignature => Some(foreign_token()),
            Caller::Ann => Some(token(Role::Member, Some("ann"), None)),
            Caller::Bob => Some(token(Role::Member, Some("bob"), None)),
            Caller::CafeStaff => Some(token(Role::Staff, None, Some("cafe"))),
            Caller::BakeryStaff => Some(token(Role::Staff, None, Some("bakery"))),
            Caller::Admin => Some(token(Role::Admin, None, None)),
            Caller::Auditor => Some(token(Role::Auditor, None, None)),
        }
    }

    fn signed_in(self) -> bool {
        !matches!(self, Caller::Anonymous | Caller::Expired | Caller::ForeignSignature)
    }
}

/// One operation of the matrix: its document, its variables for the n-th
/// call, and who may run it.
struct Operation {
    document: &'static str,
    variables: fn(usize) -> Value,
    allowed: fn(Caller) -> bool,
    writes: bool,
}

fn operations() -> Vec<Operation> {
    use Caller::*;
    let none = |_| json!({});
    vec![
        Operation {
            document: "mutation($r: String!) { earnPoints(member: \"ann\", store: \"cafe\", purchaseRef: $r, amount: 100) { position } }",
            variables: |n| json!({ "r": format!("m-{n}") }),
            allowed: |c| matches!(c, CafeStaff | Admin),
            writes: true,
        },
        Operation {
            document: "mutation { redeemPoints(member: \"ann\", store: \"cafe\", points: 1, reward: \"cookie\") { position } }",
            variables: none,
            allowed: |c| matches!(c, Ann | CafeStaff | Admin),
            writes: true,
        },
        Operation {
            document: "mutation { sharePoints(from: \"ann\", store: \"cafe\", recipients: [{ member: \"bob\", points: 1 }]) { position } }",
            variables: none,
            allowed: |c| matches!(c, Ann | Admin),
            writes: true,
        },
        Operation {
            document: "mutation { adjustPoints(member: \"ann\", store: \"cafe\", delta: 1, reason: \"goodwill\") { position } }",
            variables: none,
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { expirePoints(member: \"ann\", store: \"cafe\", points: 1) { position } }",
            variables: none,
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation($id: String!) { registerMember(id: $id, handle: $id, displayName: \"New\") { position } }",
            variables: |n| json!({ "id": format!("new{n}") }),
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { deactivateMember(member: \"dan\") { position } }",
            variables: none,
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { linkSocialAccount(member: \"ann\", provider: FACEBOOK, externalId: \"fb-ann\") { position } }",
            variables: none,
            allowed: |c| matches!(c, Ann | Admin),
            writes: true,
        },
        Operation {
            document: "mutation { unlinkSocialAccount(member: \"ann\", provider: TWITTER) { position } }",
            variables: none,
            allowed: |c| matches!(c, Ann | Admin),
            writes: true,
        },
        Operation {
            document: "mutation($id: String!) { registerStore(id: $id, name: \"Kiosk\", owner: \"ann\", \
                       policy: { rateBasisPoints: 100, minPurchase: 1 }) { position } }",
            variables: |n| json!({ "id": format!("shop{n}") }),
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { updateEarnPolicy(store: \"kiosk\", policy: { rateBasisPoints: 200, cap: 50, minPurchase: 1 }) { position } }",
            variables: none,
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { closeStore(store: \"kiosk\") { position } }",
            variables: none,
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { reopenStore(store: \"kiosk\") { position } }",
            variables: none,
            allowed: |c| c == Admin,
            writes: true,
        },
        Operation {
            document: "mutation { createPost(author: \"ann\", store: \"cafe\", body: \"Lovely\") { position } }",
            variables: none,
            allowed: |c| matches!(c, Ann | Admin),
            writes: true,
        },
        Operation {
            document: "mutation { deletePost(id: \"ann-post\") { position } }",
            variables: none,
            allowed: |c| matches!(c, Ann | Admin),
            writes: true,
        },
        Operation { document: "{ me { role } }", variables: none, allowed: Caller::signed_in, writes: false },
        Operation {
            document: "{ member(id: \"ann\") { id } }",
            variables: none,
            allowed: |c| c.signed_in() && c != Bob,
            writes: false,
        },
        Operation {
            document: "{ balances(member: \"ann\") { balance } }",
            variables: none,
            allowed: |c| c.signed_in() && c != Bob,
            writes: false,
        },
        Operation {
            document: "{ balanceAt(member: \"ann\", store: \"cafe\", at: \"1970-01-01T00:00:00Z\") }",
            variables: none,
            allowed: |c| matches!(c, Ann | CafeStaff | Admin | Auditor),
            writes: false,
        },
        Operation {
            document: "{ ledger(member: \"ann\", first: 5) { edges { node { kind } } } }",
            variables: none,
            allowed: |c| c.signed_in() && c != Bob,
            writes: false,
        },
        Operation {
            document: "{ share(id: \"ann-share\") { status } }",
            variables: none,
            allowed: |c| matches!(c, Ann | Bob | CafeStaff | Admin | Auditor),
            writes: false,
        },
        Operation {
            document: "{ post(id: \"ann-post-2\") { id author { handle } } }",
            variables: none,
            allowed: Caller::signed_in,
            writes: false,
        },
        Operation {
            document: "{ posts(author: \"ann\", first: 5) { edges { node { id } } } }",
            variables: none,
            allowed: Caller::signed_in,
            writes: false,
        },
        Operation {
            document: "{ feed(first: 5) { edges { node { id store { name } } } } }",
            variables: none,
            allowed: Caller::signed_in,
            writes: false,
        },
        Operation {
            document: "{ events(first: 5, aggregateType: \"Wallet\") { edges { node { position eventType } } } }",
            variables: none,
            allowed: |c| matches!(c, Admin | Auditor),
            writes: false,
        },
        Operation {
            document: "{ logHead }",
            variables: none,
            allowed: |c| matches!(c, Admin | Auditor),
            writes: false,
        },
        Operation {
            document: "{ auditReport { clean problems } }",
            variables: none,
            allowed: |c| matches!(c, Admin | Auditor),
            writes: false,
        },
        // Public, but a token that is sent must be valid.
        Operation {
            document: "{ stores { id } }",
            variables: none,
            allowed: |c| !matches!(c, Caller::Expired | Caller::ForeignSignature),
            writes: false,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_allowed_or_refused_by_role_and_refusals_write_nothing() {
    let app = App::spawn(ScratchDatabase::sqlite(), &[]);
    setup(&app, &["ann", "bob", "dan"], &[("cafe", "ann"), ("bakery", "bob"), ("kiosk", "ann")]);
    let admin = token(Role::Admin, None, None);
    let ann = token(Role::Member, Some("ann"), None);
    let prepared = [
        app.graphql(
            Some(&admin),
            EARN,
            json!({ "member": "ann", "store": "cafe", "ref": "seed", "amount": 1_000_000 }),
        ),
        app.graphql(Some(&ann), SHARE, json!({ "from": "ann", "to": "bob", "points": 5, "id": "ann-share" })),
        app.graphql(
            Some(&ann),
            "mutation { linkSocialAccount(member: \"ann\", provider: TWITTER, externalId: \"@ann\") { position } }",
            json!({}),
        ),
        app.graphql(
            Some(&ann),
            "mutation { createPost(author: \"ann\", store: \"cafe\", body: \"Hi\", id: \"ann-post\") { position } }",
            json!({}),
        ),
        app.graphql(
            Some(&ann),
            "mutation { createPost(author: \"ann\", store: \"cafe\", body: \"Hi\", id: \"ann-post-2\") { position } }",
            json!({}),
        ),
    ];
    for answer in &prepared {
        assert!(data(answer), "setup: {answer}");
    }

    let mut calls = 0;
    for operation in operations() {
        let mut succeeded = false;
        for caller in CALLERS {
            calls += 1;
            let before = if operation.writes { app.head() } else { 0 };
            let bearer = caller.bearer();
            let answer = app.graphql(bearer.as_deref(), operation.document, (operation.variables)(calls));
            let got = code(&answer);
            if (operation.allowed)(caller) {
                assert!(
                    !matches!(got, "FORBIDDEN" | "UNAUTHENTICATED"),
                    "{caller:?} should be allowed {}: {answer}",
                    operation.document
                );
                succeeded |= data(&answer);
            } else {
                let expected = if caller.signed_in() { "FORBIDDEN" } else { "UNAUTHENTICATED" };
                assert_eq!(got, expected, "{caller:?} running {}: {answer}", operation.document);
                assert!(
                    answer["data"].is_null()
                        || answer["data"].as_object().is_some_and(|d| d.values().all(Value::is_null))
                );
                if operation.writes {
                    // The share distribution may still be crediting an earlier allowed
                    // share; anything the refused call wrote would carry its token's subject.
                    let written = app.graphql(
                        Some(&admin),
                        "query($after: String) { events(first: 100, after: $after) { edges { node { eventType metadata } } } }",
                        json!({ "after": before.to_string() }),
                    );
                    let edges = written["data"]["events"]["edges"].as_array().unwrap_or_else(|| panic!("{written}"));
                    for edge in edges {
                        assert_eq!(
                            edge["node"]["metadata"]["actor"], "share-distribution",
                            "{caller:?} was refused {} but this was written: {edge}",
                            operation.document
                        );
                    }
                }
            }
        }
        assert!(succeeded, "no allowed caller could run {}", operation.document);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_coded_error_or_4xx_writes_nothing_and_the_server_stays_healthy() {
    let app = App::spawn(
        ScratchDatabase::sqlite(),
        &["--max-depth", "5", "--max-complexity", "60", "--max-page", "10", "--max-body-bytes", "4096"],
    );
    setup(&app, &["ann"], &[("cafe", "ann")]);
    let admin = token(Role::Admin, None, None);
    let head = app.head();
    let earn = |amount: Value| json!({ "query": EARN, "variables": { "member": "ann", "store": "cafe", "ref": "r-1", "amount": amount } });
    let bodies: Vec<(&str, String)> = vec![
        ("malformed JSON", "{\"query\": ".to_string()),
        ("not GraphQL", json!({ "query": "mutation { earnPoints(" }).to_string()),
        ("unknown field", json!({ "query": "{ stores { id flavour } }" }).to_string()),
        ("unknown argument", json!({ "query": "mutation { closeStore(store: \"cafe\", force: true) { position } }" }).to_string()),
        ("wrong type", earn(json!("many")).to_string()),
        ("negative amount", earn(json!(-100)).to_string()),
        ("zero amount", earn(json!(0)).to_string()),
        ("huge amount", earn(json!(9_000_000_000_000_000_000u64)).to_string()),
        ("amount over the domain's limit", earn(json!(1_000_000_000_000_000i64)).to_string()),
        ("unknown store", json!({ "query": EARN, "variables": { "member": "ann", "store": "nowhere", "ref": "r", "amount": 10 } }).to_string()),
        ("bad id", json!({ "query": EARN, "variables": { "member": "a n n", "store": "cafe", "ref": "r", "amount": 10 } }).to_string()),
        ("too deep", json!({ "query": "{ feed { edges { node { author { socialAccounts { provider } } } } } }" }).to_string()),
        ("too complex", json!({ "query": "{ feed(first: 10) { edges { node { id body author { id handle } store { id name } } } } }" }).to_string()),
        ("page over the cap", json!({ "query": "{ ledger(member: \"ann\", first: 11) { edges { cursor } } }" }).to_string()),
        ("bad cursor", json!({ "query": "{ feed(first: 5, after: \"yesterday\") { edges { cursor } } }" }).to_string()),
        ("oversized", json!({ "query": format!("{{ stores {{ id }} }} #{}", "x".repeat(5_000)) }).to_string()),
    ];
    for (what, body) in bodies {
        let (status, text) = app.post_json(Some(&admin), &body);
        if status == 200 {
            let answer: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
            let got = code(&answer);
            assert!(matches!(got, "BAD_USER_INPUT" | "NOT_FOUND"), "{what}: {answer}");
            assert!(!text.contains("sqlx") && !text.contains("SQL"), "{what} leaks internals: {text}");
        } else {
            assert!((400..500).contains(&status), "{what}: HTTP {status}: {text}");
        }
        let (health, _) = app.get("/healthz");
        assert_eq!(health, 200, "healthy after {what}");
    }
    assert_eq!(app.head(), head, "bad input wrote nothing");
    let (status, _) = app.get("/readyz");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_subscription_catches_up_then_follows_with_no_gap_or_repeat() {
    let Some(db) = mariadb().await else { return };
    let app = App::spawn(db, &[]);
    setup(&app, &["ann"], &[("cafe", "ann")]);
    let staff = token(Role::Staff, None, Some("cafe"));
    let earn = |n: usize| json!({ "member": "ann", "store": "cafe", "ref": format!("r-{n}"), "amount": 100 });
    for n in 0..20 {
        assert!(data(&app.graphql(Some(&staff), EARN, earn(n))));
    }
    // Writes keep landing on another thread while the auditor catches up.
    let client = app.client.clone();
    let writer = std::thread::spawn(move || {
        for n in 20..60 {
            let answer = client.graphql(Some(&staff), EARN, earn(n));
            assert!(data(&answer), "{answer}");
        }
    });
    let auditor = token(Role::Auditor, None, None);
    let mut socket: Socket = app.socket("graphql-transport-ws", &auditor).await;
    subscribe(&mut socket, "graphql-transport-ws", "log", "subscription { eventLog(after: 0) { position eventType } }")
        .await;
    let mut seen = Vec::new();
    writer.join().expect("the writer finished");
    let head = app.head();
    while seen.last().copied().unwrap_or(0) < head {
        let message = next_json(&mut socket).await;
        let position =
            message["payload"]["data"]["eventLog"]["position"].as_i64().unwrap_or_else(|| panic!("{message}"));
        seen.push(position);
    }
    assert_eq!(seen, (1..=head).collect::<Vec<_>>(), "every event once, in order");
    assert!(head >= 63, "3 registrations and 60 earns: {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_the_configured_subscriptions() {
    let app = App::spawn(ScratchDatabase::sqlite(), &["--max-subscriptions", "2"]);
    setup(&app, &["ann"], &[("cafe", "ann")]);
    let admin = token(Role::Admin, None, None);
    let mut socket = app.socket("graphql-transport-ws", &admin).await;
    let query = "subscription { walletUpdates(member: \"ann\") { position } }";
    for id in ["1", "2", "3"] {
        subscribe(&mut socket, "graphql-transport-ws", id, query).await;
    }
    // The three start concurrently: whichever comes third is refused.
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    let refused_id = refused["id"].as_str().expect("an id").to_string();
    assert_eq!(next_json(&mut socket).await, json!({ "type": "complete", "id": refused_id }));
    let mut live: Vec<&str> = ["1", "2", "3"].into_iter().filter(|id| *id != refused_id).collect();
    // Ending one frees its slot.
    use futures_util::SinkExt;
    let ended = live.remove(0);
    let complete = json!({ "type": "complete", "id": ended }).to_string();
    socket.send(tokio_tungstenite::tungstenite::Message::text(complete)).await.expect("sends");
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscribe(&mut socket, "graphql-transport-ws", "4", query).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let earned =
        app.graphql(Some(&admin), EARN, json!({ "member": "ann", "store": "cafe", "ref": "r", "amount": 100 }));
    assert!(data(&earned), "{earned}");
    let mut ids = vec![];
    while ids.len() < 2 {
        let update = next_json(&mut socket).await;
        if update == json!({ "type": "complete", "id": ended }) {
            continue; // The server confirms the end of the completed subscription.
        }
        assert_eq!(update["type"], "next", "{update}");
        assert!(update["payload"]["errors"].is_null(), "{update}");
        ids.push(update["id"].as_str().expect("an id").to_string());
    }
    ids.sort();
    assert_eq!(ids, [live[0], "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_access_token_is_sealed_and_never_comes_back() {
    const KEY: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";
    const SECRET_TOKEN: &str = "EAAB-very-secret-access-token";
    let app = App::spawn_verbose(ScratchDatabase::sqlite(), &["--token-key", KEY]);
    setup(&app, &["ann"], &[("cafe", "ann")]);
    let ann = token(Role::Member, Some("ann"), None);
    let link = "mutation($t: String) { linkSocialAccount(member: \"ann\", provider: FACEBOOK, externalId: \"ann-page\", \
                accessToken: $t) { member { socialAccounts { provider externalId } } } }";
    let linked = app.graphql(Some(&ann), link, json!({ "t": SECRET_TOKEN }));
    assert_eq!(
        linked["data"]["linkSocialAccount"]["member"]["socialAccounts"],
        json!([{ "provider": "facebook", "externalId": "ann-page" }]),
        "{linked}"
    );
    let admin = token(Role::Admin, None, None);
    let everything = [
        linked.to_string(),
        app.graphql(Some(&admin), "{ events(first: 100) { edges { node { payload metadata } } } }", json!({}))
            .to_string(),
        app.graphql(
            Some(&admin),
            "{ member(id: \"ann\") { socialAccounts { provider externalId linkedAt } } }",
            json!({}),
        )
        .to_string(),
        app.get("/metrics").1,
        app.logs(),
    ];
    assert!(app.logs().contains("DEBUG"), "the server logged at debug level");
    for text in everything {
        assert!(!text.contains(SECRET_TOKEN), "the token leaked: {text}");
    }
    // The sealed row exists and holds no clear text.
    let db = sea_orm::Database::connect(&app.url).await.expect("opens");
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT ciphertext FROM social_tokens WHERE member_id = 'ann'",
        ))
        .await
        .expect("reads")
        .expect("a sealed token row");
    let sealed: String = row.try_get("", "ciphertext").expect("a column");
    assert!(!sealed.contains(SECRET_TOKEN) && !sealed.is_empty());

    // A server without a token key refuses to take one.
    let keyless = App::spawn(ScratchDatabase::sqlite(), &[]);
    setup(&keyless, &["ann"], &[("cafe", "ann")]);
    let refused = keyless.graphql(Some(&ann), link, json!({ "t": SECRET_TOKEN }));
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_instance_sees_a_mutation_made_through_another() {
    let Some(db) = mariadb().await else { return };
    let a = App::spawn(db, &[]);
    let b = App::spawn_beside(&a, &[]);
    setup(&a, &["ann"], &[("cafe", "ann")]);
    let ann = token(Role::Member, Some("ann"), None);
    let mut socket = b.socket("graphql-transport-ws", &ann).await;
    subscribe(
        &mut socket,
        "graphql-transport-ws",
        "w",
        "subscription { walletUpdates(member: \"ann\") { position balanceAfter } }",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let staff = token(Role::Staff, None, Some("cafe"));
    let earned =
        a.graphql(Some(&staff), EARN, json!({ "member": "ann", "store": "cafe", "ref": "r-1", "amount": 1_000 }));
    assert!(data(&earned), "{earned}");
    let update = next_json(&mut socket).await;
    assert_eq!(update["payload"]["data"]["walletUpdates"]["balanceAfter"], 100, "{update}");
    assert_eq!(update["payload"]["data"]["walletUpdates"]["position"], earned["data"]["earnPoints"]["position"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_an_instance_hears_of_another_instances_commits_through_the_stream() {
    let Some(db) = mariadb().await else { return };
    let redis = services::RedisServer::start();
    // Polling the database once a minute: only the stream can wake B in time.
    let args = ["--redis-url", &redis.url(), "--follow-interval-ms", "60000"];
    let a = App::spawn(db, &args);
    let b = App::spawn_beside(&a, &args);
    setup(&a, &["ann"], &[("cafe", "ann")]);
    let ann = token(Role::Member, Some("ann"), None);
    let mut socket = b.socket("graphql-transport-ws", &ann).await;
    let query = "subscription { walletUpdates(member: \"ann\") { position balanceAfter } }";
    subscribe(&mut socket, "graphql-transport-ws", "w", query).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let staff = token(Role::Staff, None, Some("cafe"));
    let earned =
        a.graphql(Some(&staff), EARN, json!({ "member": "ann", "store": "cafe", "ref": "r-1", "amount": 1_000 }));
    assert!(data(&earned), "{earned}");
    let update = next_json(&mut socket).await;
    assert_eq!(update["payload"]["data"]["walletUpdates"]["balanceAfter"], 100, "{update}");

    // Readiness covers Redis too.
    let ready = b.get("/readyz");
    assert_eq!(ready, (200, "ready: database ok, filesystem ok, redis ok".to_string()));
    redis.kill();
    let (status, body) = b.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
}
