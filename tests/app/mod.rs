//! The `pointstream` binary as its clients see it: `serve` spawned on a free
//! port against a fresh database, spoken to over real HTTP and WebSocket.

#![allow(dead_code)] // Each test file uses part of the harness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::auth::{Claims, Role, mint};
use eventstore::scratch::ScratchDatabase;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The secret the spawned server checks tokens with.
pub const SECRET: &str = "end-to-end test secret";

/// A running `pointstream serve`; killed when dropped.
pub struct App {
    child: Child,
    /// How to talk to it.
    pub client: Client,
    /// Its database (dropped after the server), unless it shares another's.
    pub db: Option<ScratchDatabase>,
    /// The database's URL.
    pub url: String,
    /// Where its log (stderr) goes.
    pub log: std::path::PathBuf,
    /// What it printed on stdout after its first line.
    printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl std::ops::Deref for App {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Talks to a server at `address` (`host:port`); cheap to clone into threads.
#[derive(Debug, Clone)]
pub struct Client {
    pub address: String,
}

impl App {
    /// Starts `pointstream serve` on `db` with extra `args` and [`SECRET`],
    /// and waits until it listens.
    pub fn spawn(db: ScratchDatabase, args: &[&str]) -> App {
        let url = db.url.clone();
        let (app, lines) = Self::start_on(Some(db), &url, args, Some(SECRET), "warn");
        app.keep_reading(lines);
        app
    }

    /// [`Self::spawn`], logging everything down to debug level.
    pub fn spawn_verbose(db: ScratchDatabase, args: &[&str]) -> App {
        let url = db.url.clone();
        let (app, lines) = Self::start_on(Some(db), &url, args, Some(SECRET), "debug");
        app.keep_reading(lines);
        app
    }

    /// Starts `pointstream serve` on `db` as a newcomer does, without a
    /// secret; returns it with the development admin token it prints.
    pub fn spawn_development(db: ScratchDatabase) -> (App, String) {
        let (app, mut lines) = Self::start(db, &[], None);
        let line = lines.next().expect("a token line").expect("a line");
        let token = line.strip_prefix("development admin token: ").expect("a development token").to_string();
        app.keep_reading(lines);
        (app, token)
    }

    /// A second server on `other`'s database, as another instance of the service.
    pub fn spawn_beside(other: &App, args: &[&str]) -> App {
        let (app, lines) = Self::start_on(None, &other.url, args, Some(SECRET), "warn");
        app.keep_reading(lines);
        app
    }

    fn start(
        db: ScratchDatabase,
        args: &[&str],
        secret: Option<&str>,
    ) -> (App, std::io::Lines<BufReader<std::process::ChildStdout>>) {
        let url = db.url.clone();
        Self::start_on(Some(db), &url, args, secret, "warn")
    }

    fn start_on(
        db: Option<ScratchDatabase>,
        url: &str,
        args: &[&str],
        secret: Option<&str>,
        log_filter: &str,
    ) -> (App, std::io::Lines<BufReader<std::process::ChildStdout>>) {
        let (mut app, lines) = Self::launch(url, "127.0.0.1:0", args, &[], secret, log_filter);
        app.db = db;
        (app, lines)
    }

    /// Starts `pointstream serve` on the database at `url`, listening on
    /// `listen`, with extra `args` and environment `env`, tokens checked with
    /// `secret` (the development secret when `None`); waits for its banner
    /// and fails with its log if it ends first. Returns it with its stdout
    /// after the banner.
    fn launch(
        url: &str,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        secret: Option<&str>,
        log_filter: &str,
    ) -> (App, std::io::Lines<BufReader<std::process::ChildStdout>>) {
        let log = std::env::temp_dir().join(format!("pointstream-test-{}.log", uuid::Uuid::new_v4().simple()));
        let log_file = std::fs::File::create(&log).expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_pointstream"));
        command.args(["serve", "--listen", listen]).args(args).env("DATABASE_URL", url);
        // Load and fault tests send far more than a caller's default rate;
        // the rate limit's own test sets one with `--rate-limit-per-minute`.
        command.env("POINTSTREAM_RATE_LIMIT_PER_MINUTE", "0");
        // Photos in a directory of the test's own unless `args` say otherwise.
        command.env("POINTSTREAM_MEDIA_DIR", media::scratch::scratch_dir());
        // Published digests likewise.
        command.env("POINTSTREAM_DIGEST_DIR", media::scratch::scratch_dir());
        match secret {
            Some(secret) => command.env("POINTSTREAM_JWT_SECRET", secret),
            None => command.env_remove("POINTSTREAM_JWT_SECRET"),
        };
        command.envs(env.iter().copied());
        let mut child = command
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let Some(Ok(banner)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            panic!("`pointstream serve --listen {listen}` ended before it listened; its log:\n{logged}");
        };
        let address = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.strip_suffix("/graphql"))
            .unwrap_or_else(|| panic!("the banner names the GraphiQL URL: {banner}"))
            .to_string();
        let printed = Default::default();
        (App { child, client: Client { address }, db: None, url: url.to_string(), log, printed }, lines)
    }

    /// Keeps reading stdout, so the server never blocks on a full pipe, and
    /// keeps what it printed.
    fn keep_reading(&self, lines: std::io::Lines<BufReader<std::process::ChildStdout>>) {
        let printed = self.printed.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                printed.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }

    /// The lines the server printed after its first, once `done` accepts
    /// them or 5 s have passed.
    pub fn printed_until(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let printed = self.printed.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if done(&printed) || Instant::now() > deadline {
                return printed;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An HTTP response: status, headers (names in lower case) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl Client {
    /// One HTTP/1.1 exchange: the status code and the body.
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let reply = self.exchange(method, path, headers, body);
        (reply.status, reply.body)
    }

    /// One HTTP/1.1 exchange, with the response's headers (any failure to
    /// get an answer fails the test).
    pub fn exchange(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.try_exchange(method, path, headers, body, Sending::default())
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e:?}"))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, &[], b"")
    }

    /// A GraphQL request; the JSON response (any HTTP status but 200 fails).
    pub fn graphql(&self, bearer: Option<&str>, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let (status, text) = self.post_json(bearer, &body);
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// `POST /graphql` of `body` as JSON.
    pub fn post_json(&self, bearer: Option<&str>, body: &str) -> (u16, String) {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        self.http("POST", "/graphql", &headers, body.as_bytes())
    }

    /// `POST /graphql` of a GraphQL multipart request (see [`multipart`]).
    pub fn post_multipart(&self, bearer: Option<&str>, (content_type, body): &(String, Vec<u8>)) -> (u16, String) {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", content_type.as_str())];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        self.http("POST", "/graphql", &headers, body)
    }

    /// The position of the last event in the log, as an admin sees it.
    pub fn head(&self) -> i64 {
        let answer = self.graphql(Some(&token(Role::Admin, None, None)), "{ logHead }", json!({}));
        answer["data"]["logHead"].as_i64().unwrap_or_else(|| panic!("{answer}"))
    }

    /// Asks `query` until `done` accepts the answer, for up to 10 s.
    pub fn eventually(&self, bearer: &str, query: &str, variables: Value, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.graphql(Some(bearer), query, variables.clone());
            if done(&answer) {
                return answer;
            }
            assert!(Instant::now() < deadline, "still not there after 10 s: {answer}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A WebSocket on `/graphql/ws` in `protocol`, before any message.
    pub async fn raw_socket(&self, protocol: &str) -> Socket {
        let mut request = format!("ws://{}/graphql/ws", self.address).into_client_request().expect("a request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("a header"));
        let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("the WebSocket opens");
        socket
    }

    /// A WebSocket on `/graphql/ws` in `protocol`, past `connection_init` with `bearer`.
    pub async fn socket(&self, protocol: &str, bearer: &str) -> Socket {
        let mut socket = self.raw_socket(protocol).await;
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {bearer}") } });
        socket.send(Message::text(init.to_string())).await.expect("sends");
        assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
        socket
    }
}

impl App {
    /// The sum of the `/metrics` samples of `name` whose labels include every one of `labels`.
    pub fn counted(&self, name: &str, labels: &[&str]) -> f64 {
        counted(&self.get("/metrics").1, name, labels)
    }

    /// What the server has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("the server's log:\n{}", self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A client WebSocket.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts subscription `id` with `query` (the message type depends on the protocol).
pub async fn subscribe(socket: &mut Socket, protocol: &str, id: &str, query: &str) {
    let kind = if protocol == "graphql-ws" { "start" } else { "subscribe" };
    let message = json!({ "type": kind, "id": id, "payload": { "query": query } });
    socket.send(Message::text(message.to_string())).await.expect("sends");
}

/// The next message that is not a keep-alive, within 10 s.
pub async fn next_json(socket: &mut Socket) -> Value {
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

/// A file in a multipart request: its form field, the client's filename and
/// content type (which the server must not trust), and its bytes.
pub struct FilePart<'a> {
    pub field: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// A GraphQL multipart request (the spec's `operations`, `map`, then the
/// files): its content type and body.
pub fn multipart(query: &str, variables: Value, map: Value, files: &[FilePart<'_>]) -> (String, Vec<u8>) {
    let boundary = "pointstream-e2e-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    let operations = json!({ "query": query, "variables": variables }).to_string();
    for (name, value) in [("operations", operations), ("map", map.to_string())] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for file in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                file.field, file.filename, file.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(file.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Registers a member (`$id`, `$handle`).
pub const REGISTER_MEMBER: &str = "mutation($id: String!, $handle: String!) { \
    registerMember(id: $id, handle: $handle, displayName: $handle) { position member { id handle active } } }";
/// Registers a store (`$id`, `$owner`).
pub const REGISTER_STORE: &str = "mutation($id: String!, $owner: String!) { registerStore(id: $id, name: \"A store\", \
    owner: $owner, policy: { rateBasisPoints: 1000, minPurchase: 1 }) { position store { id open policyVersion } } }";

/// Registers `members` and `stores` (id, owner) as an admin.
pub fn setup(app: &App, members: &[&str], stores: &[(&str, &str)]) {
    let admin = token(Role::Admin, None, None);
    for id in members {
        let answer = app.graphql(Some(&admin), REGISTER_MEMBER, json!({ "id": id, "handle": format!("{id}_h") }));
        assert_eq!(answer["data"]["registerMember"]["member"]["active"], true, "{answer}");
    }
    for (id, owner) in stores {
        let answer = app.graphql(Some(&admin), REGISTER_STORE, json!({ "id": id, "owner": owner }));
        assert_eq!(answer["data"]["registerStore"]["store"]["open"], true, "{answer}");
    }
}

/// A token for `role`, bound to `member` or `store`, valid for an hour
/// (well within the server's maximum token lifetime).
pub fn token(role: Role, member: Option<&str>, store: Option<&str>) -> String {
    sign(SECRET.as_bytes(), role, member, store, in_an_hour())
}

/// An admin token that expired long ago.
pub fn expired_token() -> String {
    sign(SECRET.as_bytes(), Role::Admin, None, None, 1_000_000_000)
}

/// An admin token signed with another secret.
pub fn foreign_token() -> String {
    sign(b"some other secret", Role::Admin, None, None, in_an_hour())
}

/// A token of `subject`'s for `role`, bound to `member` or `store`.
pub fn token_of(subject: &str, role: Role, member: Option<&str>, store: Option<&str>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let claims = Claims {
        sub: subject.into(),
        role,
        member: member.map(str::to_string),
        store: store.map(str::to_string),
        exp: now + 3_600,
    };
    mint(SECRET.as_bytes(), &claims).expect("mints")
}

/// A token for `role` that expires `seconds` from now.
pub fn token_expiring_in(role: Role, member: Option<&str>, store: Option<&str>, seconds: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    sign(SECRET.as_bytes(), role, member, store, now + seconds)
}

/// An hour from now, in seconds since the epoch.
fn in_an_hour() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() + 3_600
}

fn sign(secret: &[u8], role: Role, member: Option<&str>, store: Option<&str>, exp: u64) -> String {
    let claims =
        Claims { sub: "e2e".into(), role, member: member.map(str::to_string), store: store.map(str::to_string), exp };
    mint(secret, &claims).expect("mints")
}

/// `GET url` from outside the API (a photo URL): status, content type and bytes.
pub async fn fetch(url: &str) -> (u16, String, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, content_type, response.bytes().await.expect("a body").to_vec())
}

/// The first error's `extensions.code`, or "none".
pub fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or("none")
}

/// The sum of the samples of `name` in Prometheus text `metrics` whose labels
/// include every one of `labels`.
pub fn counted(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Why a request got no HTTP answer (see [`Client::try_exchange`]).
#[derive(Debug, Clone)]
pub enum Unanswered {
    /// No connection was made: the server never saw the request.
    NotSent(String),
    /// Connected, then no complete answer: the server may have acted on the
    /// request or not.
    Lost(String),
}

/// How [`Client::try_exchange`] sends a request.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// The longest a connect, a write or a read may take.
    pub timeout: Duration,
    /// The body goes out in pieces of this many bytes ...
    pub piece: usize,
    /// ... with this pause after each but the last: a slow client, whose
    /// upload a fault can land in the middle of.
    pub pause: Duration,
}

impl Default for Sending {
    fn default() -> Self {
        Sending { timeout: Duration::from_secs(30), piece: usize::MAX, pause: Duration::ZERO }
    }
}

impl Client {
    /// One HTTP/1.1 exchange that may fail, for clients of a server that
    /// faults kill: a connection refused is [`Unanswered::NotSent`], any
    /// failure after connecting (reset, timeout, a cut answer) is
    /// [`Unanswered::Lost`].
    pub fn try_exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        sending: Sending,
    ) -> Result<Reply, Unanswered> {
        let address: std::net::SocketAddr =
            self.address.parse().map_err(|e| Unanswered::NotSent(format!("{}: {e}", self.address)))?;
        let mut stream = TcpStream::connect_timeout(&address, sending.timeout)
            .map_err(|e| Unanswered::NotSent(format!("connect: {e}")))?;
        let lost = |what: &str, e: std::io::Error| Unanswered::Lost(format!("{what}: {e}"));
        stream.set_read_timeout(Some(sending.timeout)).map_err(|e| lost("read timeout", e))?;
        stream.set_write_timeout(Some(sending.timeout)).map_err(|e| lost("write timeout", e))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).map_err(|e| lost("request head", e))?;
        // A server may answer (413) before reading a large body: a failed
        // write of the body is then no failure if an answer follows.
        let mut unsent = None;
        let mut pieces = body.chunks(sending.piece.max(1)).peekable();
        while let Some(piece) = pieces.next() {
            if let Err(e) = stream.write_all(piece) {
                unsent = Some(lost("request body", e));
                break;
            }
            if pieces.peek().is_some() && !sending.pause.is_zero() {
                std::thread::sleep(sending.pause);
            }
        }
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        if let Some(reply) = try_parse_response(&raw) {
            return Ok(reply);
        }
        if let Some(unsent) = unsent {
            return Err(unsent);
        }
        read.map_err(|e| lost("response", e))?;
        Err(Unanswered::Lost(format!(
            "an incomplete response of {} bytes: {}",
            raw.len(),
            String::from_utf8_lossy(&raw)
        )))
    }
}

impl App {
    /// Starts `pointstream serve` on the database at `url` (which outlives
    /// it), listening on `listen` (a fixed `127.0.0.1:<port>`, so that a
    /// restarted server keeps the address its clients know), with extra
    /// `args`, extra environment `env` and [`SECRET`]; waits until it
    /// listens, and fails with its log if it does not.
    pub fn serve_at(url: &str, listen: &str, args: &[&str], env: &[(&str, &str)]) -> App {
        let (app, lines) = Self::launch(url, listen, args, env, Some(SECRET), "warn");
        app.keep_reading(lines);
        app
    }

    /// [`Self::serve_at`], logging everything down to debug level.
    pub fn serve_verbose_at(url: &str, listen: &str, args: &[&str], env: &[(&str, &str)]) -> App {
        let (app, lines) = Self::launch(url, listen, args, env, Some(SECRET), "debug");
        app.keep_reading(lines);
        app
    }

    /// Its process id (lease holders name it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it SIGTERM, as an orchestrator stopping it does.
    pub fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "SIGTERM was sent");
    }

    /// Waits up to `within` for it to exit; its exit status, if it did.
    pub fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server with SIGKILL, waits for it to end, and returns
    /// what it logged.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs()
    }
}

/// Status, headers and body of a raw HTTP/1.1 response (`Content-Length` or
/// chunked); `None` unless the head and the whole body arrived (an answer
/// cut short).
fn try_parse_response(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = &raw[split + 4..];
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_lowercase());
    let mut decoded = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let line_end = body.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(String::from_utf8_lossy(&body[..line_end]).trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            let chunk = body.get(line_end + 2..line_end + 2 + size)?;
            decoded.extend_from_slice(chunk);
            body = body.get(line_end + 2 + size + 2..)?;
        }
    } else {
        if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body = body.get(..length)?;
        }
        decoded.extend_from_slice(body);
    }
    Some(Reply { status, headers, body: String::from_utf8_lossy(&decoded).to_string() })
}
