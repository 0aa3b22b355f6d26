//! The signed digests of the log and Merkle proofs: what lets an auditor, or
//! a member's app, check the log without trusting the operator (see the
//! `verify` crate and `verify/js/`).

use async_graphql::{Context, Result, SimpleObject};
use eventstore::merkle::{self, ProofUnavailable};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Query};

use super::scalars::{DateTime, Long};
use super::{coded, internal, state};
use crate::replicas::read_db;

/// A signed statement by the server: the first `treeSize` events of the log
/// have Merkle root `rootHash`. Check it with the key you pinned, never one
/// sent along with it.
#[derive(SimpleObject, Clone)]
pub struct LogDigest {
    /// Events the tree covers: positions 1 to `treeSize`.
    pub tree_size: Long,
    /// The root hash, hex.
    pub root_hash: String,
    /// When it was signed.
    pub timestamp: DateTime,
    /// The same, in microseconds since the Unix epoch (what is signed).
    pub timestamp_us: Long,
    /// The first 8 bytes of the SHA-256 of the signing key, hex.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
    /// The digest's JSON document, as published and as verifiers take it.
    pub json: String,
}

impl From<merkle::Digest> for LogDigest {
    fn from(digest: merkle::Digest) -> Self {
        LogDigest {
            tree_size: digest.tree_size.into(),
            root_hash: digest.root_hash.clone(),
            timestamp: DateTime::from_micros(digest.timestamp_us),
            timestamp_us: Long(digest.timestamp_us),
            key_id: digest.key_id.clone(),
            signature: digest.signature.clone(),
            json: serde_json::to_string(&digest).unwrap_or_default(),
        }
    }
}

/// That the event at `position` is leaf `leafIndex` of the tree of
/// `treeSize` events (RFC 9162 inclusion proof, deepest sibling first).
#[derive(SimpleObject, Clone)]
pub struct InclusionProof {
    pub position: Long,
    pub leaf_index: Long,
    pub tree_size: Long,
    /// The leaf's hash, hex.
    pub leaf_hash: String,
    /// The audit path, hex.
    pub hashes: Vec<String>,
}

/// That the tree of `toSize` events extends the tree of `fromSize` (RFC 9162
/// consistency proof).
#[derive(SimpleObject, Clone)]
pub struct ConsistencyProof {
    pub from_size: Long,
    pub to_size: Long,
    /// The proof, hex.
    pub hashes: Vec<String>,
}

/// One of a member's wallet events as its leaf covers it, with its proof.
#[derive(SimpleObject, Clone)]
pub struct ProvenEvent {
    pub position: Long,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: Long,
    pub event_type: String,
    pub event_version: i32,
    /// The payload exactly as stored (JSON text).
    pub payload: String,
    /// SHA-256 of the metadata as stored, hex: the leaf covers who made the
    /// change and from where without showing it.
    pub metadata_hash: String,
    pub recorded_at_us: Long,
    pub proof: InclusionProof,
}

/// A member's wallet events up to the latest digest, each with its proof in
/// that digest: a member's app checks them all with `verify/js`.
#[derive(SimpleObject, Clone)]
pub struct LedgerProof {
    /// The digest the proofs lead to (null before the first is signed).
    pub digest: Option<LogDigest>,
    /// The public key of this server's notary, hex, if it runs here: for
    /// pinning once, never for checking what came with it.
    pub public_key: Option<String>,
    /// Events of the member's wallet after `after`, in order.
    pub entries: Vec<ProvenEvent>,
    /// More entries follow within the digest (ask again after the last).
    pub has_more: bool,
    /// The member's wallet events after the digest, not provable until the next.
    pub pending: Long,
}

fn unavailable(err: ProofUnavailable) -> async_graphql::Error {
    match err {
        ProofUnavailable::BeyondTree { .. } | ProofUnavailable::OutOfRange(_) => {
            coded("BAD_USER_INPUT", err.to_string())
        }
        ProofUnavailable::Store(err) => internal(err),
    }
}

