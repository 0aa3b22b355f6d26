//! The Merkle tree over the whole log, and the signed digests of its root.
//!
//! The tree has the shape of RFC 9162 (see the `verify` crate, which checks
//! everything served here): leaf `i` is the event at position `i + 1`. It is
//! stored as every perfect subtree it has (`merkle_nodes`: level 0 the
//! leaves, level `l` index `i` the root of leaves `i·2^l .. (i+1)·2^l`), so
//! the root of any size, an inclusion proof or a consistency proof is one
//! query of O(log n) rows, never a rebuild.
//!
//! [`extend`] appends the events after the tree's size in one transaction
//! with the new size, guarded by the size it read (two extenders never both
//! succeed). A [`Signer`] signs [`Digest`]s of the root, stored in
//! `log_digests` and published by whoever runs the notary.

use ed25519_dalek::{Signer as _, SigningKey};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, SqlErr, TransactionTrait};
use sha2::{Digest as _, Sha256};

use migrations::tables::{LogDigests, MerkleHead, MerkleNodes};

use crate::error::EventStoreError;
use crate::log;
use crate::record::RecordedEvent;

pub use verify::{Digest, Finding, Hash, LogReport, LogVerifier, PublicKey, RootBuilder};

/// An event's leaf hash.
pub fn leaf_hash(event: &RecordedEvent) -> Hash {
    verify::leaf_hash(&verify::leaf_input(&event.leaf()))
}

/// The number of leaves in the stored tree (it covers positions 1..=size).
pub async fn size(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let row = db
        .query_one(
            Query::select().column(MerkleHead::Size).from(MerkleHead::Table).and_where(Expr::col(MerkleHead::Id).eq(1)),
        )
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("merkle_head row 1 (run the migrations)".into()))?;
    Ok(row.try_get::<i64>("", "size")? as u64)
}

/// What one [`extend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extended {
    /// The tree now has `size` leaves, `added` of them by this call.
    Grown { size: u64, added: u64 },
    /// Another process extended the tree first; nothing was written.
    Raced,
    /// The log has no event at this position though later ones exist
    /// (events were deleted): the tree stops before it.
    Hole(u64),
}

/// Rows per INSERT of nodes.
const NODES_PER_INSERT: usize = 500;

/// Appends up to `max` events after the tree's stored size. `builder` holds
/// the tree's frontier between calls (`None`: read it from the database);
/// it is left matching what is stored.
pub async fn extend(
    db: &DatabaseConnection,
    builder: &mut Option<RootBuilder>,
    max: u64,
) -> Result<Extended, EventStoreError> {
    let stored = size(db).await?;
    let tree = match builder.take() {
        Some(tree) if tree.size() == stored => tree,
        _ => load(db, stored).await?,
    };
    let events = log::read_from(db, stored, max).await?;
    let mut nodes: Vec<(u32, u64, Hash)> = Vec::with_capacity(events.len() * 2);
    let mut next = tree.clone();
    let mut hole = None;
    for event in &events {
        if event.position != next.size() + 1 {
            hole = Some(next.size() + 1);
            break;
        }
        next.push_nodes(leaf_hash(event), |level, index, hash| nodes.push((level, index, *hash)));
    }
    if next.size() == stored {
        *builder = Some(tree);
        return Ok(hole.map_or(Extended::Grown { size: stored, added: 0 }, Extended::Hole));
    }
    let txn = db.begin().await?;
    let written = async {
        for chunk in nodes.chunks(NODES_PER_INSERT) {
            let mut insert = Query::insert();
            insert.into_table(MerkleNodes::Table).columns([
                MerkleNodes::Level,
                MerkleNodes::NodeIndex,
                MerkleNodes::Hash,
            ]);
            for (level, index, hash) in chunk {
                insert.values_panic([(*level as i32).into(), (*index as i64).into(), hex::encode(hash).into()]);
            }
            txn.execute(&insert).await?;
        }
        let update = Query::update()
            .table(MerkleHead::Table)
            .value(MerkleHead::Size, next.size() as i64)
            .and_where(Expr::col(MerkleHead::Id).eq(1))
            .and_where(Expr::col(MerkleHead::Size).eq(stored as i64))
            .to_owned();
        Ok::<_, DbErr>(txn.execute(&update).await?.rows_affected() == 1)
    }
    .await;
    match written {
        Ok(true) => {
            txn.commit().await?;
            let grown = next.size();
            *builder = Some(next);
            Ok(hole.map_or(Extended::Grown { size: grown, added: grown - stored }, Extended::Hole))
        }
        Ok(false) => {
            txn.rollback().await?;
            Ok(Extended::Raced)
        }
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            txn.rollback().await?;
            Ok(Extended::Raced)
        }
        Err(err) => Err(err.into()),
    }
}

