//! `pointstream serve` as a newcomer runs it: embedded SQLite, a free port,
//! GraphiQL, health, a development token that works.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn http(address: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("the server accepts connections");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("a read timeout");
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    response
}

fn post_graphql(address: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    http(
        address,
        &format!(
            "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{auth}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn serve_answers_graphql_graphiql_and_health_on_sqlite() {
    let db = eventstore::scratch::ScratchDatabase::sqlite();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env_remove("POINTSTREAM_JWT_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = lines.next().expect("a banner").expect("a line");
    let address = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/graphql"))
        .expect("the banner names the GraphiQL URL")
        .to_string();
    let token_line = lines.next().expect("a token line").expect("a line");
    let token = token_line.strip_prefix("development admin token: ").expect("a development token").to_string();

    let health = http(&address, &format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"));
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
    let ready = http(&address, &format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"));
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let graphiql = http(&address, &format!("GET /graphql HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"));
    assert!(graphiql.starts_with("HTTP/1.1 200") && graphiql.contains("graphiql"), "GraphiQL is served");

    let metrics = http(&address, &format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"));
    assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("pointstream_projection_lag_events"), "{metrics}");
    let stores = post_graphql(&address, None, r#"{"query":"{ stores { id } }"}"#);
    assert!(stores.contains(r#"{"data":{"stores":[]}}"#), "{stores}");
    let balances = post_graphql(&address, Some(&token), r#"{"query":"{ balances(member: \"ann\") { balance } }"}"#);
    assert!(balances.contains(r#"{"data":{"balances":[]}}"#), "the development token is accepted: {balances}");
    let anonymous = post_graphql(&address, None, r#"{"query":"{ balances(member: \"ann\") { balance } }"}"#);
    assert!(anonymous.contains("UNAUTHENTICATED"), "{anonymous}");
    let malformed = post_graphql(&address, None, "{not json");
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");

    child.kill().expect("stops");
    child.wait().expect("reaped");
}
