//! Fake social networks on loopback, with the semantics pointstream relies
//! on, as each network documents them, and a record of every call:
//!
//! - X: OAuth 2.0 authorization with PKCE S256 (the verifier is checked
//!   against the challenge), confidential client (HTTP Basic), access tokens
//!   that expire (`expires_in`), rotating refresh tokens (a used or revoked
//!   one is `invalid_grant`), `/2/users/me`, `/2/tweets` (401 for a token
//!   that is not current).
//! - Facebook: Login dialog, code and long-lived token exchange, `/me/accounts`
//!   with two Pages and their tokens, `/{page}/feed`.
//! - Mastodon: app registration, OAuth with PKCE, `verify_credentials`,
//!   `/api/v2/media`, `/api/v1/statuses` honouring `Idempotency-Key` (a
//!   repeat answers the first status and makes none).
//! - Bluesky: `createSession` (app password), `refreshSession`, `uploadBlob`,
//!   `createRecord` refusing a record key already used, `getRecord`.
//! - A front end page, `/app/linked`, where the browser lands after linking.
//!
//! A network can be told to hang after it has taken a post (`hang`): the
//! post exists, the answer never comes, as when the caller dies mid-call.

#![allow(dead_code)] // Each test file uses part of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use poem::http::{HeaderMap, StatusCode, Uri};
use poem::web::{Data, Json, Path, Query};
use poem::{EndpointExt, IntoResponse, Response, Route, get, handler, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// X's client id and secret as registered at the fake.
pub const X_CLIENT: (&str, &str) = ("x-client", "x-client-secret");
/// Facebook's app id and secret.
pub const FB_APP: (&str, &str) = ("fb-app", "fb-app-secret");
/// Every token the fakes issue carries this, so a leak is easy to find.
pub const SECRET_MARK: &str = "SECRET";

/// An authorization the member granted, waiting for its code's exchange.
struct Grant {
    redirect_uri: String,
    challenge: Option<String>,
}

/// What the fakes know and saw.
#[derive(Default)]
pub struct State {
    next: u64,
    grants: BTreeMap<String, Grant>,
    /// Current access tokens, by network.
    access: BTreeMap<String, &'static str>,
    /// Refresh tokens that can still be used.
    refresh: BTreeSet<String>,
    /// X: `expires_in` of the access tokens issued.
    pub x_expires_in: i64,
    /// Refreshes asked for (granted or not).
    pub refreshes: Vec<String>,
    /// Codes exchanged with a verifier that matched their challenge.
    pub verified: u32,
    /// Tweets: (access token, text).
    pub tweets: Vec<(String, String)>,
    /// Facebook Page posts: (page, message).
    pub page_posts: Vec<(String, String)>,
    /// Mastodon apps registered: (name, redirect URI).
    pub apps: Vec<(String, String)>,
    /// Mastodon statuses made: (idempotency key, text).
    pub statuses: Vec<(String, String)>,
    idempotent: BTreeMap<String, Value>,
    /// Calls to `POST /api/v1/statuses`, repeats included.
    pub status_calls: u32,
    /// Bluesky records: (record key → text).
    pub records: BTreeMap<String, String>,
    /// Calls to `createRecord`, refused repeats included.
    pub record_calls: u32,
    /// Where the browser landed in the front end (its query strings).
    pub landed: Vec<String>,
    /// Networks that hang after taking a post.
    hang: BTreeSet<&'static str>,
}

/// The fakes.
#[derive(Default)]
pub struct Networks(pub Mutex<State>);

impl Networks {
    /// Runs `f` on the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes `network` (`mastodon`, `bluesky`) hang after taking a post, or not.
    pub fn hang(&self, network: &'static str, on: bool) {
        self.with(|s| if on { s.hang.insert(network) } else { s.hang.remove(network) });
    }

    /// Expires the access tokens of `network`: they answer 401 (the refresh
    /// tokens stay good).
    pub fn expire_access(&self, network: &str) {
        self.with(|s| s.access.retain(|_, n| *n != network));
    }

    /// Revokes every grant of `network`: its access tokens answer 401 and
    /// its refresh tokens `invalid_grant`.
    pub fn revoke(&self, network: &str) {
        self.expire_access(network);
        self.with(|s| s.refresh.retain(|token| !token.starts_with(&format!("{network}-refresh"))));
    }

    /// A token the fake `network` takes: `kind` is `access` or `refresh`.
    pub fn token(&self, network: &'static str, kind: &str) -> String {
        self.with(|s| {
            s.next += 1;
            let token = format!("{network}-{kind}-{}-{SECRET_MARK}", s.next);
            match kind {
                "access" => {
                    s.access.insert(token.clone(), network);
                }
                _ => {
                    s.refresh.insert(token.clone());
                }
            }
            token
        })
    }

    fn current(&self, headers: &HeaderMap, network: &str) -> Option<String> {
        let bearer = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?.to_string();
        self.with(|s| (s.access.get(&bearer) == Some(&network)).then_some(bearer))
    }

    fn hangs(&self, network: &str) -> bool {
        self.with(|s| s.hang.contains(network))
    }
}

fn unauthorized() -> Response {
    Response::builder().status(StatusCode::UNAUTHORIZED).body(r#"{"error":"invalid_token"}"#)
}

fn bad(error: &str) -> Response {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .content_type("application/json")
        .body(json!({ "error": error }).to_string())
}

fn ok(value: Value) -> Response {
    Response::builder().content_type("application/json").body(value.to_string())
}

/// An authorization page: the member says yes at once, and the browser is
/// sent back with a code (and the state).
fn authorize(nets: &Networks, query: &BTreeMap<String, String>, pkce: bool) -> Response {
    let (Some(redirect), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
        return bad("invalid_request");
    };
    let challenge = query.get("code_challenge").cloned();
    if pkce && (challenge.is_none() || query.get("code_challenge_method").map(String::as_str) != Some("S256")) {
        return bad("PKCE S256 is required");
    }
    let code = nets.with(|s| {
        s.next += 1;
        let code = format!("code-{}", s.next);
        s.grants.insert(code.clone(), Grant { redirect_uri: redirect.clone(), challenge });
        code
    });
    let back = reqwest::Url::parse_with_params(redirect, &[("code", code.as_str()), ("state", state.as_str())]);
    match back {
        Ok(url) => Response::builder().status(StatusCode::FOUND).header("Location", url.as_str()).finish(),
        Err(_) => bad("redirect_uri"),
    }
}

/// Takes a code: its grant, if the redirect URI and PKCE verifier match.
fn redeem(nets: &Networks, form: &BTreeMap<String, String>) -> Result<(), &'static str> {
    let code = form.get("code").cloned().unwrap_or_default();
    let grant = nets.with(|s| s.grants.remove(&code)).ok_or("invalid_grant")?;
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err("invalid_grant: redirect_uri");
    }
    if let Some(challenge) = grant.challenge {
        let verifier = form.get("code_verifier").ok_or("invalid_grant: no verifier")?;
        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
            return Err("invalid_grant: the verifier does not match");
        }
        nets.with(|s| s.verified += 1);
    }
    Ok(())
}

