//! Tokens from an OpenID Connect provider: a JWKS served on loopback by a
//! stand-in provider that counts its requests, keys of every supported
//! type (the test-only keys under `fixtures/`), rotation and withdrawal,
//! the refetch limit, and every way a token must be refused, through the
//! `Verifier` and through the HTTP API.

extern crate pointstream_api as api;

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod serving;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::auth::{AuthError, ClaimNames, Claims, OidcConfig, Role, TokenConfig, Verifier, now_seconds};
use api::build;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::test::TestClient;
use poem::web::{Data, Json};
use poem::{EndpointExt, IntoResponse, Route, get, handler};
use serde_json::{Value, json};
use support::{open, quiet};

// Test-only keys, generated once with openssl; they sign nothing real.
const RSA_KEY: &str = include_str!("fixtures/test-only-rsa-2048.pem");
const RSA_PUBLIC_KEY: &str = include_str!("fixtures/test-only-rsa-2048.pub.pem");
const RSA_ROTATED_KEY: &str = include_str!("fixtures/test-only-rsa-2048-rotated.pem");
const EC_KEY: &str = include_str!("fixtures/test-only-ec-p256.pem");
const ED_KEY: &str = include_str!("fixtures/test-only-ed25519.pem");
/// The public halves of the RSA (`test-rsa`, with `alg`), EC (`test-ec`)
/// and Ed25519 (`test-ed25519`) keys; the last two without `alg`.
const JWKS: &str = include_str!("fixtures/test-only-jwks.json");
/// The public half of the rotated RSA key (`test-rsa-rotated`).
const JWKS_ROTATED: &str = include_str!("fixtures/test-only-jwks-rotated.json");

const ISSUER: &str = "https://id.pointstream.test/";
const AUDIENCE: &str = "pointstream-api";

/// A stand-in identity provider: serves a JWKS document and counts the requests for it.
struct Provider {
    document: Mutex<Value>,
    requests: AtomicUsize,
    /// Answer 503 instead of the keys.
    failing: AtomicBool,
    /// How long each answer takes, so that fetches can overlap.
    delay: Duration,
}

impl Provider {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn publish(&self, document: Value) {
        *self.document.lock().unwrap_or_else(|p| p.into_inner()) = document;
    }

    /// Waits until the provider has been asked `count` times in all.
    async fn wait_for_requests(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.requests() < count {
            assert!(Instant::now() < deadline, "the keys were fetched {} times, not {count}", self.requests());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[handler]
async fn jwks_document(provider: Data<&Arc<Provider>>) -> poem::Response {
    provider.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(provider.delay).await;
    if provider.failing.load(Ordering::SeqCst) {
        return poem::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let document = provider.document.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(document).into_response()
}

/// A provider serving `document` on a free loopback port; returns it and its JWKS URL.
async fn provider(document: &str, delay: Duration) -> (Arc<Provider>, String) {
    let provider = Arc::new(Provider {
        document: Mutex::new(serde_json::from_str(document).expect("a JWKS")),
        requests: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
        delay,
    });
    let endpoint = Route::new().at("/.well-known/jwks.json", get(jwks_document)).data(provider.clone());
    let (address, server) =
        api::server::bind("127.0.0.1:0".into(), |_| endpoint, std::future::pending()).await.expect("binds");
    tokio::spawn(server);
    (provider, format!("http://{address}/.well-known/jwks.json"))
}

/// Both key sets in one document.
fn both_jwks() -> Value {
    let mut keys: Value = serde_json::from_str(JWKS).expect("a JWKS");
    let rotated: Value = serde_json::from_str(JWKS_ROTATED).expect("a JWKS");
    let list = keys["keys"].as_array_mut().expect("keys");
    list.extend(rotated["keys"].as_array().cloned().unwrap_or_default());
    keys
}

/// The provider's configuration: issuer and audience checked, roles in an
/// array, member and store ids in claims of their own.
fn oidc(url: &str) -> OidcConfig {
    let mut config = OidcConfig::new(url).expect("a JWKS URL");
    config.issuer = Some(ISSUER.into());
    config.audience = Some(AUDIENCE.into());
    config.claims = ClaimNames { role: "roles".into(), member: "member_id".into(), store: "store_id".into() };
    config
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("the test RSA key")
}

fn rsa_rotated() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_ROTATED_KEY.as_bytes()).expect("the rotated test RSA key")
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_KEY.as_bytes()).expect("the test EC key")
}

fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_KEY.as_bytes()).expect("the test Ed25519 key")
}

