//! Checks what a pointstream server signs and proves, without trusting it.
//!
//! pointstream keeps a Merkle tree over its whole event log, in the shape of
//! RFC 9162 (Certificate Transparency 2.0), section 2.1:
//!
//! * leaf `i` (0-based) is the event at log position `i + 1`; its hash is
//!   `SHA-256(0x00 || canonical bytes of the event and its position)`
//!   ([`leaf_input`]);
//! * an interior node is `SHA-256(0x01 || left || right)`;
//! * a tree of `n > 1` leaves splits at the largest power of two below `n`.
//!
//! Every so often the server signs a [`Digest`] (tree size, root hash, time,
//! key id) with Ed25519. This crate checks, with nothing but the digests, the
//! server's public key and what the server sends:
//!
//! * a digest's signature ([`Digest::verify`]);
//! * that an event is in a signed tree ([`verify_inclusion`]);
//! * that a later tree extends an earlier one ([`verify_consistency`]);
//! * that an exported log is the one the digests describe, naming where it
//!   is not ([`verify_log`]).
//!
//! The proof checks follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by
//! step, and use every hash of a proof: a proof whose middle was altered
//! fails like one whose ends were.

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of a leaf whose input is `input`.
pub fn leaf_hash(input: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(input);
    hasher.finalize().into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// An event as `pointstream log --export` writes it, one JSON object per
/// line: every stored field, the payload and metadata as the exact strings
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub position: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub event_version: u32,
    pub payload: String,
    pub metadata: String,
    pub recorded_at_us: i64,
    /// The stream's hash chain (not part of the leaf; checked by the audit).
    #[serde(default)]
    pub hash: String,
}

impl ExportedEvent {
    /// Its leaf hash.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&leaf_input(&EventLeaf {
            position: self.position,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: self.event_version,
            payload: &self.payload,
            metadata_hash: metadata_hash(&self.metadata),
            recorded_at_us: self.recorded_at_us,
        }))
    }
}

/// The fields of an event that its leaf covers: all it stores, and its
/// position in the log. The metadata (who issued the command, from which
/// address) is covered by its hash, so that a member can be shown proofs of
/// their own entries without being shown who made them from where.
#[derive(Debug, Clone, Copy)]
pub struct EventLeaf<'a> {
    pub position: u64,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: u64,
    pub event_type: &'a str,
    pub event_version: u32,
    pub payload: &'a str,
    /// [`metadata_hash`] of the metadata as stored.
    pub metadata_hash: Hash,
    pub recorded_at_us: i64,
}

/// The SHA-256 of an event's metadata, as its leaf covers it.
pub fn metadata_hash(metadata: &str) -> Hash {
    Sha256::digest(metadata.as_bytes()).into()
}

/// A leaf's input: position, aggregate type, aggregate id, sequence, event
/// type, event version, payload, metadata hash and recording time, each
/// prefixed by its length as 8 big-endian bytes (numbers as big-endian
/// bytes: u64, u64, u32 and i64), so that no two events share an input.
pub fn leaf_input(event: &EventLeaf<'_>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(
        9 * 8
            + 3 * 8
            + 4
            + 32
            + event.aggregate_type.len()
            + event.aggregate_id.len()
            + event.payload.len()
            + event.event_type.len(),
    );
    let mut put = |field: &[u8]| {
        bytes.extend_from_slice(&(field.len() as u64).to_be_bytes());
        bytes.extend_from_slice(field);
    };
    put(&event.position.to_be_bytes());
    put(event.aggregate_type.as_bytes());
    put(event.aggregate_id.as_bytes());
    put(&event.sequence.to_be_bytes());
    put(event.event_type.as_bytes());
    put(&event.event_version.to_be_bytes());
    put(event.payload.as_bytes());
    put(&event.metadata_hash);
    put(&event.recorded_at_us.to_be_bytes());
    bytes
}

/// The root of a growing tree, one leaf at a time, in O(log n) memory: it
/// holds the roots of the perfect subtrees the leaves so far make up.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    size: u64,
    /// Perfect subtrees' roots, largest (leftmost) first; their sizes are the
    /// set bits of `size`.
    frontier: Vec<Hash>,
}