#[handler]
fn x_authorize(nets: Data<&Arc<Networks>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    if query.get("client_id").map(String::as_str) != Some(X_CLIENT.0) {
        return bad("unknown client");
    }
    authorize(&nets, &query, true)
}

#[handler]
fn x_token(nets: Data<&Arc<Networks>>, headers: &HeaderMap, body: String) -> Response {
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", X_CLIENT.0, X_CLIENT.1)));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return unauthorized();
    }
    let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            if let Err(refused) = redeem(&nets, &form) {
                return bad(refused);
            }
        }
        Some("refresh_token") => {
            let refresh = form.get("refresh_token").cloned().unwrap_or_default();
            nets.with(|s| s.refreshes.push(refresh.clone()));
            // Rotating: a refresh token is good once.
            if !nets.with(|s| s.refresh.remove(&refresh)) {
                return bad("invalid_grant");
            }
        }
        _ => return bad("unsupported_grant_type"),
    }
    let expires_in = nets.with(|s| s.x_expires_in);
    ok(json!({
        "token_type": "bearer",
        "access_token": nets.token("x", "access"),
        "refresh_token": nets.token("x", "refresh"),
        "expires_in": expires_in,
        "scope": "tweet.write offline.access",
    }))
}

#[handler]
fn x_me(nets: Data<&Arc<Networks>>, headers: &HeaderMap) -> Response {
    match nets.current(headers, "x") {
        Some(_) => ok(json!({ "data": { "id": "x-ann-42", "username": "ann" } })),
        None => unauthorized(),
    }
}

#[handler]
fn x_tweet(nets: Data<&Arc<Networks>>, headers: &HeaderMap, Json(body): Json<Value>) -> Response {
    let Some(token) = nets.current(headers, "x") else { return unauthorized() };
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let n = nets.with(|s| {
        s.tweets.push((token, text));
        s.tweets.len()
    });
    ok(json!({ "data": { "id": format!("tweet-{n}"), "text": "" } }))
}

