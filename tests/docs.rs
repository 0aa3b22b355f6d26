//! Every GraphQL example in the README and in `docs/` runs, in order,
//! against a server loaded with `pointstream demo`, so the docs cannot rot.
//!
//! A ```graphql block's first line names the token it runs with
//! (`# token: none`, `admin`, `auditor`, `member <id>` or `staff <store>`);
//! an optional `# variables: {...}` line follows. A block must answer
//! without errors unless the line before its fence is
//! `<!-- expect: CODE -->`. A subscription is started over WebSocket and
//! must have sent an event by the time its file's last block has run.

mod app;

use std::path::{Path, PathBuf};
use std::process::Command;

use api::auth::Role;
use app::{App, Socket, code, next_json, subscribe, token};
use eventstore::scratch::ScratchDatabase;
use serde_json::{Value, json};

/// One runnable example.
#[derive(Debug)]
struct Example {
    /// Where it is, for messages.
    place: String,
    token: Option<String>,
    variables: Value,
    document: String,
    expect: Option<String>,
}

/// The ```graphql blocks of `markdown`, in order.
fn examples(path: &Path, markdown: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let lines: Vec<&str> = markdown.lines().collect();
    let mut index = 0;
    while index < lines.len() {
        if lines[index].trim() != "```graphql" {
            index += 1;
            continue;
        }
        let fence = index;
        let expect = fence
            .checked_sub(1)
            .and_then(|before| lines[before].trim().strip_prefix("<!-- expect:"))
            .and_then(|rest| rest.strip_suffix("-->"))
            .map(|code| code.trim().to_string());
        let mut body = Vec::new();
        index += 1;
        while index < lines.len() && lines[index].trim() != "```" {
            body.push(lines[index].trim_start());
            index += 1;
        }
        let place = format!("{}:{}", path.display(), fence + 1);
        let who = body
            .first()
            .and_then(|line| line.strip_prefix("# token:"))
            .unwrap_or_else(|| panic!("{place}: a ```graphql block starts with `# token: ...`"))
            .trim();
        let token = match who.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["none"] => None,
            ["admin"] => Some(token(Role::Admin, None, None)),
            ["auditor"] => Some(token(Role::Auditor, None, None)),
            ["member", id] => Some(token(Role::Member, Some(id), None)),
            ["staff", store] => Some(token(Role::Staff, None, Some(store))),
            _ => panic!("{place}: unknown token {who:?}"),
        };
        let variables = body
            .get(1)
            .and_then(|line| line.strip_prefix("# variables:"))
            .map(|json| serde_json::from_str(json).unwrap_or_else(|e| panic!("{place}: variables: {e}")))
            .unwrap_or_else(|| json!({}));
        found.push(Example { place, token, variables, document: body.join("\n"), expect });
        index += 1;
    }
    found
}

/// README.md, then every Markdown file under docs/ in name order.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|dir| dir.filter_map(|entry| entry.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    docs.retain(|path| path.extension().is_some_and(|ext| ext == "md"));
    docs.sort();
    std::iter::once(root.join("README.md")).chain(docs).collect()
}

fn is_subscription(document: &str) -> bool {
    document
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .any(|line| line.trim_start().starts_with("subscription"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_graphql_example_in_the_docs_runs_against_the_demo() {
    let db = ScratchDatabase::sqlite();
    let media = media::scratch::scratch_dir();
    let media = media.to_str().expect("a UTF-8 path");
    let demo = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(["--media-dir", media, "demo"])
        .env("DATABASE_URL", &db.url)
        .env("POINTSTREAM_JWT_SECRET", app::SECRET)
        .output()
        .expect("pointstream demo runs");
    assert!(demo.status.success(), "demo: {}", String::from_utf8_lossy(&demo.stderr));
    // A signed digest of the demo, so that the proofs' examples have one.
    let digest = Command::new(env!("CARGO_BIN_EXE_pointstream"))
        .args(["digest", "--sign"])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("pointstream digest runs");
    assert!(digest.status.success(), "digest: {}", String::from_utf8_lossy(&digest.stderr));
    let app = App::spawn(db, &["--media-dir", media]);

    let mut ran = 0;
    for path in documents() {
        let markdown = std::fs::read_to_string(&path).expect("readable");
        let mut subscriptions: Vec<(String, Socket)> = Vec::new();
        for example in examples(&path, &markdown) {
            ran += 1;
            if is_subscription(&example.document) {
                let bearer = example
                    .token
                    .as_deref()
                    .unwrap_or_else(|| panic!("{}: a subscription needs a token", example.place));
                let mut socket = app.socket("graphql-transport-ws", bearer).await;
                subscribe(&mut socket, "graphql-transport-ws", "docs", &example.document).await;
                subscriptions.push((example.place, socket));
                continue;
            }
            let answer = app.graphql(example.token.as_deref(), &example.document, example.variables.clone());
            match &example.expect {
                None => assert!(answer.get("errors").is_none(), "{}: {answer}", example.place),
                Some(expected) => assert_eq!(code(&answer), expected, "{}: {answer}", example.place),
            }
        }
        for (place, mut socket) in subscriptions {
            let event = next_json(&mut socket).await;
            assert_eq!(event["type"], "next", "{place}: {event}");
            assert!(event["payload"].get("errors").is_none(), "{place}: {event}");
        }
    }
    assert!(ran >= 5, "the README's tour has its examples ({ran} ran)");
}

#[test]
fn an_example_without_its_token_line_is_refused() {
    let result = std::panic::catch_unwind(|| examples(Path::new("x.md"), "```graphql\n{ stores { id } }\n```\n"));
    assert!(result.is_err());
    let found = examples(
        Path::new("x.md"),
        "<!-- expect: FORBIDDEN -->\n```graphql\n# token: member bob\n# variables: {\"a\": 1}\n{ x }\n```\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].expect.as_deref(), Some("FORBIDDEN"));
    assert_eq!(found[0].variables, json!({ "a": 1 }));
}

/// The `(target)` of every Markdown link `[text](target)` in `markdown`.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// The anchors GitHub makes of `markdown`'s headings.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for path in documents().into_iter().chain([root.join("ARCHITECTURE.md"), root.join("bench/README.md")]) {
        let markdown = std::fs::read_to_string(&path).expect("readable");
        for target in link_targets(&markdown) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if file.is_empty() { path.clone() } else { path.parent().expect("a folder").join(file) };
            assert!(resolved.exists(), "{}: {target} does not exist", path.display());
            if !anchor.is_empty() && resolved.extension().is_some_and(|ext| ext == "md") {
                let text = std::fs::read_to_string(&resolved).expect("readable");
                assert!(
                    anchors(&text).iter().any(|a| a == anchor),
                    "{}: no heading for #{anchor} in {file}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "the docs link to each other ({checked} links checked)");
}