impl RootBuilder {
    /// A tree of `size` leaves, from the roots of its perfect subtrees,
    /// largest first (one per set bit of `size`); `None` if there are not
    /// as many as `size` has set bits.
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Option<RootBuilder> {
        (frontier.len() == size.count_ones() as usize).then_some(RootBuilder { size, frontier })
    }

    /// Adds the next leaf.
    pub fn push(&mut self, leaf: Hash) {
        self.push_nodes(leaf, |_, _, _| {});
    }

    /// Adds the next leaf, and tells `completed` of every perfect subtree it
    /// completes, the leaf itself first: `(level, index, hash)`, the
    /// subtree of leaves `index·2^level .. (index+1)·2^level`.
    pub fn push_nodes(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut hash = leaf;
        let (mut level, mut index) = (0, self.size);
        completed(level, index, &hash);
        // Each trailing one bit of the old size is a subtree the new leaf completes.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.frontier.pop().unwrap_or_default();
            hash = node_hash(&left, &hash);
            size >>= 1;
            level += 1;
            index >>= 1;
            completed(level, index, &hash);
        }
        self.frontier.push(hash);
        self.size += 1;
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.frontier.iter().rev();
        match subtrees.next() {
            None => empty_root(),
            Some(last) => subtrees.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// The root of the tree over `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut builder = RootBuilder::default();
    for leaf in leaves {
        builder.push(*leaf);
    }
    builder.root()
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not below the tree size, or the sizes are out of order.
    OutOfRange,
    /// The proof has more or fewer hashes than the sizes call for.
    WrongLength,
    /// The hashes do not lead to the root (or roots) given.
    RootMismatch,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProofError::OutOfRange => "the index or sizes are out of range",
            ProofError::WrongLength => "the proof has the wrong number of hashes",
            ProofError::RootMismatch => "the proof does not lead to the root",
        })
    }
}

impl std::error::Error for ProofError {}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree
/// of `size1` leaves with root `root1` (RFC 9162, 2.1.4.2).
pub fn verify_consistency(size1: u64, size2: u64, root1: &Hash, root2: &Hash, path: &[Hash]) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::OutOfRange);
    }
    if size1 == size2 || size1 == 0 {
        // Nothing to prove but equal roots (every tree extends the empty one).
        if !path.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if size1 == 0 || root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if path.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut hashes: Vec<Hash> = Vec::with_capacity(path.len() + 1);
    if size1.is_power_of_two() {
        hashes.push(*root1);
    }
    hashes.extend_from_slice(path);
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (hashes[0], hashes[0]);
    for c in &hashes[1..] {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *root1 || sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The format name every digest carries.
pub const DIGEST_FORMAT: &str = "pointstream-digest/1";

/// A signed statement by the server: "the log's first `tree_size` events
/// have root `root_hash`", at `timestamp_us`, by key `key_id`. Its JSON
/// form is what is published and what `pointstream digest` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub format: String,
    pub tree_size: u64,
    /// Hex.
    pub root_hash: String,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
    pub key_id: String,
    /// Ed25519 over [`Digest::signed_message`], hex.
    pub signature: String,
}

impl Digest {
    /// The bytes the signature covers: the format, size, root, time and key
    /// id, one per line.
    pub fn signed_message(tree_size: u64, root_hash: &Hash, timestamp_us: i64, key_id: &str) -> Vec<u8> {
        format!("{DIGEST_FORMAT}\n{tree_size}\n{}\n{timestamp_us}\n{key_id}\n", hex::encode(root_hash)).into_bytes()
    }

    /// The root hash as bytes.
    pub fn root(&self) -> Result<Hash, DigestError> {
        parse_hash(&self.root_hash).ok_or(DigestError::Malformed("root_hash"))
    }

    /// Checks the format, that `key` is the key named, and the signature.
    pub fn verify(&self, key: &PublicKey) -> Result<(), DigestError> {
        if self.format != DIGEST_FORMAT {
            return Err(DigestError::Malformed("format"));
        }
        if self.key_id != key.id() {
            return Err(DigestError::UnknownKey(self.key_id.clone()));
        }
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(DigestError::Malformed("signature"))?;
        let message = Self::signed_message(self.tree_size, &self.root()?, self.timestamp_us, &self.key_id);
        key.key.verify_strict(&message, &Signature::from_bytes(&signature)).map_err(|_| DigestError::BadSignature)
    }
}

/// Why a digest is not to be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// A field is not what the format says.
    Malformed(&'static str),
    /// Signed by a key other than the one given.
    UnknownKey(String),
    /// The signature does not verify.
    BadSignature,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestError::Malformed(field) => write!(f, "malformed digest: bad {field}"),
            DigestError::UnknownKey(id) => write!(f, "signed by key {id}, not the key given"),
            DigestError::BadSignature => f.write_str("the signature does not verify"),
        }
    }
}