#[handler]
fn fb_dialog(nets: Data<&Arc<Networks>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    if query.get("client_id").map(String::as_str) != Some(FB_APP.0) {
        return bad("unknown app");
    }
    authorize(&nets, &query, false)
}

#[handler]
fn fb_token(nets: Data<&Arc<Networks>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    if query.get("client_secret").map(String::as_str) != Some(FB_APP.1) {
        return bad("bad secret");
    }
    if query.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
        return ok(json!({ "access_token": format!("fb-user-long-{SECRET_MARK}"), "expires_in": 5_184_000 }));
    }
    if let Err(refused) = redeem(&nets, &query) {
        return bad(refused);
    }
    ok(json!({ "access_token": format!("fb-user-short-{SECRET_MARK}"), "expires_in": 3_600 }))
}

#[handler]
fn fb_pages(Query(query): Query<BTreeMap<String, String>>) -> Response {
    if query.get("access_token").map(String::as_str) != Some(&format!("fb-user-long-{SECRET_MARK}")) {
        return bad("the long-lived user token is required");
    }
    ok(json!({ "data": [
        { "id": "page-cafe", "name": "Ann's Cafe", "access_token": format!("fb-page-cafe-{SECRET_MARK}") },
        { "id": "page-bakery", "name": "Ann's Bakery", "access_token": format!("fb-page-bakery-{SECRET_MARK}") },
    ] }))
}