/// The frontier of the stored tree of `size` leaves.
async fn load(db: &impl ConnectionTrait, size: u64) -> Result<RootBuilder, EventStoreError> {
    let pieces = pieces(0, size);
    let hashes = nodes(db, &pieces).await?;
    let frontier = pieces.iter().map(|piece| hashes.get(piece).copied()).collect::<Option<Vec<_>>>();
    frontier
        .and_then(|frontier| RootBuilder::from_frontier(size, frontier))
        .ok_or_else(|| missing(format!("the tree's frontier at size {size}")))
}

fn missing(what: String) -> EventStoreError {
    EventStoreError::Database(DbErr::RecordNotFound(format!("{what} is not in merkle_nodes")))
}

/// The perfect subtrees `(level, index)` that leaves `start..end` are made
/// of, largest first, when `start` is aligned as every range of an RFC 9162
/// tree is.
fn pieces(mut start: u64, end: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    while start < end {
        let fits = 63 - (end - start).leading_zeros();
        let level = if start == 0 { fits } else { Ord::min(fits, start.trailing_zeros()) };
        out.push((level, start >> level));
        start += 1 << level;
    }
    out
}

/// The stored hashes of `keys`.
async fn nodes(
    db: &impl ConnectionTrait,
    keys: &[(u32, u64)],
) -> Result<std::collections::HashMap<(u32, u64), Hash>, DbErr> {
    let mut found = std::collections::HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(200) {
        let mut any = Condition::any();
        for (level, index) in chunk {
            any = any.add(
                Expr::col(MerkleNodes::Level)
                    .eq(*level as i32)
                    .and(Expr::col(MerkleNodes::NodeIndex).eq(*index as i64)),
            );
        }
        let rows = db
            .query_all(
                Query::select()
                    .columns([MerkleNodes::Level, MerkleNodes::NodeIndex, MerkleNodes::Hash])
                    .from(MerkleNodes::Table)
                    .cond_where(any),
            )
            .await?;
        for row in rows {
            let level = row.try_get::<i32>("", "level")? as u32;
            let index = row.try_get::<i64>("", "node_index")? as u64;
            let hash: String = row.try_get("", "hash")?;
            if let Some(hash) = verify::parse_hash(&hash) {
                found.insert((level, index), hash);
            }
        }
    }
    Ok(found)
}

/// The hashes of the ranges `(start, end)` of leaves, each MTH(D[start:end]),
/// read in one go; `None` if a node is not stored (the tree is not that big).
async fn range_hashes(db: &impl ConnectionTrait, ranges: &[(u64, u64)]) -> Result<Option<Vec<Hash>>, DbErr> {
    let split: Vec<Vec<(u32, u64)>> = ranges.iter().map(|(start, end)| pieces(*start, *end)).collect();
    let mut keys: Vec<(u32, u64)> = split.iter().flatten().copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let found = nodes(db, &keys).await?;
    Ok(split
        .iter()
        .map(|pieces| {
            let mut hashes = pieces.iter().rev().map(|piece| found.get(piece).copied());
            let last = hashes.next().flatten()?;
            hashes.try_fold(last, |right, left| left.map(|left| verify::node_hash(&left, &right)))
        })
        .collect())
}