/// A provider's claims for a staff member of the cafe, issued now for ten
/// minutes, with `changes` laid over them (`null` removes a claim).
fn claims(changes: Value) -> Value {
    let now = now_seconds();
    let mut claims = json!({
        "iss": ISSUER, "aud": [AUDIENCE, "another-api"], "sub": "user-1", "iat": now, "exp": now + 600,
        "roles": ["offline_access", "staff"], "store_id": "cafe",
    });
    let object = claims.as_object_mut().expect("an object");
    for (name, value) in changes.as_object().cloned().unwrap_or_default() {
        if value.is_null() {
            object.remove(&name);
        } else {
            object.insert(name, value);
        }
    }
    claims
}

fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("signs")
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// An unsigned token (`alg: none`) naming the RSA key.
fn unsigned(claims: &Value) -> String {
    let header = json!({ "alg": "none", "typ": "JWT", "kid": "test-rsa" });
    format!("{}.{}.", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()))
}

#[tokio::test]
async fn tokens_signed_by_each_published_key_pass_and_map_to_pointstream_claims() {
    let (provider, url) = provider(JWKS, Duration::ZERO).await;
    let verifier = Verifier::new(TokenConfig::oidc(oidc(&url)));
    let leeway = 30;

    let staff = claims(json!({}));
    let token = sign(Algorithm::RS256, Some("test-rsa"), &rsa(), &staff);
    let expected = Claims {
        sub: "user-1".into(),
        role: Role::Staff,
        member: None,
        store: Some("cafe".into()),
        exp: staff["exp"].as_u64().expect("exp") + leeway,
    };
    assert_eq!(verifier.verify(&token).await, Ok(expected), "RS256, the first pointstream role of the array");

    let member = claims(json!({ "sub": "user-2", "roles": "member", "member_id": "ann", "store_id": null }));
    let token = sign(Algorithm::ES256, Some("test-ec"), &ec(), &member);
    let verified = verifier.from_header(&format!("Bearer {token}")).await.expect("ES256 passes");
    assert_eq!((verified.sub.as_str(), verified.role), ("user-2", Role::Member));
    assert_eq!((verified.member.as_deref(), verified.store.as_deref()), (Some("ann"), None));

    let admin = claims(json!({ "sub": "user-3", "roles": ["admin"], "store_id": null, "aud": AUDIENCE }));
    let token = sign(Algorithm::EdDSA, Some("test-ed25519"), &ed(), &admin);
    let verified = verifier.verify(&token).await.expect("EdDSA passes");
    assert_eq!((verified.sub.as_str(), verified.role, verified.store), ("user-3", Role::Admin, None));

    // One fetch at start served them all; a token seen again is not checked again.
    assert_eq!(verifier.verify(&token).await.map(|c| c.role), Ok(Role::Admin));
    assert_eq!(provider.requests(), 1);
}