#[handler]
fn fb_feed(nets: Data<&Arc<Networks>>, Path(page): Path<String>, body: String) -> Response {
    let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    if form.get("access_token") != Some(&format!("fb-{page}-{SECRET_MARK}")) {
        return Response::builder().status(StatusCode::BAD_REQUEST).body(r#"{"error":{"code":190}}"#);
    }
    let n = nets.with(|s| {
        s.page_posts.push((page.clone(), form.get("message").cloned().unwrap_or_default()));
        s.page_posts.len()
    });
    ok(json!({ "id": format!("{page}_{n}") }))
}

#[handler]
fn mastodon_apps(nets: Data<&Arc<Networks>>, body: String) -> Response {
    let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let (name, redirect) = (form.get("client_name").cloned(), form.get("redirect_uris").cloned());
    let (Some(name), Some(redirect)) = (name, redirect) else { return bad("client_name and redirect_uris") };
    nets.with(|s| s.apps.push((name, redirect.clone())));
    ok(
        json!({ "client_id": "masto-client", "client_secret": format!("masto-client-{SECRET_MARK}"), "redirect_uri": redirect }),
    )
}

#[handler]
fn mastodon_authorize(nets: Data<&Arc<Networks>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    authorize(&nets, &query, true)
}

#[handler]
fn mastodon_token(nets: Data<&Arc<Networks>>, body: String) -> Response {
    let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    if form.get("client_secret") != Some(&format!("masto-client-{SECRET_MARK}")) {
        return unauthorized();
    }
    if let Err(refused) = redeem(&nets, &form) {
        return bad(refused);
    }
    ok(json!({ "access_token": nets.token("mastodon", "access"), "token_type": "Bearer", "scope": "write:statuses" }))
}

#[handler]
fn mastodon_me(nets: Data<&Arc<Networks>>, headers: &HeaderMap) -> Response {
    match nets.current(headers, "mastodon") {
        Some(_) => ok(json!({ "id": "109001", "acct": "ann" })),
        None => unauthorized(),
    }
}

#[handler]
fn mastodon_media(nets: Data<&Arc<Networks>>, headers: &HeaderMap) -> Response {
    match nets.current(headers, "mastodon") {
        Some(_) => ok(json!({ "id": "media-1", "type": "image" })),
        None => unauthorized(),
    }
}

#[handler]
async fn mastodon_status(nets: Data<&Arc<Networks>>, headers: &HeaderMap, Json(body): Json<Value>) -> Response {
    if nets.current(headers, "mastodon").is_none() {
        return unauthorized();
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = body["status"].as_str().unwrap_or_default().to_string();
    let answer = nets.with(|s| {
        s.status_calls += 1;
        if let Some(first) = s.idempotent.get(&key).filter(|_| !key.is_empty()) {
            return first.clone();
        }
        s.statuses.push((key.clone(), text));
        let id = format!("1100{}", s.statuses.len());
        let status = json!({ "id": id, "url": format!("https://mastodon.example/@ann/{id}") });
        if !key.is_empty() {
            s.idempotent.insert(key.clone(), status.clone());
        }
        status
    });
    if nets.hangs("mastodon") {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
    ok(answer)
}

#[handler]
fn bsky_session(nets: Data<&Arc<Networks>>, Json(body): Json<Value>) -> Response {
    if body["password"] != "app-password-1" {
        return Response::builder().status(StatusCode::UNAUTHORIZED).body(r#"{"error":"AuthenticationRequired"}"#);
    }
    ok(json!({
        "did": "did:plc:ann42",
        "handle": body["identifier"],
        "accessJwt": nets.token("bluesky", "access"),
        "refreshJwt": nets.token("bluesky", "refresh"),
    }))
}

#[handler]
fn bsky_refresh(nets: Data<&Arc<Networks>>, headers: &HeaderMap) -> Response {
    let refresh = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if !nets.with(|s| s.refresh.remove(&refresh)) {
        return bad("ExpiredToken");
    }
    ok(json!({
        "did": "did:plc:ann42",
        "handle": "ann.bsky.social",
        "accessJwt": nets.token("bluesky", "access"),
        "refreshJwt": nets.token("bluesky", "refresh"),
    }))
}

#[handler]
fn bsky_blob(nets: Data<&Arc<Networks>>, headers: &HeaderMap) -> Response {
    match nets.current(headers, "bluesky") {
        Some(_) => {
            ok(json!({ "blob": { "$type": "blob", "ref": { "$link": "bafk" }, "mimeType": "image/png", "size": 1 } }))
        }
        None => unauthorized(),
    }
}

#[handler]
async fn bsky_create(nets: Data<&Arc<Networks>>, headers: &HeaderMap, Json(body): Json<Value>) -> Response {
    if nets.current(headers, "bluesky").is_none() {
        return unauthorized();
    }
    let rkey = body["rkey"].as_str().unwrap_or_default().to_string();
    let text = body["record"]["text"].as_str().unwrap_or_default().to_string();
    let taken = nets.with(|s| {
        s.record_calls += 1;
        if s.records.contains_key(&rkey) {
            return true;
        }
        s.records.insert(rkey.clone(), text);
        false
    });
    if taken {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(r#"{"error":"InvalidRequest","message":"Record already exists"}"#);
    }
    if nets.hangs("bluesky") {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
    ok(json!({ "uri": format!("at://did:plc:ann42/app.bsky.feed.post/{rkey}"), "cid": "bafyrei" }))
}

#[handler]
fn bsky_get(nets: Data<&Arc<Networks>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    let rkey = query.get("rkey").cloned().unwrap_or_default();
    match nets.with(|s| s.records.get(&rkey).cloned()) {
        Some(text) => ok(json!({
            "uri": format!("at://did:plc:ann42/app.bsky.feed.post/{rkey}"),
            "cid": "bafyrei",
            "value": { "$type": "app.bsky.feed.post", "text": text },
        })),
        None => bad("RecordNotFound"),
    }
}

#[handler]
fn landed(nets: Data<&Arc<Networks>>, uri: &Uri) -> impl IntoResponse {
    nets.with(|s| s.landed.push(uri.query().unwrap_or_default().to_string()));
    "back in the app"
}

/// Starts the fakes; returns them and their base URL.
pub async fn start() -> (Arc<Networks>, String) {
    let nets = Arc::new(Networks::default());
    nets.with(|s| s.x_expires_in = 7_200);
    let app = Route::new()
        .at("/x/authorize", get(x_authorize))
        .at("/x/token", post(x_token))
        .at("/2/users/me", get(x_me))
        .at("/2/tweets", post(x_tweet))
        .at("/fb/dialog", get(fb_dialog))
        .at("/fb/oauth/access_token", get(fb_token))
        .at("/fb/me/accounts", get(fb_pages))
        .at("/fb/:page/feed", post(fb_feed))
        .at("/api/v1/apps", post(mastodon_apps))
        .at("/oauth/authorize", get(mastodon_authorize))
        .at("/oauth/token", post(mastodon_token))
        .at("/api/v1/accounts/verify_credentials", get(mastodon_me))
        .at("/api/v2/media", post(mastodon_media))
        .at("/api/v1/statuses", post(mastodon_status))
        .at("/xrpc/com.atproto.server.createSession", post(bsky_session))
        .at("/xrpc/com.atproto.server.refreshSession", post(bsky_refresh))
        .at("/xrpc/com.atproto.repo.uploadBlob", post(bsky_blob))
        .at("/xrpc/com.atproto.repo.createRecord", post(bsky_create))
        .at("/xrpc/com.atproto.repo.getRecord", get(bsky_get))
        .at("/app/linked", get(landed))
        .data(nets.clone());
    // Port 0, and the port taken read back: no other process can take it between.
    let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("listens");
    let address = poem::listener::Acceptor::local_addr(&acceptor)
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .expect("an address");
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    (nets, format!("http://{address}"))
}