/// [`range_hashes`] of a tree of `tree_size` leaves: one read when the
/// tree is that big; else (a node is missing) the stored size says why.
async fn tree_hashes(
    db: &impl ConnectionTrait,
    tree_size: u64,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>, ProofUnavailable> {
    if let Some(hashes) = range_hashes(db, ranges).await? {
        return Ok(hashes);
    }
    let stored = size(db).await?;
    if tree_size > stored {
        return Err(ProofUnavailable::BeyondTree { asked: tree_size, tree: stored });
    }
    Err(ProofUnavailable::Store(missing(format!("a node of the tree of {tree_size} leaves"))))
}

/// The largest power of two below `n` (n > 1).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The ranges whose hashes make leaf `index`'s inclusion proof in a tree
/// of `size` leaves (RFC 9162's PATH), deepest first.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    out
}

/// The ranges whose hashes make the consistency proof from `old` leaves to
/// `new` (RFC 9162's PROOF), deepest first.
pub fn consistency_ranges(old: u64, new: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if old == 0 || old >= new {
        return out;
    }
    let (mut lo, mut hi, mut whole) = (0, new, true);
    loop {
        if old - lo == hi - lo {
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = split(hi - lo);
        if old - lo <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            whole = false;
        }
    }
    out.reverse();
    out
}

/// Why a proof cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofUnavailable {
    /// The tree does not have that many leaves (yet).
    #[error("the tree has {tree} leaves; {asked} were asked for")]
    BeyondTree { asked: u64, tree: u64 },
    /// The position or sizes make no proof (position 0, sizes out of order).
    #[error("{0}")]
    OutOfRange(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] EventStoreError),
}

impl From<DbErr> for ProofUnavailable {
    fn from(err: DbErr) -> Self {
        ProofUnavailable::Store(err.into())
    }
}

/// Leaf `index`'s hash and its inclusion proof in the tree of `size` leaves.
pub async fn inclusion_proof(
    db: &impl ConnectionTrait,
    index: u64,
    tree_size: u64,
) -> Result<(Hash, Vec<Hash>), ProofUnavailable> {
    let mut proofs = inclusion_proofs(db, &[index], tree_size).await?;
    Ok(proofs.remove(0))
}

/// [`inclusion_proof`] of many leaves of one tree, reading each stored node
/// once.
pub async fn inclusion_proofs(
    db: &impl ConnectionTrait,
    indices: &[u64],
    tree_size: u64,
) -> Result<Vec<(Hash, Vec<Hash>)>, ProofUnavailable> {
    if indices.iter().any(|index| *index >= tree_size) {
        return Err(ProofUnavailable::OutOfRange("the position is not in a tree of that size"));
    }
    let mut ranges = Vec::new();
    let mut lengths = Vec::with_capacity(indices.len());
    for index in indices {
        let path = inclusion_ranges(*index, tree_size);
        lengths.push(path.len());
        ranges.push((*index, index + 1));
        ranges.extend(path);
    }
    let mut hashes = tree_hashes(db, tree_size, &ranges).await?.into_iter();
    Ok(lengths
        .into_iter()
        .map(|length| {
            let leaf = hashes.next().unwrap_or_default();
            (leaf, hashes.by_ref().take(length).collect())
        })
        .collect())
}

/// The consistency proof from the tree of `old` leaves to that of `new`.
pub async fn consistency_proof(db: &impl ConnectionTrait, old: u64, new: u64) -> Result<Vec<Hash>, ProofUnavailable> {
    if old > new {
        return Err(ProofUnavailable::OutOfRange("the first size is larger than the second"));
    }
    let ranges = consistency_ranges(old, new);
    if ranges.is_empty() {
        // Nothing to prove, but the sizes must still be within the tree.
        let stored = size(db).await?;
        if new > stored {
            return Err(ProofUnavailable::BeyondTree { asked: new, tree: stored });
        }
        return Ok(Vec::new());
    }
    tree_hashes(db, new, &ranges).await
}

