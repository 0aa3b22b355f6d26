//! The auditor's tools against an operator who rewrites the database: the
//! signed digests and `audit verify --digest`, run as a user runs them, on
//! SQLite and MariaDB. Each tampering of the log is caught, at the position
//! it starts from (exactly where the stored tree still matches what was
//! signed; else within the positions after the last digest that holds).

#[path = "../eventstore/tests/support/mod.rs"]
#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use domain::Wallet;
use eventstore::chain::{HashedFields, event_hash};
use eventstore::scratch::ScratchDatabase;
use eventstore::{CommandContext, EventStore, RecordedEvent};
use migrations::tables::{Events, MerkleHead, MerkleNodes};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use support::{Backend, earn, open, quiet, scratch, world};

/// A log with two signed digests, published where the auditor keeps them.
struct Audited {
    db: ScratchDatabase,
    store: EventStore,
    dir: PathBuf,
    key_file: PathBuf,
    public_key: String,
    /// Sizes of the two digests.
    first: u64,
    second: u64,
}

impl Audited {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pointstream"))
            .args(args)
            .env("DATABASE_URL", &self.db.url)
            .env("POINTSTREAM_MEDIA_DIR", self.dir.join("media"))
            .env("POINTSTREAM_DIGEST_KEY_FILE", &self.key_file)
            .env("RUST_LOG", "warn")
            .output()
            .expect("the binary runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "pointstream {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Writes what `args` prints to a file of the test's own.
    fn save(&self, name: &str, args: &[&str]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, self.ok(args)).expect("writes");
        path
    }

    /// `audit verify --digest` on the database: (exit code, report).
    fn audit(&self, digests: &Path) -> (i32, String) {
        let digests = digests.to_string_lossy().into_owned();
        let output = self.run(&["audit", "verify", "--digest", &digests, "--public-key", &self.public_key]);
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The same offline, on an export of the log as it is now.
    fn audit_offline(&self, digests: &Path) -> (i32, serde_json::Value) {
        let export = self.save("export.jsonl", &["log", "--export"]);
        let (digests, export) = (digests.to_string_lossy().into_owned(), export.to_string_lossy().into_owned());
        let output = self.run(&[
            "audit",
            "verify",
            "--json",
            "--digest",
            &digests,
            "--public-key",
            &self.public_key,
            "--events",
            &export,
        ]);
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("a JSON report: {output:?}"));
        (output.status.code().unwrap_or(-1), report)
    }

    async fn sql(&self, statement: impl sea_orm::StatementBuilder) {
        self.store.db().execute(&statement).await.expect("the tampering statement runs");
    }

    async fn bob(&self) -> Vec<RecordedEvent> {
        self.store.read_stream("Wallet", "bob").await.expect("reads")
    }
}

/// Ann and Bob, 12 purchases of Bob's, a digest, 6 more, a second digest.
async fn audited(backend: Backend) -> Option<Audited> {
    let db = scratch(backend).await?;
    let dir = std::env::temp_dir().join(format!("pointstream-auditing-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a directory of the test's own");
    let key_file = dir.join("digest.key");
    let mut audited =
        Audited { store: open(&db, quiet()).await, db, dir, key_file, public_key: String::new(), first: 0, second: 0 };
    let keygen = audited.ok(&["keygen", "--out", &audited.key_file.to_string_lossy()]);
    let keygen: serde_json::Value = serde_json::from_str(&keygen).expect("keygen prints JSON");
    audited.public_key = keygen["public_key"].as_str().expect("a public key").to_string();
    world(&audited.store, &["ann", "bob"]).await;
    let earn_times = |from: u64, to: u64| {
        let store = audited.store.clone();
        async move {
            for i in from..to {
                store
                    .execute::<Wallet>("bob", earn("bob", &format!("r{i}"), 1_000 + i), CommandContext::default())
                    .await
                    .expect("the purchase lands");
            }
        }
    };
    earn_times(0, 12).await;
    let first: serde_json::Value = serde_json::from_str(&audited.ok(&["digest", "--sign"])).expect("a digest");
    earn_times(12, 18).await;
    let second: serde_json::Value = serde_json::from_str(&audited.ok(&["digest", "--sign"])).expect("a digest");
    audited.first = first["tree_size"].as_u64().expect("a size");
    audited.second = second["tree_size"].as_u64().expect("a size");
    assert!(audited.first < audited.second && audited.second == audited.store.head());
    Some(audited)
}

fn findings(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["findings"].as_array().cloned().unwrap_or_default()
}

/// The offline report holds a mismatch of the first digest whose range
/// holds `position`.
fn offline_names(report: &serde_json::Value, position: u64) -> bool {
    findings(report).iter().any(|f| {
        f["kind"] == "root_mismatch"
            && f["from"].as_u64().is_some_and(|from| from <= position)
            && f["to"].as_u64().is_some_and(|to| to >= position)
    })
}

async fn an_untouched_log_matches_its_digests(backend: Backend) {
    let Some(audited) = audited(backend).await else { return };
    let digests = audited.save("digests.jsonl", &["digest", "--all"]);
    assert_eq!(std::fs::read_to_string(&digests).expect("reads").lines().count(), 2);
    let (code, report) = audited.audit(&digests);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("0 problems"), "{report}");
    let (code, report) = audited.audit_offline(&digests);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["events"].as_u64(), Some(audited.second));
    // A key other than the one pinned: every digest is refused.
    let other = audited.dir.join("other.key");
    let other = audited.ok(&["keygen", "--out", &other.to_string_lossy()]);
    let other: serde_json::Value = serde_json::from_str(&other).expect("JSON");
    let output = audited.run(&[
        "audit",
        "verify",
        "--digest",
        &digests.to_string_lossy(),
        "--public-key",
        other["public_key"].as_str().expect("a key"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("not the key given"), "{output:?}");
    // The proofs the CLI prints verify against the digests.
    let digest: verify::Digest =
        serde_json::from_str(&audited.ok(&["digest", "--tree-size", &audited.first.to_string()])).expect("a digest");
    let position = audited.bob().await[3].position;
    let proof: serde_json::Value = serde_json::from_str(&audited.ok(&[
        "proof",
        "inclusion",
        "--position",
        &position.to_string(),
        "--tree-size",
        &audited.first.to_string(),
    ]))
    .expect("JSON");
    let hashes = |value: &serde_json::Value| -> Vec<verify::Hash> {
        value["hashes"]
            .as_array()
            .expect("hashes")
            .iter()
            .map(|h| verify::parse_hash(h.as_str().expect("hex")).expect("a hash"))
            .collect()
    };
    let leaf = verify::parse_hash(proof["leaf_hash"].as_str().expect("hex")).expect("a hash");
    let root = digest.root().expect("a root");
    assert_eq!(verify::verify_inclusion(position - 1, audited.first, &leaf, &hashes(&proof), &root), Ok(()));
    let later: verify::Digest = serde_json::from_str(&audited.ok(&["digest"])).expect("the latest digest");
    let consistency: serde_json::Value = serde_json::from_str(&audited.ok(&[
        "proof",
        "consistency",
        "--from",
        &audited.first.to_string(),
        "--to",
        &audited.second.to_string(),
    ]))
    .expect("JSON");
    let later_root = later.root().expect("a root");
    assert_eq!(
        verify::verify_consistency(audited.first, audited.second, &root, &later_root, &hashes(&consistency)),
        Ok(())
    );
}

async fn an_edited_event_is_named_by_its_position(backend: Backend) {
    let Some(audited) = audited(backend).await else { return };
    let digests = audited.save("digests.jsonl", &["digest", "--all"]);
    let target = audited.bob().await.remove(4);
    assert!(target.position <= audited.first);
    audited
        .sql(
            Query::update()
                .table(Events::Table)
                .value(Events::Payload, target.payload.replace("\"amount_paid\":", "\"amount_paid\":9"))
                .and_where(Expr::col(Events::Position).eq(target.position as i64))
                .to_owned(),
        )
        .await;
    let (code, report) = audited.audit(&digests);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!("first position where the log and the digests disagree: {}", target.position)),
        "{report}"
    );
    let (code, report) = audited.audit_offline(&digests);
    assert_eq!(code, 1);
    assert!(offline_names(&report, target.position), "{report}");
}

