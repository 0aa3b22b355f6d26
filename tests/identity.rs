//! Identity as the binary configures it: `serve` with an OpenID Connect
//! provider's JWKS (served here on loopback), the refusal to serve the
//! development secret beyond loopback, and `pointstream token` within the
//! maximum token lifetime.

mod app;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::auth::Role;
use app::{App, code, token};
use eventstore::scratch::ScratchDatabase;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

// Test-only keys, generated once with openssl; they sign nothing real.
const RSA_KEY: &str = include_str!("../api/tests/fixtures/test-only-rsa-2048.pem");
const JWKS: &str = include_str!("../api/tests/fixtures/test-only-jwks.json");

/// Serves `document` to every request on a free loopback port, counting
/// them, on a thread of its own; returns its URL and the count.
fn serve_jwks(document: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("an address"));
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            // The request's head; it has no body.
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                document.len()
            );
            let mut stream = reader.into_inner();
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(document.as_bytes()));
        }
    });
    (url, requests)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A provider token for `claims`, signed by the test RSA key.
fn provider_token(claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-rsa".into());
    let key = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("the test RSA key");
    jsonwebtoken::encode(&header, &claims, &key).expect("signs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_checks_tokens_against_the_providers_keys_and_mapped_claims() {
    let (url, requests) = serve_jwks(JWKS);
    let app = App::spawn(
        ScratchDatabase::sqlite(),
        &[
            "--oidc-jwks-url",
            &url,
            "--oidc-issuer",
            "https://id.pointstream.test/",
            "--oidc-audience",
            "pointstream-api",
            "--oidc-role-claim",
            "realm_access.roles",
            "--oidc-store-claim",
            "https://pointstream.test/store",
            "--max-token-lifetime-secs",
            "3600",
        ],
    );
    const ME: &str = "{ me { role subject storeId } }";
    let claims = |exp: u64| {
        json!({
            "iss": "https://id.pointstream.test/", "aud": "pointstream-api", "sub": "till-7", "iat": now(), "exp": exp,
            "realm_access": { "roles": ["default-roles", "staff"] }, "https://pointstream.test/store": "cafe",
        })
    };
    let me = app.graphql(Some(&provider_token(claims(now() + 600))), ME, json!({}));
    assert_eq!(me["data"]["me"], json!({ "role": "STAFF", "subject": "till-7", "storeId": "cafe" }), "{me}");

    // Over the configured lifetime; and HS256, even with the server's secret, is off.
    let long = app.graphql(Some(&provider_token(claims(now() + 7_200))), ME, json!({}));
    assert_eq!(code(&long), "UNAUTHENTICATED", "{long}");
    let hs256 = app.graphql(Some(&token(Role::Admin, None, None)), ME, json!({}));
    assert_eq!(code(&hs256), "UNAUTHENTICATED", "{hs256}");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the keys were fetched once, at start");
}

/// Runs `pointstream` with `args` and no token configuration from the
/// environment; gives up (and fails) after 30 s.
fn pointstream(database_url: &str, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("POINTSTREAM_MEDIA_DIR", media::scratch::scratch_dir())
        .env("RUST_LOG", "warn")
        .env_remove("POINTSTREAM_JWT_SECRET")
        .env_remove("POINTSTREAM_OIDC_JWKS_URL")
        .env_remove("POINTSTREAM_MAX_TOKEN_LIFETIME_SECS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("waits").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`pointstream {}` still runs after 30 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

#[test]
fn serve_refuses_the_development_secret_beyond_loopback() {
    let db = ScratchDatabase::sqlite();
    let refused = pointstream(&db.url, &["serve", "--listen", "0.0.0.0:0"]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("development secret"), "{stderr}");
    assert!(stderr.contains("--jwt-secret") && stderr.contains("--oidc-jwks-url"), "{stderr}");
}

#[test]
fn token_mints_only_within_the_maximum_lifetime_and_never_beside_a_provider() {
    let db = ScratchDatabase::sqlite();
    let day = pointstream(&db.url, &["token", "--role", "admin", "--hours", "24"]);
    assert!(day.status.success(), "{day:?}");
    let two_days = pointstream(&db.url, &["token", "--role", "admin", "--hours", "48"]);
    assert!(!two_days.status.success(), "{two_days:?}");
    let stderr = String::from_utf8_lossy(&two_days.stderr);
    assert!(stderr.contains("maximum token lifetime") && stderr.contains("--max-token-lifetime-secs"), "{stderr}");
    let allowed = ["--max-token-lifetime-secs", "172800", "token", "--role", "admin", "--hours", "48"];
    assert!(pointstream(&db.url, &allowed).status.success());
    let beside = pointstream(&db.url, &["--oidc-jwks-url", "https://id.example.com/jwks", "token", "--role", "admin"]);
    assert!(!beside.status.success(), "{beside:?}");
    assert!(String::from_utf8_lossy(&beside.stderr).contains("identity provider"), "{beside:?}");
}
