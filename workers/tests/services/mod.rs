//! Services the worker tests run: a `redis-server` of their own (so it can
//! be killed) and fake Facebook/Twitter networks that record every call and
//! answer as each test scripts it. Shared by `workers/tests` and the root
//! `tests/workers.rs`.

#![allow(dead_code)] // Each test file uses part of it.

use std::collections::{BTreeMap, VecDeque};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::web::Data;
use poem::{EndpointExt, IntoResponse, Response, Route, handler, post};

/// A call the fake networks received.
#[derive(Debug, Clone)]
pub struct Call {
    pub network: &'static str,
    pub at: Instant,
    pub status: u16,
    pub auth: String,
    /// The request path (`/fb/ann-page/photos`, `/2/tweets`, ...).
    pub path: String,
    /// The body as text (lossy).
    pub body: String,
    /// The body's bytes.
    pub bytes: Vec<u8>,
}

impl Call {
    /// Whether the body carries `needle` byte for byte.
    pub fn carries(&self, needle: &[u8]) -> bool {
        self.bytes.windows(needle.len()).any(|w| w == needle)
    }
}

/// A scripted answer: status and `Retry-After` seconds.
pub type Answer = (u16, Option<u64>);

/// What the fake networks answer next (200 when nothing is scripted) and what they saw.
#[derive(Default)]
pub struct Fake {
    script: Mutex<BTreeMap<&'static str, VecDeque<Answer>>>,
    calls: Mutex<Vec<Call>>,
    /// How long each network takes to answer (none: at once).
    delays: Mutex<BTreeMap<&'static str, Duration>>,
    /// Calls that arrived, answered or not yet.
    arrived: Mutex<Vec<&'static str>>,
}

impl Fake {
    fn answer(&self, network: &'static str, auth: String, path: String, bytes: Vec<u8>) -> Response {
        let body = String::from_utf8_lossy(&bytes).to_string();
        let next = self.script.lock().expect("lock").get_mut(network).and_then(VecDeque::pop_front);
        let status = next.map_or(200, |(status, _)| status);
        self.calls.lock().expect("lock").push(Call { network, at: Instant::now(), status, auth, path, body, bytes });
        let n = self.calls.lock().expect("lock").len();
        match next {
            None | Some((200, _)) => {
                let json = if network == "facebook" {
                    format!(r#"{{"id":"fb-{n}"}}"#)
                } else {
                    format!(r#"{{"data":{{"id":"tw-{n}","text":"x"}}}}"#)
                };
                Response::builder().content_type("application/json").body(json)
            }
            Some((status, retry_after)) => {
                let mut response = Response::builder().status(StatusCode::from_u16(status).expect("a status"));
                if let Some(seconds) = retry_after {
                    response = response.header("Retry-After", seconds.to_string());
                }
                response.body("{\"error\":\"scripted\"}")
            }
        }
    }

    pub fn calls(&self, network: &str) -> Vec<Call> {
        self.calls.lock().expect("lock").iter().filter(|c| c.network == network).cloned().collect()
    }

    /// Makes `network` take `delay` to answer each call.
    pub fn delay(&self, network: &'static str, delay: Duration) {
        self.delays.lock().expect("lock").insert(network, delay);
    }

    /// How many calls reached `network`, including those still being answered.
    pub fn arrived(&self, network: &str) -> usize {
        self.arrived.lock().expect("lock").iter().filter(|n| **n == network).count()
    }

    /// Notes a call's arrival, then waits the network's delay.
    async fn arrive(&self, network: &'static str) {
        self.arrived.lock().expect("lock").push(network);
        let delay = self.delays.lock().expect("lock").get(network).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    pub fn script(&self, network: &'static str, answers: &[Answer]) {
        self.script.lock().expect("lock").insert(network, answers.iter().copied().collect());
    }
}

#[handler]
async fn facebook(fake: Data<&Arc<Fake>>, uri: &poem::http::Uri, body: Vec<u8>) -> impl IntoResponse {
    fake.arrive("facebook").await;
    fake.answer("facebook", String::new(), uri.path().to_string(), body)
}

#[handler]
async fn twitter(
    fake: Data<&Arc<Fake>>,
    uri: &poem::http::Uri,
    headers: &poem::http::HeaderMap,
    body: Vec<u8>,
) -> impl IntoResponse {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    fake.arrive("twitter").await;
    fake.answer("twitter", auth, uri.path().to_string(), body)
}

/// Starts the fake networks; returns their base URL.
pub async fn fake_networks(fake: Arc<Fake>) -> String {
    let app = Route::new()
        .at("/fb/:account/feed", post(facebook))
        .at("/fb/:account/photos", post(facebook))
        .at("/2/tweets", post(twitter))
        .at("/2/media/upload", post(twitter))
        .data(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("an address");
    drop(listener);
    let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind(address.to_string()))
        .await
        .expect("listens");
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://{address}")
}

pub struct RedisServer(Child, u16);

impl RedisServer {
    pub fn start() -> RedisServer {
        // The probe socket is closed before the server binds the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port();
        Self::start_on(port)
    }

    /// Starts one on `port` (again, after [`Self::kill`]).
    pub fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server listens");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer(child, port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }
}

impl RedisServer {
    /// Kills it; returns its port.
    pub fn kill(mut self) -> u16 {
        let _ = self.0.kill();
        let _ = self.0.wait();
        self.1
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