async fn a_deleted_event_is_a_gap_at_its_position(backend: Backend) {
    let Some(audited) = audited(backend).await else { return };
    let digests = audited.save("digests.jsonl", &["digest", "--all"]);
    let target = audited.bob().await.remove(6);
    audited
        .sql(
            Query::delete()
                .from_table(Events::Table)
                .and_where(Expr::col(Events::Position).eq(target.position as i64))
                .to_owned(),
        )
        .await;
    let (code, report) = audited.audit(&digests);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!("the log skips from position {} to {}", target.position, target.position + 1)),
        "{report}"
    );
    let (code, report) = audited.audit_offline(&digests);
    assert_eq!(code, 1);
    assert!(
        findings(&report)
            .iter()
            .any(|f| f["kind"] == "position_gap" && f["expected"].as_u64() == Some(target.position)),
        "{report}"
    );
}

/// Rewrites Bob's wallet from its `from`th event on (0-based), each amount
/// changed and the stream's hash chain recomputed, so the chains check.
async fn rewrite_bob(audited: &Audited, from: usize) -> u64 {
    let events = audited.bob().await;
    let mut previous = if from == 0 { String::new() } else { events[from - 1].hash.clone() };
    for event in &events[from..] {
        let payload = event.payload.replace("\"points\":", "\"points\":1");
        let mut rewritten = event.clone();
        rewritten.payload = payload.clone();
        let hash = event_hash(&previous, &HashedFields::from(&rewritten));
        audited
            .sql(
                Query::update()
                    .table(Events::Table)
                    .value(Events::Payload, payload)
                    .value(Events::Hash, hash.as_str())
                    .and_where(Expr::col(Events::Position).eq(event.position as i64))
                    .to_owned(),
            )
            .await;
        previous = hash;
    }
    events[from].position
}