fn hex_all(hashes: &[merkle::Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// The latest digest, or the one of exactly `tree_size` events.
pub async fn log_digest(ctx: &Context<'_>, tree_size: Option<Long>) -> Result<Option<LogDigest>> {
    let db = &read_db(ctx).await?;
    let digest = match tree_size {
        Some(Long(size)) => merkle::digest_at(db, Ord::max(size, 0) as u64).await,
        None => merkle::latest_digest(db).await,
    };
    Ok(digest.map_err(internal)?.map(LogDigest::from))
}

/// Up to `first` digests of more than `after_size` events, smallest first.
pub async fn log_digests(ctx: &Context<'_>, after_size: Option<Long>, first: usize) -> Result<Vec<LogDigest>> {
    let after = after_size.map_or(0, |Long(size)| Ord::max(size, 0) as u64);
    let digests = merkle::digests_after(&read_db(ctx).await?, after, first as u64).await.map_err(internal)?;
    Ok(digests.into_iter().map(LogDigest::from).collect())
}

/// The tree size a proof is asked in: the one given, else the latest digest's.
async fn tree_size_or_latest(ctx: &Context<'_>, tree_size: Option<Long>) -> Result<u64> {
    match tree_size {
        Some(Long(size)) if size > 0 => Ok(size as u64),
        Some(_) => Err(coded("BAD_USER_INPUT", "treeSize must be positive")),
        None => merkle::latest_digest(&read_db(ctx).await?)
            .await
            .map_err(internal)?
            .map(|digest| digest.tree_size)
            .ok_or_else(|| coded("BAD_USER_INPUT", "no digest has been signed yet")),
    }
}

/// The inclusion proof of the event at `position`.
pub async fn inclusion_proof(ctx: &Context<'_>, position: Long, tree_size: Option<Long>) -> Result<InclusionProof> {
    let tree_size = tree_size_or_latest(ctx, tree_size).await?;
    let index = u64::try_from(position.0 - 1).map_err(|_| coded("BAD_USER_INPUT", "positions start at 1"))?;
    let (leaf, path) = merkle::inclusion_proof(&read_db(ctx).await?, index, tree_size).await.map_err(unavailable)?;
    Ok(InclusionProof {
        position,
        leaf_index: index.into(),
        tree_size: tree_size.into(),
        leaf_hash: hex::encode(leaf),
        hashes: hex_all(&path),
    })
}

/// The consistency proof between two tree sizes.
pub async fn consistency_proof(ctx: &Context<'_>, from_size: Long, to_size: Long) -> Result<ConsistencyProof> {
    let (Ok(from), Ok(to)) = (u64::try_from(from_size.0), u64::try_from(to_size.0)) else {
        return Err(coded("BAD_USER_INPUT", "sizes are not negative"));
    };
    let path = merkle::consistency_proof(&read_db(ctx).await?, from, to).await.map_err(unavailable)?;
    Ok(ConsistencyProof { from_size, to_size, hashes: hex_all(&path) })
}

/// `member`'s wallet events after `after`, up to the latest digest, `first`
/// of them, each with its proof.
pub async fn ledger_proof(ctx: &Context<'_>, member: &str, after: u64, first: usize) -> Result<LedgerProof> {
    let state = state(ctx)?;
    let db = &read_db(ctx).await?;
    let public_key = state.notary_key.as_ref().map(|key| key.to_hex());
    let Some(digest) = merkle::latest_digest(db).await.map_err(internal)? else {
        let pending = wallet_events_after(db, member, 0).await?;
        return Ok(LedgerProof { digest: None, public_key, entries: Vec::new(), has_more: false, pending });
    };
    let filter = eventstore::LogFilter {
        aggregate_type: Some("Wallet".into()),
        aggregate_id: Some(member.to_string()),
        event_type: None,
    };
    let mut events = state.store.read_matching(after, first as u64 + 1, &filter).await.map_err(internal)?;
    events.retain(|event| event.position <= digest.tree_size);
    let has_more = events.len() > first;
    events.truncate(first);
    let indices: Vec<u64> = events.iter().map(|event| event.position - 1).collect();
    let proofs = merkle::inclusion_proofs(db, &indices, digest.tree_size).await.map_err(unavailable)?;
    let entries = events
        .iter()
        .zip(proofs)
        .map(|(event, (leaf, path))| ProvenEvent {
            position: event.position.into(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence.into(),
            event_type: event.event_type.clone(),
            event_version: i32::try_from(event.event_version).unwrap_or(i32::MAX),
            payload: event.payload.clone(),
            metadata_hash: hex::encode(verify::metadata_hash(&event.metadata)),
            recorded_at_us: Long(event.recorded_at_us),
            proof: InclusionProof {
                position: event.position.into(),
                leaf_index: (event.position - 1).into(),
                tree_size: digest.tree_size.into(),
                leaf_hash: hex::encode(leaf),
                hashes: hex_all(&path),
            },
        })
        .collect();
    let pending = wallet_events_after(db, member, digest.tree_size).await?;
    Ok(LedgerProof { digest: Some(digest.into()), public_key, entries, has_more, pending })
}

/// How many of `member`'s wallet events are after `position`.
async fn wallet_events_after(db: &impl ConnectionTrait, member: &str, position: u64) -> Result<Long> {
    use migrations::tables::Events;
    let row = db
        .query_one(
            Query::select()
                .expr_as(Expr::col(Events::Position).count(), "pending")
                .from(Events::Table)
                .and_where(Expr::col(Events::AggregateType).eq("Wallet"))
                .and_where(Expr::col(Events::AggregateId).eq(member))
                .and_where(Expr::col(Events::Position).gt(position as i64)),
        )
        .await
        .map_err(internal)?;
    let pending = match row {
        Some(row) => row.try_get::<i64>("", "pending").map_err(internal)?,
        None => 0,
    };
    Ok(Long(pending))
}
