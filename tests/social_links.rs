//! Linking social accounts as a member's browser does it, against fake
//! networks on loopback (`fakes/networks.rs`): `startSocialLink`, then a real
//! HTTP client following the redirects through the network's authorization
//! page and `GET /oauth/{provider}/callback` to the front end's page. X with
//! PKCE, Mastodon with its per-instance registration, Facebook with the
//! choice of a Page, Bluesky with an app password. Then an X token that
//! expires (refreshed before the next post), one that is revoked (the
//! account needs relinking, the member's subscription says so, the post
//! waits without spending attempts), and the relink that publishes it once.
//! No token appears in an event, the log, `/metrics` or an answer.

mod app;
#[path = "fakes/networks.rs"]
mod networks;

use std::time::{Duration, Instant};

use api::auth::Role;
use app::{App, next_json, setup, subscribe, token};
use eventstore::scratch::ScratchDatabase;
use networks::{FB_APP, Networks, SECRET_MARK, X_CLIENT};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

const START: &str = "mutation($p: SocialProvider!, $i: String) { startSocialLink(provider: $p, instance: $i) { authorizationUrl expiresAt } }";
const ACCOUNTS: &str =
    "query { member(id: \"ann\") { socialAccounts { provider externalId instance status reason } } }";
const POST: &str = "mutation($body: String!, $p: [SocialProvider!]!) { createPost(author: \"ann\", store: \"cafe\", body: $body, providers: $p) { post { id } } }";
const SOCIAL: &str = "query($id: String!) { post(id: $id) { social { provider status attempts reason } } }";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("an address").port()
}

/// The authorization URL for `provider` (and `instance`), as the member.
fn start(app: &App, member: &str, provider: &str, instance: Option<&str>) -> String {
    let answer = app.graphql(Some(member), START, json!({ "p": provider, "i": instance }));
    answer["data"]["startSocialLink"]["authorizationUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("an authorization URL: {answer}"))
        .to_string()
}

/// What a browser does with `url`: follows every redirect; the page it ends on.
async fn follow(url: &str) -> (u16, reqwest::Url, String) {
    let response = reqwest::get(url).await.expect("the browser gets there");
    let (status, at) = (response.status().as_u16(), response.url().clone());
    (status, at, response.text().await.unwrap_or_default())
}

/// The callback URL the network sends the browser to (not followed).
async fn callback_of(url: &str) -> String {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client");
    let response = client.get(url).send().await.expect("the network answers");
    assert_eq!(response.status().as_u16(), 302, "the network sends the browser back");
    response.headers()["location"].to_str().expect("a location").to_string()
}

fn account<'a>(answer: &'a Value, provider: &str) -> Option<&'a Value> {
    answer["data"]["member"]["socialAccounts"].as_array()?.iter().find(|a| a["provider"] == provider)
}

fn status_at<'a>(answer: &'a Value, provider: &str) -> Option<&'a Value> {
    answer["data"]["post"]["social"].as_array()?.iter().find(|s| s["provider"] == provider)
}

fn post(app: &App, ann: &str, body: &str, providers: &[&str]) -> String {
    let answer = app.graphql(Some(ann), POST, json!({ "body": body, "p": providers }));
    answer["data"]["createPost"]["post"]["id"].as_str().unwrap_or_else(|| panic!("a post: {answer}")).to_string()
}

