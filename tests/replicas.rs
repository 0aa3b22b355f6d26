//! Queries from a MariaDB replica: a primary and a replica started here on
//! free ports, with binlog replication set up by the test; the replica's SQL
//! thread is stopped to make it lag. A client that sends its position reads
//! its writes; one that does not reads the replica; a replica behind the
//! bound leaves the rotation (and `/readyz` and `/metrics` say so); once
//! caught up, the replica answers as the primary does.

mod app;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::auth::Role;
use app::{App, setup, token};
use serde_json::{Value, json};

const EARN: &str = "mutation($member: String!, $store: String!, $ref: String!, $amount: Int!) { \
    earnPoints(member: $member, store: $store, purchaseRef: $ref, amount: $amount) { position balance { balance } } }";
const BALANCE: &str = "query($member: String!) { balances(member: $member) { storeId balance } }";
const SCREEN: &str = "query($member: String!) { member(id: $member) { id handle } \
    balances(member: $member) { storeId balance earned } \
    ledger(member: $member, first: 50) { edges { node { position kind delta balanceAfter } } } }";

/// A MariaDB server of the test's own, in a temporary directory; killed and
/// removed when dropped.
struct Mariadb {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Mariadb {
    /// Installs a data directory and starts a server with binary logging
    /// (row format, GTIDs) as `server_id`.
    fn start(server_id: u32) -> Mariadb {
        let dir = std::env::temp_dir().join(format!("pointstream-mariadb-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let data = dir.join("data");
        let installed = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db runs (Debian's mariadb-server)");
        assert!(installed.success(), "mariadb-install-db failed");
        let port = free_port();
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--server-id={server_id}"))
            .arg(format!("--log-bin={}", dir.join("binlog").display()))
            .args(["--bind-address=127.0.0.1", "--user=root", "--binlog-format=ROW", "--skip-grant-tables"])
            .args(["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M", "--max-connections=300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        let server = Mariadb { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.try_sql("SELECT 1").is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not answer in 30 s: {}", server.error_log());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .args(["-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Replicates `primary` from its start, by GTID.
    fn replicate(&self, primary: &Mariadb) {
        self.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', MASTER_PASSWORD='', \
             MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
            primary.port
        ));
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port()
}

fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A query with `Pointstream-Position: after` when given.
fn query(app: &App, bearer: &str, query: &str, variables: Value, after: Option<u64>) -> Value {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let auth = format!("Bearer {bearer}");
    let position = after.map(|p| p.to_string());
    let mut headers = vec![("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    if let Some(position) = &position {
        headers.push(("Pointstream-Position", position.as_str()));
    }
    let reply = app.exchange("POST", "/graphql", &headers, body.as_bytes());
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

fn balance(answer: &Value) -> i64 {
    answer["data"]["balances"][0]["balance"].as_i64().unwrap_or_else(|| panic!("{answer}"))
}

fn earn(app: &App, bearer: &str, reference: &str) -> (u64, i64) {
    let body =
        json!({ "query": EARN, "variables": { "member": "m1", "store": "s1", "ref": reference, "amount": 100 } });
    let auth = format!("Bearer {bearer}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let reply = app.exchange("POST", "/graphql", &headers, body.to_string().as_bytes());
    let answer = reply.json();
    let earned = &answer["data"]["earnPoints"];
    let position = earned["position"].as_u64().unwrap_or_else(|| panic!("{answer}"));
    // The answer's header carries the position too.
    assert_eq!(reply.header("pointstream-position"), Some(position.to_string().as_str()), "{reply:?}");
    (position, earned["balance"]["balance"].as_i64().expect("a balance"))
}

fn readyz(app: &App) -> String {
    let (status, body) = app.get("/readyz");
    assert_eq!(status, 200, "replicas out of rotation leave the service ready: {body}");
    body
}

#[test]
fn queries_read_a_replica_and_see_the_clients_writes() {
    let primary = Mariadb::start(1);
    let replica = Mariadb::start(2);
    replica.replicate(&primary);
    primary.sql("CREATE DATABASE pointstream");
    until("the replica has the database", Duration::from_secs(20), || {
        replica.try_sql("SHOW DATABASES LIKE 'pointstream'").is_ok_and(|out| out == "pointstream")
    });

    let app = App::serve_at(
        &primary.url("pointstream"),
        "127.0.0.1:0",
        &[
            "--read-database-url",
            &replica.url("pointstream"),
            "--replica-max-lag-ms",
            "1500",
            "--replica-wait-ms",
            "600",
        ],
        &[],
    );
    setup(&app, &["m1"], &[("s1", "m1")]);
    let admin = token(Role::Admin, None, None);
    let member = token(Role::Member, Some("m1"), None);
    until("the replica joins the rotation", Duration::from_secs(20), || readyz(&app).contains("in rotation"));

    // Caught up: a write and a read at its position, from the replica.
    let (first, after_first) = earn(&app, &admin, "p-1");
    let reads_before = app.counted("pointstream_replica_reads_total", &[]);
    let seen = query(&app, &member, BALANCE, json!({ "member": "m1" }), Some(first));
    assert_eq!(balance(&seen), after_first, "{seen}");
    assert!(app.counted("pointstream_replica_reads_total", &[]) > reads_before, "the replica answered");

    // The replica stops applying: a query without a position reads it as it
    // stands; one with the client's position reads its write, from the
    // primary once the wait is over.
    replica.sql("STOP SLAVE SQL_THREAD");
    let (second, after_second) = earn(&app, &admin, "p-2");
    assert!(second > first && after_second > after_first);
    let stale = query(&app, &member, BALANCE, json!({ "member": "m1" }), None);
    assert_eq!(balance(&stale), after_first, "without a position, the lagging replica answers: {stale}");
    let fallbacks = app.counted("pointstream_replica_fallbacks_total", &[]);
    let started = Instant::now();
    let fresh = query(&app, &member, BALANCE, json!({ "member": "m1" }), Some(second));
    assert_eq!(balance(&fresh), after_second, "read-your-writes: {fresh}");
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited for the replica first");
    assert!(app.counted("pointstream_replica_fallbacks_total", &[]) > fallbacks);

    // Behind the bound: out of rotation, said by /readyz and /metrics; every
    // query goes to the primary.
    until("the lagging replica leaves the rotation", Duration::from_secs(10), || {
        readyz(&app).contains("out of rotation")
    });
    assert_eq!(app.counted("pointstream_replica_in_rotation", &[]), 0.0);
    assert!(app.counted("pointstream_replica_lag_seconds", &[]) >= 1.5);
    let primary_answer = query(&app, &member, BALANCE, json!({ "member": "m1" }), None);
    assert_eq!(balance(&primary_answer), after_second, "{primary_answer}");

    // Caught up again: back in rotation, and the replica's answers are the primary's.
    replica.sql("START SLAVE SQL_THREAD");
    until("the replica is back in rotation", Duration::from_secs(20), || {
        app.counted("pointstream_replica_in_rotation", &[]) == 1.0
    });
    for n in 3..8 {
        earn(&app, &admin, &format!("p-{n}"));
    }
    let head = app.head() as u64;
    let alone = App::serve_at(&primary.url("pointstream"), "127.0.0.1:0", &[], &[]);
    let on_primary = query(&alone, &member, SCREEN, json!({ "member": "m1" }), Some(head));
    let reads_before = app.counted("pointstream_replica_reads_total", &[]);
    let on_replica = query(&app, &member, SCREEN, json!({ "member": "m1" }), Some(head));
    assert!(app.counted("pointstream_replica_reads_total", &[]) > reads_before, "the replica answered");
    assert_eq!(on_replica, on_primary);
    assert_eq!(on_replica["data"]["ledger"]["edges"].as_array().map(Vec::len), Some(7), "{on_replica}");

    // A position that is not a number is refused, and nothing runs.
    let body = json!({ "query": BALANCE, "variables": { "member": "m1" } }).to_string();
    let auth = format!("Bearer {member}");
    let headers =
        [("Content-Type", "application/json"), ("Authorization", auth.as_str()), ("Pointstream-Position", "-3")];
    let refused = app.exchange("POST", "/graphql", &headers, body.as_bytes());
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("BAD_REQUEST"), "{refused:?}");
}