/// The root of the tree of `tree_size` leaves.
pub async fn root(db: &impl ConnectionTrait, tree_size: u64) -> Result<Hash, ProofUnavailable> {
    if tree_size == 0 {
        return Ok(verify::empty_root());
    }
    Ok(tree_hashes(db, tree_size, &[(0, tree_size)]).await?.remove(0))
}

/// The stored leaf hashes of leaves `from..to` (for the audit, which compares
/// them with the log's events).
pub async fn leaves(db: &impl ConnectionTrait, from: u64, to: u64) -> Result<Vec<(u64, Hash)>, DbErr> {
    let rows = db
        .query_all(
            Query::select()
                .columns([MerkleNodes::NodeIndex, MerkleNodes::Hash])
                .from(MerkleNodes::Table)
                .and_where(Expr::col(MerkleNodes::Level).eq(0))
                .and_where(Expr::col(MerkleNodes::NodeIndex).gte(from as i64))
                .and_where(Expr::col(MerkleNodes::NodeIndex).lt(to as i64))
                .order_by(MerkleNodes::NodeIndex, Order::Asc),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let hash: String = row.try_get("", "hash")?;
        out.push((row.try_get::<i64>("", "node_index")? as u64, verify::parse_hash(&hash).unwrap_or_default()));
    }
    Ok(out)
}

/// Checks signed `digests` (by `key`) against the log as the database
/// holds it: every signature, every root recomputed from the events,
/// consistency proofs between the digests from the stored tree, forks and
/// holes. Where the stored tree still hashes to a digest's root, its leaves
/// are authentic, and a disagreement is narrowed to the exact position.
pub async fn check_log(
    db: &impl ConnectionTrait,
    digests: &[Digest],
    key: &PublicKey,
) -> Result<LogReport, EventStoreError> {
    let mut verifier = LogVerifier::new(digests, key);
    let largest = digests.iter().map(|d| d.tree_size).max().unwrap_or(0);
    let mut after = 0;
    'pages: while after < largest {
        let events = log::read_from(db, after, Ord::min(5_000, largest - after)).await?;
        if events.is_empty() {
            break;
        }
        for event in &events {
            if !verifier.push_leaf(event.position, leaf_hash(event)) {
                break 'pages;
            }
            after = event.position;
        }
    }
    let mut report = verifier.finish();
    let stored = size(db).await?;
    let mut signed: Vec<&Digest> = digests.iter().filter(|d| d.verify(key).is_ok()).collect();
    signed.sort_by_key(|d| d.tree_size);
    for finding in &mut report.findings {
        if let Finding::RootMismatch { tree_size, from, to } = finding
            && from < to
            && let Some(digest) = signed.iter().find(|d| d.tree_size == *tree_size)
            && *tree_size <= stored
            && let Some(at) = first_differing_leaf(db, digest, *from, *to).await?
        {
            (*from, *to) = (at, at);
        }
    }
    for pair in signed.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        if earlier.tree_size == later.tree_size || later.tree_size > stored {
            continue;
        }
        let (Ok(first), Ok(second)) = (earlier.root(), later.root()) else { continue };
        let proof = consistency_proof(db, earlier.tree_size, later.tree_size).await.map_err(|err| match err {
            ProofUnavailable::Store(err) => err,
            other => EventStoreError::Database(DbErr::Custom(other.to_string())),
        })?;
        let finding = Finding::Inconsistent { earlier: earlier.tree_size, later: later.tree_size };
        if verify::verify_consistency(earlier.tree_size, later.tree_size, &first, &second, &proof).is_err()
            && !report.findings.contains(&finding)
        {
            report.findings.push(finding);
        }
    }
    Ok(report)
}