/// Asks `query` until `done` accepts the answer (20 s at most), letting the
/// fake networks' tasks run meanwhile.
async fn settled(app: &App, bearer: &str, query: &str, variables: Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = app.graphql(Some(bearer), query, variables.clone());
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "still not there after 20 s: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tweets_of(nets: &Networks, text: &str) -> usize {
    nets.with(|s| s.tweets.iter().filter(|(_, t)| t.starts_with(text)).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_link_by_oauth_refresh_and_relink_without_a_token_in_sight() {
    let (nets, base) = networks::start().await;
    // X's tokens expire within the refresh margin: the first post refreshes.
    nets.with(|s| s.x_expires_in = 60);
    let db = ScratchDatabase::sqlite();
    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("http://{listen}");
    let urls = [
        format!("{base}/x/authorize"),
        format!("{base}/x/token"),
        format!("{base}/fb/dialog"),
        format!("{base}/fb"),
        format!("{base}/app/linked"),
    ];
    let args = [
        "--api-url",
        &api,
        "--token-key",
        KEY,
        "--twitter-client-id",
        X_CLIENT.0,
        "--twitter-client-secret",
        X_CLIENT.1,
        "--twitter-authorize-url",
        &urls[0],
        "--twitter-token-url",
        &urls[1],
        "--twitter-url",
        &base,
        "--facebook-app-id",
        FB_APP.0,
        "--facebook-app-secret",
        FB_APP.1,
        "--facebook-dialog-url",
        &urls[2],
        "--facebook-url",
        &urls[3],
        "--oauth-return-url",
        &urls[4],
        "--insecure-instances",
    ];
    let app = App::serve_verbose_at(&db.url, &listen, &args, &[]);
    setup(&app, &["ann", "bob"], &[("cafe", "ann")]);
    let ann = token(Role::Member, Some("ann"), None);
    let mut answers = String::new();

    // X: PKCE, through the network's page and the callback to the front end.
    let url = start(&app, &ann, "TWITTER", None);
    assert!(url.contains("code_challenge_method=S256") && url.contains("state="), "{url}");
    let (status, landed, _) = follow(&url).await;
    assert_eq!(status, 200);
    assert_eq!(landed.as_str(), format!("{base}/app/linked?linked=twitter"));
    assert_eq!(nets.with(|s| s.verified), 1, "the code was exchanged with the verifier of its challenge");
    let accounts = app.graphql(Some(&ann), ACCOUNTS, json!({}));
    answers.push_str(&accounts.to_string());
    let x = account(&accounts, "twitter").unwrap_or_else(|| panic!("linked: {accounts}"));
    assert_eq!((x["externalId"].as_str(), x["status"].as_str()), (Some("x-ann-42"), Some("linked")), "{accounts}");

    // Another member cannot start a link for ann, nor can staff.
    let staff = token(Role::Staff, None, Some("cafe"));
    let refused = app.graphql(Some(&staff), START, json!({ "p": "TWITTER" }));
    assert_eq!(app::code(&refused), "FORBIDDEN", "{refused}");

    // A forged state, a used one, an expired one: refused, nothing linked.
    let forged = reqwest::get(format!("{api}/oauth/twitter/callback?state=forged&code=code-1")).await.expect("answers");
    assert_eq!(forged.status().as_u16(), 400);
    let callback = callback_of(&start(&app, &ann, "TWITTER", None)).await;
    assert_eq!(
        follow(&callback).await.1.as_str(),
        format!("{base}/app/linked?linked=twitter"),
        "the same account again"
    );
    let used = reqwest::get(&callback).await.expect("answers");
    assert_eq!(used.status().as_u16(), 400, "a state is good once");
    let callback = callback_of(&start(&app, &ann, "TWITTER", None)).await;
    let connection = sea_orm::Database::connect(&db.url).await.expect("connects");
    connection.execute_unprepared("UPDATE social_link_flows SET expires_at_us = 1").await.expect("ages the flow");
    let expired = reqwest::get(&callback).await.expect("answers");
    assert_eq!(expired.status().as_u16(), 400);
    assert!(expired.text().await.unwrap_or_default().contains("expired"));

    // Ann's account changes reach her subscription.
    let mut socket = app.socket("graphql-transport-ws", &ann).await;
    subscribe(
        &mut socket,
        "graphql-transport-ws",
        "accounts",
        "subscription { socialAccountUpdates(member: \"ann\") { provider status reason } }",
    )
    .await;

    // The token expires within the margin: refreshed before the post.
    let first = post(&app, &ann, "first of the day", &["TWITTER"]);
    settled(&app, &ann, SOCIAL, json!({ "id": first }), |a| {
        status_at(a, "twitter").is_some_and(|s| s["status"] == "published")
    })
    .await;
    assert_eq!(nets.with(|s| s.refreshes.len()), 1, "refreshed once, before posting");
    assert_eq!(tweets_of(&nets, "first of the day"), 1);

    // Revoked: the refresh is refused, the account needs relinking, the post waits.
    nets.revoke("x");
    nets.with(|s| s.x_expires_in = 7_200);
    let second = post(&app, &ann, "second of the day", &["TWITTER"]);
    let waiting = settled(&app, &ann, SOCIAL, json!({ "id": second }), |a| {
        status_at(a, "twitter").is_some_and(|s| s["status"] == "needs_relink")
    })
    .await;
    assert_eq!(status_at(&waiting, "twitter").expect("a status")["attempts"], 0, "no attempt spent: {waiting}");
    let update = next_json(&mut socket).await;
    assert_eq!(update["payload"]["data"]["socialAccountUpdates"]["status"], "needs_relink", "{update}");
    answers.push_str(&update.to_string());
    let accounts = app.graphql(Some(&ann), ACCOUNTS, json!({}));
    assert_eq!(account(&accounts, "twitter").expect("still linked")["status"], "needs_relink", "{accounts}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tweets_of(&nets, "second of the day"), 0, "nothing posted with a revoked token");

    // Relinked: the waiting post goes out, once.
    let (_, landed, _) = follow(&start(&app, &ann, "TWITTER", None)).await;
    assert_eq!(landed.as_str(), format!("{base}/app/linked?linked=twitter"));
    let update = next_json(&mut socket).await;
    assert_eq!(update["payload"]["data"]["socialAccountUpdates"]["status"], "linked", "{update}");
    settled(&app, &ann, SOCIAL, json!({ "id": second }), |a| {
        status_at(a, "twitter").is_some_and(|s| s["status"] == "published")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tweets_of(&nets, "second of the day"), 1, "published once after the relink");
    assert_eq!(tweets_of(&nets, "first of the day"), 1, "and the first not again");

    // Mastodon on an instance of the member's choice: registered there once, PKCE.
    let url = start(&app, &ann, "MASTODON", Some(&base));
    let (_, landed, _) = follow(&url).await;
    assert_eq!(landed.as_str(), format!("{base}/app/linked?linked=mastodon"));
    assert_eq!(
        nets.with(|s| s.apps.clone()),
        vec![("pointstream".to_string(), format!("{api}/oauth/mastodon/callback"))]
    );
    let refused = app.graphql(Some(&ann), START, json!({ "p": "MASTODON" }));
    assert_eq!(app::code(&refused), "BAD_USER_INPUT", "an instance is needed: {refused}");

    // Facebook: two Pages, the member picks one; posts go to it with its token.
    let (_, landed, _) = follow(&start(&app, &ann, "FACEBOOK", None)).await;
    let choice = landed
        .query_pairs()
        .find(|(k, _)| k == "choose")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("a choice: {landed}"));
    let pages = app.graphql(
        Some(&ann),
        "query($c: String!) { facebookPagesToLink(choice: $c) { id name } }",
        json!({ "c": choice }),
    );
    answers.push_str(&pages.to_string());
    assert_eq!(pages["data"]["facebookPagesToLink"].as_array().map(Vec::len), Some(2), "{pages}");
    let bob = token(Role::Member, Some("bob"), None);
    let theirs = app.graphql(
        Some(&bob),
        "query($c: String!) { facebookPagesToLink(choice: $c) { id } }",
        json!({ "c": choice }),
    );
    assert_eq!(app::code(&theirs), "NOT_FOUND", "another member's choice: {theirs}");
    let chosen = app.graphql(
        Some(&ann),
        "mutation($c: String!) { chooseFacebookPage(choice: $c, page: \"page-bakery\") { member { id } } }",
        json!({ "c": choice }),
    );
    answers.push_str(&chosen.to_string());
    assert!(chosen["errors"].is_null(), "{chosen}");
    let paged = post(&app, &ann, "fresh bread", &["FACEBOOK"]);
    settled(&app, &ann, SOCIAL, json!({ "id": paged }), |a| {
        status_at(a, "facebook").is_some_and(|s| s["status"] == "published")
    })
    .await;
    assert_eq!(nets.with(|s| s.page_posts.clone()).first().map(|(page, _)| page.as_str()), Some("page-bakery"));

    // Bluesky: an app password, exchanged for a session; a wrong one refused.
    let link_bluesky = "mutation($pw: String!, $s: String!) { linkBlueskyAccount(identifier: \"ann.bsky.social\", appPassword: $pw, service: $s) { member { id } } }";
    let wrong = app.graphql(Some(&ann), link_bluesky, json!({ "pw": "nope", "s": base }));
    assert_eq!(app::code(&wrong), "LINK_REFUSED", "{wrong}");
    let linked = app.graphql(Some(&ann), link_bluesky, json!({ "pw": "app-password-1", "s": base }));
    assert!(linked["errors"].is_null(), "{linked}");
    let accounts = app.graphql(Some(&ann), ACCOUNTS, json!({}));
    answers.push_str(&accounts.to_string());
    assert_eq!(account(&accounts, "bluesky").expect("linked")["externalId"], "did:plc:ann42", "{accounts}");
    assert_eq!(account(&accounts, "mastodon").expect("linked")["instance"], base.as_str(), "{accounts}");

    // No token anywhere it could leak: events, the log, metrics, answers.
    let events = connection
        .query_all_raw(sea_orm::Statement::from_string(
            connection.get_database_backend(),
            "SELECT payload, metadata FROM events",
        ))
        .await
        .expect("reads the log");
    assert!(events.len() > 10);
    for row in &events {
        let (payload, metadata): (String, String) =
            (row.try_get("", "payload").expect("payload"), row.try_get("", "metadata").expect("metadata"));
        assert!(!payload.contains(SECRET_MARK) && !metadata.contains(SECRET_MARK), "a token in an event: {payload}");
    }
    let linked_events =
        events.iter().filter(|row| row.try_get::<String>("", "payload").is_ok_and(|p| p.contains("\"link\""))).count();
    assert!(linked_events >= 4, "each link recorded as an event");
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = app.logs();
    assert!(logs.contains("access token refreshed"), "the log is at debug level and says what happened");
    assert!(!logs.contains(SECRET_MARK), "a token in the log");
    assert!(!app.get("/metrics").1.contains(SECRET_MARK), "a token in the metrics");
    assert!(!answers.contains(SECRET_MARK), "a token in an answer");
    let sealed = connection
        .query_all_raw(sea_orm::Statement::from_string(
            connection.get_database_backend(),
            "SELECT ciphertext FROM social_tokens",
        ))
        .await
        .expect("reads the tokens");
    assert_eq!(sealed.len(), 4, "one sealed row per network");
    for row in sealed {
        let ciphertext: String = row.try_get("", "ciphertext").expect("ciphertext");
        assert!(!ciphertext.contains(&hex::encode(SECRET_MARK)), "sealed, not in clear");
    }
}