impl std::error::Error for DigestError {}

/// A server's Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// From its 32 bytes in hex (what `pointstream keygen` prints).
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok().map(|key| PublicKey { key })
    }

    /// From the key itself.
    pub fn from_key(key: VerifyingKey) -> PublicKey {
        PublicKey { key }
    }

    /// Its 32 bytes in hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// Its id: the first 8 bytes of the SHA-256 of the key, in hex.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.key.as_bytes())[..8])
    }
}

/// A 32-byte hash from hex.
pub fn parse_hash(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Something [`verify_log`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A digest whose signature, key or format does not check.
    BadDigest { tree_size: u64, reason: String },
    /// Two signed digests of one size with different roots: the server
    /// showed two histories.
    Fork { tree_size: u64, roots: [String; 2] },
    /// The export skips or repeats a position.
    PositionGap { expected: u64, found: u64 },
    /// The log's first `tree_size` events do not hash to the digest's root:
    /// the first event that differs is at a position in `from..=to` (the
    /// positions after the last digest that matched).
    RootMismatch { tree_size: u64, from: u64, to: u64 },
    /// A digest covers more events than the export holds.
    LogTooShort { tree_size: u64, events: u64 },
    /// An earlier digest the log no longer matches, though a later one
    /// does: the history under the earlier digest was rewritten and signed
    /// again.
    Inconsistent { earlier: u64, later: u64 },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::BadDigest { tree_size, reason } => write!(f, "digest of {tree_size} events: {reason}"),
            Finding::Fork { tree_size, roots } => {
                write!(f, "two digests of {tree_size} events disagree: roots {} and {}", roots[0], roots[1])
            }
            Finding::PositionGap { expected, found } => {
                write!(f, "the log skips from position {expected} to {found}")
            }
            Finding::RootMismatch { tree_size, from, to } if from == to => {
                write!(f, "the log disagrees with the digest of {tree_size} events at position {from}")
            }
            Finding::RootMismatch { tree_size, from, to } => write!(
                f,
                "the log disagrees with the digest of {tree_size} events: first at a position in {from}..={to}"
            ),
            Finding::LogTooShort { tree_size, events } => {
                write!(f, "the digest covers {tree_size} events, the log has {events}")
            }
            Finding::Inconsistent { earlier, later } => write!(
                f,
                "the digests of {earlier} and {later} events are inconsistent: the history under the first was rewritten"
            ),
        }
    }
}

/// What [`verify_log`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogReport {
    pub events: u64,
    pub digests: u64,
    pub findings: Vec<Finding>,
}

impl LogReport {
    /// True when every digest verifies and the log matches each.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The first position the log and the digests are known to disagree at
    /// (the lower end of a range when they cannot tell more).
    pub fn first_disagreement(&self) -> Option<u64> {
        self.findings
            .iter()
            .filter_map(|finding| match finding {
                Finding::PositionGap { expected, .. } => Some(*expected),
                Finding::RootMismatch { from, .. } => Some(*from),
                _ => None,
            })
            .min()
    }
}