/// The first position in `from..=to` whose event does not hash to its stored
/// leaf, if the stored tree is the one `digest` signed (else its leaves
/// prove nothing).
async fn first_differing_leaf(
    db: &impl ConnectionTrait,
    digest: &Digest,
    from: u64,
    to: u64,
) -> Result<Option<u64>, EventStoreError> {
    let signed_root = digest.root().ok();
    match root(db, digest.tree_size).await {
        Ok(stored_root) if Some(stored_root) == signed_root => {}
        Ok(_) | Err(ProofUnavailable::BeyondTree { .. } | ProofUnavailable::OutOfRange(_)) => return Ok(None),
        Err(ProofUnavailable::Store(err)) => return Err(err),
    }
    let mut at = from;
    while at <= to {
        let count = Ord::min(to - at + 1, 5_000);
        let stored = leaves(db, at - 1, at - 1 + count).await?;
        let events = log::read_from(db, at - 1, count).await?;
        for ((index, leaf), event) in stored.iter().zip(&events) {
            if event.position != index + 1 || leaf_hash(event) != *leaf {
                return Ok(Some(index + 1));
            }
        }
        if events.len() < stored.len() {
            return Ok(Some(at + events.len() as u64));
        }
        at += count;
    }
    Ok(None)
}

/// Where signed digests are published (an S3 prefix, a directory), for
/// auditors to collect: somewhere the operator cannot quietly change.
#[async_trait::async_trait]
pub trait Publish: Send + Sync {
    /// Writes the digest's JSON document; where it went, or why not.
    async fn publish(&self, digest: &Digest) -> Result<String, String>;
}

/// The key digests are signed with.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    public: PublicKey,
    development: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.public.id()).field("development", &self.development).finish()
    }
}