async fn a_rewritten_stream_with_its_chain_recomputed_is_caught(backend: Backend) {
    let Some(audited) = audited(backend).await else { return };
    let digests = audited.save("digests.jsonl", &["digest", "--all"]);
    let first_rewritten = rewrite_bob(&audited, 5).await;
    // The hash chains hold: only the digests see it.
    let chains: serde_json::Value =
        serde_json::from_str(&audited.ok_or_report(&["audit", "verify", "--json"])).expect("JSON");
    assert_eq!(chains["chain"]["breaks"].as_array().map(Vec::len), Some(0), "{chains}");
    let (code, report) = audited.audit(&digests);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!("first position where the log and the digests disagree: {first_rewritten}")),
        "{report}"
    );
    let (_, report) = audited.audit_offline(&digests);
    assert!(offline_names(&report, first_rewritten), "{report}");
}

async fn a_rewritten_tail_signed_again_is_a_fork(backend: Backend) {
    let Some(audited) = audited(backend).await else { return };
    // The auditor kept the digests published so far.
    let kept = audited.save("kept.jsonl", &["digest", "--all"]);
    // The operator rewrites Bob's history from his 3rd purchase on, rebuilds
    // the tree over it and signs the result with the same key.
    let first_rewritten = rewrite_bob(&audited, 3).await;
    audited.sql(Query::delete().from_table(MerkleNodes::Table).to_owned()).await;
    audited.sql(Query::delete().from_table(migrations::tables::LogDigests::Table).to_owned()).await;
    audited
        .sql(
            Query::update()
                .table(MerkleHead::Table)
                .value(MerkleHead::Size, 0)
                .and_where(Expr::col(MerkleHead::Id).eq(1))
                .to_owned(),
        )
        .await;
    let resigned = audited.save("resigned.jsonl", &["digest", "--sign"]);
    // Alone, the new digest matches the rewritten log (the read models,
    // built from the old one, still differ from a replay).
    let (_, report) = audited.audit(&resigned);
    assert!(!report.contains("disagree") && !report.contains("inconsistent"), "{report}");
    // With what the auditor kept: a fork at the same size, and the earlier
    // digest inconsistent with the later one.
    let both = audited.dir.join("both.jsonl");
    let text = std::fs::read_to_string(&kept).expect("reads") + &std::fs::read_to_string(&resigned).expect("reads");
    std::fs::write(&both, text).expect("writes");
    let (code, report) = audited.audit(&both);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains(&format!("two digests of {} events disagree", audited.second)), "{report}");
    assert!(
        report.contains(&format!("the digests of {} and {} events are inconsistent", audited.first, audited.second)),
        "{report}"
    );
    let (_, report) = audited.audit_offline(&both);
    assert!(findings(&report).iter().any(|f| f["kind"] == "fork"), "{report}");
    assert!(offline_names(&report, first_rewritten), "{report}");
    assert!(findings(&report).iter().any(|f| f["kind"] == "inconsistent"), "{report}");
}

impl Drop for Audited {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Audited {
    /// Output of a command that may exit 1 (an audit that finds problems).
    fn ok_or_report(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout).into_owned()
    }
}

on_both_backends!(
    an_untouched_log_matches_its_digests,
    an_edited_event_is_named_by_its_position,
    a_deleted_event_is_a_gap_at_its_position,
    a_rewritten_stream_with_its_chain_recomputed_is_caught,
    a_rewritten_tail_signed_again_is_a_fork,
);