/// Checks `digests` (signed by `key`) against an exported log: every
/// signature, every root recomputed from the events, forks between digests,
/// and gaps in the positions. Streams: memory is O(log n + digests).
pub fn verify_log<E>(
    digests: &[Digest],
    key: &PublicKey,
    events: impl IntoIterator<Item = Result<ExportedEvent, E>>,
) -> Result<LogReport, E> {
    let mut verifier = LogVerifier::new(digests, key);
    for event in events {
        if !verifier.push(&event?) {
            break;
        }
    }
    Ok(verifier.finish())
}

/// [`verify_log`] one event at a time, for logs read in pages.
#[derive(Debug, Clone)]
pub struct LogVerifier {
    report: LogReport,
    /// The digests that verified, `(size, root)`, by size.
    digests: Vec<(u64, Hash)>,
    /// How many of them were compared with the log.
    compared: usize,
    /// Whether each compared one matched.
    matched: Vec<bool>,
    builder: RootBuilder,
    stopped: bool,
}

impl LogVerifier {
    /// Checks every digest's signature (signed by `key`) and looks for forks.
    pub fn new(digests: &[Digest], key: &PublicKey) -> LogVerifier {
        let mut report = LogReport { digests: digests.len() as u64, ..LogReport::default() };
        let mut checked: Vec<(u64, Hash)> = Vec::with_capacity(digests.len());
        for digest in digests {
            match digest.verify(key).and_then(|()| digest.root()) {
                Ok(root) => checked.push((digest.tree_size, root)),
                Err(err) => {
                    report.findings.push(Finding::BadDigest { tree_size: digest.tree_size, reason: err.to_string() })
                }
            }
        }
        checked.sort();
        checked.dedup();
        for pair in checked.windows(2) {
            if pair[0].0 == pair[1].0 {
                report.findings.push(Finding::Fork {
                    tree_size: pair[0].0,
                    roots: [hex::encode(pair[0].1), hex::encode(pair[1].1)],
                });
            }
        }
        let mut verifier = LogVerifier {
            report,
            digests: checked,
            compared: 0,
            matched: Vec::new(),
            builder: RootBuilder::default(),
            stopped: false,
        };
        verifier.compare_due();
        verifier
    }

    /// The next event of the log; false once nothing more can be learnt
    /// (the log skipped a position).
    pub fn push(&mut self, event: &ExportedEvent) -> bool {
        self.push_leaf(event.position, event.leaf_hash())
    }

    /// The next event of the log, by its position and leaf hash.
    pub fn push_leaf(&mut self, position: u64, leaf: Hash) -> bool {
        if self.stopped {
            return false;
        }
        let expected = self.builder.size() + 1;
        if position != expected {
            self.report.findings.push(Finding::PositionGap { expected, found: position });
            // Everything after a hole is shifted: no later root can match.
            self.stopped = true;
            return false;
        }
        self.builder.push(leaf);
        self.report.events += 1;
        self.compare_due();
        true
    }

    /// Compares the digests of the tree's current size with its root.
    fn compare_due(&mut self) {
        while let Some((size, root)) = self.digests.get(self.compared).copied() {
            if size != self.builder.size() {
                break;
            }
            let matched = self.builder.root() == root;
            if !matched {
                let last_good = (0..self.compared).rev().find(|i| self.matched[*i]).map_or(0, |i| self.digests[i].0);
                self.report.findings.push(Finding::RootMismatch { tree_size: size, from: last_good + 1, to: size });
            }
            self.matched.push(matched);
            self.compared += 1;
        }
    }

    /// The report, once the whole log was pushed.
    pub fn finish(mut self) -> LogReport {
        for (size, _) in &self.digests[self.compared..] {
            self.report.findings.push(Finding::LogTooShort { tree_size: *size, events: self.report.events });
        }
        // A later digest the log matches, after an earlier one it does not:
        // the earlier history was replaced and signed again.
        if let Some(later) = (0..self.compared).rev().find(|i| self.matched[*i]) {
            for earlier in (0..later).filter(|i| !self.matched[*i]) {
                self.report
                    .findings
                    .push(Finding::Inconsistent { earlier: self.digests[earlier].0, later: self.digests[later].0 });
            }
        }
        self.report
    }
}