impl Signer {
    /// From a 32-byte Ed25519 seed in hex (a key file's content; surrounding
    /// blank space and `#` comment lines are ignored).
    pub fn from_seed_hex(text: &str) -> Result<Signer, String> {
        let hex_text: String = text.lines().filter(|line| !line.trim_start().starts_with('#')).collect::<String>();
        let seed: [u8; 32] = hex::decode(hex_text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("a digest key is 64 hex digits (an Ed25519 seed, as `pointstream keygen` writes it)")?;
        Ok(Signer::from_seed(seed, false))
    }

    /// A fresh key, and its seed in hex.
    pub fn generate() -> (Signer, String) {
        let seed: [u8; 32] = rand::random();
        (Signer::from_seed(seed, false), hex::encode(seed))
    }

    /// The fixed development key: anyone can sign with it, so its digests
    /// prove nothing to anyone but the developer.
    pub fn development() -> Signer {
        Signer::from_seed(Sha256::digest(b"pointstream development digest key").into(), true)
    }

    fn from_seed(seed: [u8; 32], development: bool) -> Signer {
        let key = SigningKey::from_bytes(&seed);
        Signer { public: PublicKey::from_key(key.verifying_key()), key, development }
    }

    /// The public key verifiers are to pin.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Whether this is the development key.
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// The signed digest of a tree.
    pub fn sign(&self, tree_size: u64, root: &Hash, timestamp_us: i64) -> Digest {
        let key_id = self.public.id();
        let signature = self.key.sign(&Digest::signed_message(tree_size, root, timestamp_us, &key_id));
        Digest {
            format: verify::DIGEST_FORMAT.to_string(),
            tree_size,
            root_hash: hex::encode(root),
            timestamp_us,
            key_id,
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

const DIGEST_COLUMNS: [LogDigests; 5] =
    [LogDigests::TreeSize, LogDigests::RootHash, LogDigests::TimestampUs, LogDigests::KeyId, LogDigests::Signature];

fn digest_from_row(row: &sea_orm::QueryResult) -> Result<Digest, DbErr> {
    Ok(Digest {
        format: verify::DIGEST_FORMAT.to_string(),
        tree_size: row.try_get::<i64>("", "tree_size")? as u64,
        root_hash: row.try_get("", "root_hash")?,
        timestamp_us: row.try_get("", "timestamp_us")?,
        key_id: row.try_get("", "key_id")?,
        signature: row.try_get("", "signature")?,
    })
}

/// Stores a digest (a second one of the same size is not stored).
pub async fn store_digest(db: &impl ConnectionTrait, digest: &Digest) -> Result<(), DbErr> {
    let insert = Query::insert()
        .into_table(LogDigests::Table)
        .columns(DIGEST_COLUMNS)
        .values_panic([
            (digest.tree_size as i64).into(),
            digest.root_hash.as_str().into(),
            digest.timestamp_us.into(),
            digest.key_id.as_str().into(),
            digest.signature.as_str().into(),
        ])
        .to_owned();
    match db.execute(&insert).await {
        Ok(_) => Ok(()),
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The latest digest, if any.
pub async fn latest_digest(db: &impl ConnectionTrait) -> Result<Option<Digest>, DbErr> {
    let row = db
        .query_one(
            Query::select()
                .columns(DIGEST_COLUMNS)
                .from(LogDigests::Table)
                .order_by(LogDigests::TreeSize, Order::Desc)
                .limit(1),
        )
        .await?;
    row.as_ref().map(digest_from_row).transpose()
}

/// The digest of exactly `tree_size` leaves, if one was signed.
pub async fn digest_at(db: &impl ConnectionTrait, tree_size: u64) -> Result<Option<Digest>, DbErr> {
    let row = db
        .query_one(
            Query::select()
                .columns(DIGEST_COLUMNS)
                .from(LogDigests::Table)
                .and_where(Expr::col(LogDigests::TreeSize).eq(tree_size as i64)),
        )
        .await?;
    row.as_ref().map(digest_from_row).transpose()
}

/// Up to `limit` digests of more than `after` leaves, smallest first.
pub async fn digests_after(db: &impl ConnectionTrait, after: u64, limit: u64) -> Result<Vec<Digest>, DbErr> {
    let rows = db
        .query_all(
            Query::select()
                .columns(DIGEST_COLUMNS)
                .from(LogDigests::Table)
                .and_where(Expr::col(LogDigests::TreeSize).gt(after as i64))
                .order_by(LogDigests::TreeSize, Order::Asc)
                .limit(limit),
        )
        .await?;
    rows.iter().map(digest_from_row).collect()
}

/// Up to `limit` digests not published yet, smallest first.
pub async fn unpublished(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<Digest>, DbErr> {
    let rows = db
        .query_all(
            Query::select()
                .columns(DIGEST_COLUMNS)
                .from(LogDigests::Table)
                .and_where(Expr::col(LogDigests::PublishedAtUs).is_null())
                .order_by(LogDigests::TreeSize, Order::Asc)
                .limit(limit),
        )
        .await?;
    rows.iter().map(digest_from_row).collect()
}

/// Records that the digest of `tree_size` leaves was published.
pub async fn mark_published(db: &impl ConnectionTrait, tree_size: u64, at_us: i64) -> Result<(), DbErr> {
    let update = Query::update()
        .table(LogDigests::Table)
        .value(LogDigests::PublishedAtUs, at_us)
        .and_where(Expr::col(LogDigests::TreeSize).eq(tree_size as i64))
        .to_owned();
    db.execute(&update).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_a_range_with_aligned_perfect_subtrees() {
        assert_eq!(pieces(0, 13), vec![(3, 0), (2, 2), (0, 12)]);
        assert_eq!(pieces(8, 13), vec![(2, 2), (0, 12)]);
        assert_eq!(pieces(12, 16), vec![(2, 3)]);
        assert_eq!(pieces(0, 0), vec![]);
        for end in 1..300u64 {
            let total: u64 = pieces(0, end).iter().map(|(level, _)| 1u64 << level).sum();
            assert_eq!(total, end);
        }
    }
}
