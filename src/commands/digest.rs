//! `pointstream keygen`, `pointstream digest` and `pointstream proof`: the
//! signing key, the signed digests of the log and Merkle proofs, as JSON.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use eventstore::EventStore;
use eventstore::merkle::{self, Signer};

use crate::cli::Proof;

/// Writes a fresh key to `out` (never over an existing file; readable by
/// its owner only) and prints its public key and key id.
pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let (signer, seed) = Signer::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).with_context(|| format!("cannot create {}", out.display()))?;
    writeln!(file, "# pointstream digest signing key (Ed25519 seed); keep it secret")?;
    writeln!(file, "{seed}")?;
    file.sync_all()?;
    println!("{}", public_key(&signer));
    Ok(ExitCode::SUCCESS)
}

fn public_key(signer: &Signer) -> serde_json::Value {
    serde_json::json!({ "public_key": signer.public_key().to_hex(), "key_id": signer.public_key().id() })
}

/// What `pointstream digest` was asked for.
pub struct DigestRequest {
    pub sign: bool,
    pub all: bool,
    pub tree_size: Option<u64>,
    pub public_key: bool,
}

/// Prints the latest digest (or the one asked for, or all), signing one first with `sign`.
pub async fn digest(
    store: &EventStore,
    signer: &Signer,
    batch_size: u64,
    request: DigestRequest,
) -> anyhow::Result<ExitCode> {
    if request.public_key {
        println!("{}", public_key(signer));
        return Ok(ExitCode::SUCCESS);
    }
    if request.sign {
        projections::notary::sign_now(store, signer, batch_size).await?;
    }
    let db = store.db();
    let digests = if request.all {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |d: &merkle::Digest| d.tree_size);
            let page = merkle::digests_after(db, after, 1_000).await?;
            if page.is_empty() {
                break all;
            }
            all.extend(page);
        }
    } else if let Some(size) = request.tree_size {
        vec![merkle::digest_at(db, size).await?.with_context(|| format!("no digest of {size} events was signed"))?]
    } else {
        vec![merkle::latest_digest(db).await?.context("no digest has been signed yet (`pointstream digest --sign`)")?]
    };
    let mut out = std::io::stdout().lock();
    for digest in digests {
        writeln!(out, "{}", serde_json::to_string(&digest)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints an inclusion or consistency proof.
pub async fn proof(store: &EventStore, proof: Proof) -> anyhow::Result<ExitCode> {
    let db = store.db();
    let hex_all = |hashes: Vec<merkle::Hash>| hashes.iter().map(hex::encode).collect::<Vec<_>>();
    let answer = match proof {
        Proof::Inclusion { position, tree_size } => {
            let tree_size = match tree_size {
                Some(size) => size,
                None => merkle::latest_digest(db).await?.context("no digest has been signed yet")?.tree_size,
            };
            let index = position.checked_sub(1).context("positions start at 1")?;
            let (leaf, path) = merkle::inclusion_proof(db, index, tree_size).await?;
            serde_json::json!({
                "position": position,
                "leaf_index": index,
                "tree_size": tree_size,
                "leaf_hash": hex::encode(leaf),
                "hashes": hex_all(path),
            })
        }
        Proof::Consistency { from, to } => {
            let path = merkle::consistency_proof(db, from, to).await?;
            serde_json::json!({ "from_size": from, "to_size": to, "hashes": hex_all(path) })
        }
    };
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}
