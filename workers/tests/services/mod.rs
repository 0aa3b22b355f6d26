//! Services the worker tests run: a `redis-server` of their own (so it can
//! be killed), a primary with replicas behind three sentinels, a
//! three-master cluster, and fake Facebook/Twitter networks that record every
//! call and answer as each test scripts it. Shared by `workers/tests` and the
//! root `tests/workers.rs`.

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
    // Port 0, and the port taken read back: no other process can take it between.
    let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("listens");
    let address = poem::listener::Acceptor::local_addr(&acceptor)
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .expect("an address");
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://{address}")
}

pub struct RedisServer(Child, u16);

/// A free loopback port (the probe socket is closed before a server binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (again, after [`Self::kill`]).
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, &[])
    }

    /// Starts one on `port` with more command-line options (`--replicaof`,
    /// `--cluster-enabled` ...). A missing `redis-server` fails the test.
    pub fn start_with(port: u16, options: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(options)
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

    pub fn port(&self) -> u16 {
        self.1
    }

    /// Sends the process `signal` (`STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.0.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} reaches redis-server");
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

/// `redis-cli -p port ARGS...`: its output, lines trimmed. A missing
/// `redis-cli` or a refused command fails the test.
pub fn redis_cli(port: u16, args: &[&str]) -> Vec<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (install redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| l.trim().to_string()).collect()
}

/// Waits until `check` holds, failing the test with `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory of its own under the system's temporary one, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pointstream-{what}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service name the sentinels watch.
pub const SENTINEL_SERVICE: &str = "pointstream";

/// A primary, two replicas and three sentinels watching them (quorum 2,
/// a primary down after 1 s), each on a free port.
pub struct SentinelSet {
    /// The first primary (`None` once killed).
    pub primary: Option<RedisServer>,
    pub replicas: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
    _dir: Scratch,
}

impl SentinelSet {
    /// Starts them and waits until every sentinel knows both replicas and
    /// the other two sentinels (so a failover can be agreed on).
    pub fn start() -> SentinelSet {
        let dir = Scratch::new("sentinel");
        // Replicas write what they are sent to disk before loading it: in the scratch directory.
        let files = dir.0.display().to_string();
        let primary = RedisServer::start_with(free_port(), &["--dir", &files, "--dbfilename", "primary.rdb"]);
        let source = primary.port().to_string();
        let replicas: Vec<RedisServer> = (0..2)
            .map(|n| {
                let file = format!("replica-{n}.rdb");
                let options = ["--replicaof", "127.0.0.1", &source, "--dir", &files, "--dbfilename", &file];
                RedisServer::start_with(free_port(), &options)
            })
            .collect();
        let sentinels = (0..3)
            .map(|n| {
                let port = free_port();
                // A sentinel rewrites its configuration file: one each.
                let file = dir.0.join(format!("sentinel-{n}.conf"));
                let config = format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {source} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 2\n",
                    dir = dir.0.display()
                );
                std::fs::write(&file, config).expect("the sentinel's configuration is written");
                let child = Command::new("redis-server")
                    .arg(&file)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server --sentinel starts (install redis-server)");
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    assert!(Instant::now() < deadline, "the sentinel listens");
                    std::thread::sleep(Duration::from_millis(20));
                }
                RedisServer(child, port)
            })
            .collect();
        let set = SentinelSet { primary: Some(primary), replicas, sentinels, _dir: dir };
        for replica in &set.replicas {
            wait_for("a replica in sync", Duration::from_secs(20), || {
                redis_cli(replica.port(), &["INFO", "replication"]).iter().any(|l| l == "master_link_status:up")
            });
        }
        for sentinel in &set.sentinels {
            wait_for("every sentinel knows the replicas and the other sentinels", Duration::from_secs(30), || {
                let master = redis_cli(sentinel.port(), &["SENTINEL", "MASTER", SENTINEL_SERVICE]);
                let field = |name: &str| {
                    master.iter().position(|l| l == name).and_then(|i| master.get(i + 1)).cloned().unwrap_or_default()
                };
                field("num-slaves") == "2" && field("num-other-sentinels") == "2"
            });
        }
        set
    }

    /// fred's URL for the primary behind these sentinels.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.sentinels[1..].iter().map(|s| format!("node=127.0.0.1:{}", s.port())).collect();
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}&{}",
            self.sentinels[0].port(),
            nodes.join("&")
        )
    }

    /// The port of the primary the sentinels name now.
    pub fn primary_port(&self) -> u16 {
        let answer = redis_cli(self.sentinels[0].port(), &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE]);
        answer.get(1).and_then(|port| port.parse().ok()).expect("the sentinels name a primary")
    }
}

/// Three masters (no replicas) forming a Redis Cluster, each on a free port
/// with its cluster bus on another free port.
pub struct Cluster {
    pub masters: Vec<RedisServer>,
    _dir: Scratch,
}

impl Cluster {
    /// Starts them, joins them (`redis-cli --cluster create`) and waits
    /// until every node reports the cluster healthy.
    pub fn start() -> Cluster {
        let dir = Scratch::new("cluster");
        let masters: Vec<RedisServer> = (0..3)
            .map(|n| {
                let dir = dir.0.display().to_string();
                let nodes = format!("nodes-{n}.conf");
                let bus = free_port().to_string();
                let options = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    bus.as_str(),
                    "--cluster-config-file",
                    nodes.as_str(),
                    "--dir",
                    dir.as_str(),
                    "--cluster-node-timeout",
                    "2000",
                ];
                RedisServer::start_with(free_port(), &options)
            })
            .collect();
        let addresses: Vec<String> = masters.iter().map(|m| format!("127.0.0.1:{}", m.port())).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.push("--cluster-yes");
        redis_cli(masters[0].port(), &create);
        for master in &masters {
            wait_for("the cluster is healthy", Duration::from_secs(30), || {
                redis_cli(master.port(), &["CLUSTER", "INFO"]).iter().any(|l| l == "cluster_state:ok")
            });
        }
        Cluster { masters, _dir: dir }
    }

    /// fred's URL for the cluster.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.masters[1..].iter().map(|m| format!("node=127.0.0.1:{}", m.port())).collect();
        format!("redis-cluster://127.0.0.1:{}?{}", self.masters[0].port(), nodes.join("&"))
    }
}
