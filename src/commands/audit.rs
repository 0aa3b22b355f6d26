//! `pointstream audit verify`: every hash chain recomputed and the log
//! replayed in memory against every read model; with `--digest`, signed
//! digests of the log checked against it too, from the database or offline
//! from an export.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use eventstore::EventStore;
use verify::{Digest, LogReport, PublicKey};

/// Prints the audit's report (as JSON with `json`, else its problems and a
/// summary line); exits 1 when the audit finds a problem. With `digests`,
/// checks them (signed by `public_key`) against the database's log too.
pub async fn verify(
    store: EventStore,
    json: bool,
    digest_files: &[PathBuf],
    public_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let report = projections::audit(&store).await?;
    let digests = match digest_files {
        [] => None,
        files => {
            let (digests, key) = read_digests(files, public_key)?;
            Some(eventstore::merkle::check_log(store.db(), &digests, &key).await?)
        }
    };
    let clean = report.is_clean() && digests.as_ref().is_none_or(LogReport::is_clean);
    if json {
        let mut value = serde_json::to_value(&report)?;
        if let (Some(digests), Some(object)) = (&digests, value.as_object_mut()) {
            object.insert("digests".into(), serde_json::to_value(digests)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let problems = report.problems();
        for problem in &problems {
            println!("{problem}");
        }
        if let Some(digests) = &digests {
            print_digest_findings(digests);
        }
        println!(
            "{} events in {} streams checked, {} read models compared, {} problems",
            report.chain.events,
            report.chain.streams,
            report.projections.len(),
            problems.len() + digests.as_ref().map_or(0, |d| d.findings.len())
        );
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `audit verify --digest ... --events EXPORT`: no database, only the
/// digests, the pinned key and the exported log.
pub fn verify_offline(
    json: bool,
    digest_files: &[PathBuf],
    public_key: Option<&str>,
    events: &Path,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!digest_files.is_empty(), "--events checks the log against digests: give at least one --digest");
    let (digests, key) = read_digests(digest_files, public_key)?;
    let reader: Box<dyn BufRead> = if events == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(events).with_context(|| format!("cannot open {}", events.display()))?,
        ))
    };
    let lines = reader.lines().enumerate().filter(|(_, line)| !matches!(line, Ok(l) if l.trim().is_empty()));
    let parsed = lines.map(|(number, line)| {
        let line = line.with_context(|| format!("cannot read {}", events.display()))?;
        serde_json::from_str::<verify::ExportedEvent>(&line)
            .with_context(|| format!("{} line {}: not an exported event", events.display(), number + 1))
    });
    let report = verify::verify_log(&digests, &key, parsed)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_digest_findings(&report);
        println!(
            "{} events checked against {} digests, {} problems",
            report.events,
            report.digests,
            report.findings.len()
        );
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_digest_findings(report: &LogReport) {
    for finding in &report.findings {
        println!("{finding}");
    }
    if let Some(position) = report.first_disagreement() {
        println!("first position where the log and the digests disagree: {position}");
    }
}

/// The digests in `files` (one or more JSON documents each) and the pinned key.
fn read_digests(files: &[PathBuf], public_key: Option<&str>) -> anyhow::Result<(Vec<Digest>, PublicKey)> {
    let public_key =
        public_key.context("--digest needs --public-key: the key you pinned (64 hex digits, or a file)")?;
    let key = PublicKey::from_hex(public_key)
        .or_else(|| std::fs::read_to_string(public_key).ok().and_then(|text| key_from_text(&text)))
        .with_context(|| format!("--public-key {public_key}: neither 64 hex digits nor a file holding them"))?;
    let mut digests = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for digest in serde_json::Deserializer::from_str(&text).into_iter::<Digest>() {
            digests.push(digest.with_context(|| format!("{}: not a digest document", file.display()))?);
        }
    }
    Ok((digests, key))
}

/// A public key in a file: bare hex, or `pointstream keygen`'s JSON line.
fn key_from_text(text: &str) -> Option<PublicKey> {
    PublicKey::from_hex(text).or_else(|| {
        let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        PublicKey::from_hex(value.get("public_key")?.as_str()?)
    })
}