#[tokio::test]
async fn a_key_published_after_start_is_fetched_and_a_withdrawn_one_stops_working() {
    let (provider, url) = provider(JWKS, Duration::ZERO).await;
    let mut config = oidc(&url);
    config.min_refresh = Duration::ZERO;
    config.refresh = Duration::from_millis(300);
    let verifier = Verifier::new(TokenConfig::oidc(config));
    provider.wait_for_requests(1).await;
    let old = sign(Algorithm::RS256, Some("test-rsa"), &rsa(), &claims(json!({})));
    assert!(verifier.verify(&old).await.is_ok());

    // The provider rotates: a new key appears, and its first token has it fetched.
    provider.publish(both_jwks());
    let new = sign(Algorithm::RS256, Some("test-rsa-rotated"), &rsa_rotated(), &claims(json!({ "sub": "user-9" })));
    assert_eq!(verifier.verify(&new).await.map(|c| c.sub), Ok("user-9".into()));

    // Then withdraws the old key: once the periodic refresh has seen that,
    // the old key's token is refused although it was accepted before.
    provider.publish(serde_json::from_str(JWKS_ROTATED).expect("a JWKS"));
    let seen = provider.requests();
    provider.wait_for_requests(seen + 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while verifier.verify(&old).await.is_ok() {
        assert!(Instant::now() < deadline, "the withdrawn key's token is still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(verifier.verify(&old).await, Err(AuthError::UnknownKey));
    assert!(verifier.verify(&new).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_fetch_the_keys_at_most_once_per_interval() {
    // Each answer takes a while, so that the fetches a flood asks for would overlap.
    let (provider, url) = provider(JWKS, Duration::from_millis(200)).await;
    let mut config = oidc(&url);
    // Long enough that the first flood below is within it however slow the
    // machine: the waits are lower bounds only.
    config.min_refresh = Duration::from_secs(3);
    let verifier = Arc::new(Verifier::new(TokenConfig::oidc(config)));
    provider.wait_for_requests(1).await;
    let flood = |round: usize| {
        let verifier = verifier.clone();
        async move {
            let tokens: Vec<String> = (0..50)
                .map(|i| sign(Algorithm::RS256, Some(&format!("made-up-{round}-{i}")), &rsa(), &claims(json!({}))))
                .collect();
            let checks = tokens.iter().map(|token| verifier.verify(token));
            for refused in futures_util::future::join_all(checks).await {
                assert_eq!(refused, Err(AuthError::UnknownKey));
            }
        }
    };
    // Within the interval of the fetch at start: none.
    tokio::time::sleep(Duration::from_millis(250)).await;
    flood(0).await;
    assert_eq!(provider.requests(), 1, "no fetch within the interval");

    // Past it: fifty unknown key ids at once are one fetch, and the next fifty none.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    flood(1).await;
    assert_eq!(provider.requests(), 2, "concurrent refreshes are one fetch");
    flood(2).await;
    assert_eq!(provider.requests(), 2);

    // Known keys never wait for any of that.
    let good = sign(Algorithm::ES256, Some("test-ec"), &ec(), &claims(json!({})));
    assert!(verifier.verify(&good).await.is_ok());
    assert_eq!(provider.requests(), 2);
}

#[tokio::test]
async fn tokens_are_refused_until_the_keys_come_and_a_failed_fetch_is_not_fatal() {
    let (provider, url) = provider(JWKS, Duration::ZERO).await;
    provider.failing.store(true, Ordering::SeqCst);
    let mut config = oidc(&url);
    config.min_refresh = Duration::ZERO;
    let verifier = Verifier::new(TokenConfig::oidc(config));
    provider.wait_for_requests(1).await;
    let token = sign(Algorithm::RS256, Some("test-rsa"), &rsa(), &claims(json!({})));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnknownKey), "no keys yet");
    provider.failing.store(false, Ordering::SeqCst);
    assert_eq!(verifier.verify(&token).await.map(|c| c.role), Ok(Role::Staff), "the keys came");
}

/// Runs `query` with `token` against the API; the whole answer.
async fn graphql(client: &TestClient<impl poem::Endpoint>, token: &str, query: &str) -> Value {
    let body = json!({ "query": query }).to_string();
    let response = client
        .post("/graphql")
        .content_type("application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await;
    response.assert_status_is_ok();
    serde_json::from_str(&response.0.into_body().into_string().await.expect("a body")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_provider_tokens_are_unauthenticated_through_the_api() {
    let (_provider, url) = provider(JWKS, Duration::ZERO).await;
    let db = eventstore::scratch::ScratchDatabase::sqlite();
    let store = open(&db, quiet()).await;
    let state = serving::state(store);
    let http = api::server::HttpConfig {
        tokens: TokenConfig { max_lifetime: Duration::from_secs(3_600), ..TokenConfig::oidc(oidc(&url)) },
        ..api::server::HttpConfig::new(Vec::new())
    };
    let client = TestClient::new(api::server::app(build(state.clone()), state, http));
    const ME: &str = "{ me { role subject storeId } }";

    let good = sign(Algorithm::RS256, Some("test-rsa"), &rsa(), &claims(json!({})));
    let me = graphql(&client, &good, ME).await;
    assert_eq!(me["data"]["me"], json!({ "role": "STAFF", "subject": "user-1", "storeId": "cafe" }), "{me}");

    let now = now_seconds();
    let rs256 = |changes: Value| sign(Algorithm::RS256, Some("test-rsa"), &rsa(), &claims(changes));
    let public_key = EncodingKey::from_secret(RSA_PUBLIC_KEY.as_bytes());
    let hs256_with_public_key = |kid| sign(Algorithm::HS256, kid, &public_key, &claims(json!({})));
    let development = Claims { sub: "x".into(), role: Role::Admin, member: None, store: None, exp: now + 600 };
    let refused = [
        ("wrong iss", rs256(json!({ "iss": "https://elsewhere.test/" })), AuthError::WrongIssuer),
        ("no iss", rs256(json!({ "iss": null })), AuthError::WrongIssuer),
        ("wrong aud", rs256(json!({ "aud": "another-api" })), AuthError::WrongAudience),
        ("no aud", rs256(json!({ "aud": null })), AuthError::WrongAudience),
        ("expired", rs256(json!({ "iat": now - 1_000, "exp": now - 60 })), AuthError::Expired),
        ("not yet valid", rs256(json!({ "nbf": now + 300 })), AuthError::NotYetValid),
        ("issued in the future", rs256(json!({ "iat": now + 300, "exp": now + 900 })), AuthError::NotYetValid),
        ("over the maximum lifetime", rs256(json!({ "exp": now + 2 * 86_400 })), AuthError::TooLong),
        ("over it, without iat", rs256(json!({ "iat": null, "exp": now + 3_700 })), AuthError::TooLong),
        ("no pointstream role", rs256(json!({ "roles": ["Admin", "viewer"] })), AuthError::NoRole),
        ("no subject", rs256(json!({ "sub": null })), AuthError::NoSubject),
        ("staff without a store", rs256(json!({ "store_id": null })), AuthError::Incomplete("store")),
        ("alg: none", unsigned(&claims(json!({}))), AuthError::Malformed),
        ("HS256 keyed with the RSA public key", hs256_with_public_key(Some("test-rsa")), AuthError::BadAlgorithm),
        ("the same without a kid", hs256_with_public_key(None), AuthError::UnknownKey),
        (
            "ES256 under the RSA key's id",
            sign(Algorithm::ES256, Some("test-rsa"), &ec(), &claims(json!({}))),
            AuthError::BadAlgorithm,
        ),
        (
            "an unpublished key",
            sign(Algorithm::RS256, Some("test-rsa"), &rsa_rotated(), &claims(json!({}))),
            AuthError::BadSignature,
        ),
        ("an unknown kid", sign(Algorithm::RS256, Some("made-up"), &rsa(), &claims(json!({}))), AuthError::UnknownKey),
        (
            "an HS256 development token",
            api::auth::mint(b"pointstream-development-secret", &development).expect("mints"),
            AuthError::UnknownKey,
        ),
    ];
    for (what, token, reason) in refused {
        let answer = graphql(&client, &token, ME).await;
        assert_eq!(answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{what}: {answer}");
        assert_eq!(answer["errors"][0]["message"], reason.to_string(), "{what}: {answer}");
        assert!(answer["data"].is_null(), "{what}: {answer}");
    }
    // The good token is still good: none of that disturbed the keys.
    assert_eq!(graphql(&client, &good, ME).await["data"]["me"]["role"], "STAFF");
}
