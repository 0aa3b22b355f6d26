// pointstream-verify.mjs: checks what a pointstream server signs and proves,
// without trusting the server. The same checks as the Rust crate
// `pointstream-verify` (verify/src/lib.rs), byte for byte, in one ES module
// with no dependencies: only WebCrypto (SHA-256 and Ed25519), so it runs in
// browsers and in Node 20 or later.
//
// What the server keeps: a Merkle tree over its whole event log, in the shape
// of RFC 9162 (Certificate Transparency 2.0), section 2.1.
//
//   * leaf i (0-based) is the event at log position i + 1; its hash is
//     SHA-256(0x00 || leafInput(event)), where leafInput is every stored
//     field of the event and its position, each prefixed by its length as
//     8 big-endian bytes (numbers as big-endian bytes), the metadata (who
//     issued the command, from where) by its SHA-256 only, so that a member
//     can be shown proofs of their entries without being shown that;
//   * an interior node is SHA-256(0x01 || left || right);
//   * a tree of n > 1 leaves splits at the largest power of two below n;
//     the empty tree's root is SHA-256 of nothing.
//
// Every so often the server signs a digest with Ed25519: "the log's first
// tree_size events have root root_hash", at timestamp_us, by key key_id.
//
// What a check here proves, given the server's public key obtained some
// other way (pinned; never the key a response carries):
//
//   * verifyDigest: the pinned key signed that tree size and root;
//   * verifyInclusion: an event with exactly these fields is at this
//     position of the signed tree: the server cannot later deny it or show
//     it altered without its own signature contradicting it;
//   * verifyConsistency: a later signed tree extends an earlier one: nothing
//     under the earlier digest was rewritten;
//   * verifyLedgerProof: all of the above for the events of a member's
//     streams as `myLedgerProof` returns them, plus that no event is missing
//     between two that are shown (a stream's sequence numbers are dense).
//
// What it does not prove: that the server shows everyone the same tree
// (compare digests with others, or keep them and check consistency), nor
// that a stream has no events after the last one shown (those may be
// pending: not yet under a digest).
//
// The proof checks follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by
// step and use every hash of a proof: a proof whose middle was altered fails
// like one whose ends were. Hashes cross the API as lowercase hex; 64-bit
// numbers may be given as JS numbers (safe integers), BigInts or decimal
// strings, and are BigInts inside.

/** The format name every digest carries. */
export const DIGEST_FORMAT = 'pointstream-digest/1';

// ---------------------------------------------------------------- bytes

function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('WebCrypto (crypto.subtle) is not available here (a browser needs a secure context: https or localhost)');
  return s;
}

const utf8 = (text) => new TextEncoder().encode(text);

function concat(parts) {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `length` bytes from hex (either case), or null. */
function fromHex(text, length) {
  if (typeof text !== 'string' || text.length !== 2 * length || !/^[0-9a-fA-F]*$/.test(text)) return null;
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/** A list of 32-byte hashes from hex, or null when any is not one. */
function hashList(list) {
  if (!Array.isArray(list)) return null;
  const hashes = list.map((h) => fromHex(h, 32));
  return hashes.includes(null) ? null : hashes;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

async function sha256(bytes) {
  return new Uint8Array(await subtle().digest('SHA-256', bytes));
}

const nodeHash = (left, right) => sha256(concat([Uint8Array.of(0x01), left, right]));

// ---------------------------------------------------------------- numbers

/**
 * An integer in [min, max] as a BigInt, or null: a BigInt, a safe-integer
 * number, or a string of decimal digits (with an optional minus sign).
 */
function integer(value, min, max) {
  let n;
  if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
  else if (typeof value === 'string' && /^-?[0-9]+$/.test(value)) n = BigInt(value);
  else return null;
  return n >= min && n <= max ? n : null;
}

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const u64 = (value) => integer(value, 0n, U64_MAX);
const u32 = (value) => integer(value, 0n, 0xffffffffn);
const i64 = (value) => integer(value, I64_MIN, I64_MAX);

function bigEndian(bytes, write) {
  const out = new Uint8Array(bytes);
  write(new DataView(out.buffer));
  return out;
}

// ---------------------------------------------------------------- leaves

/** A field of an event in either shape: export (snake_case) or GraphQL (camelCase). */
function field(event, snake, camel) {
  const value = event[snake] !== undefined ? event[snake] : event[camel];
  if (value === undefined || value === null) throw new TypeError(`the event has no ${snake} (${camel})`);
  return value;
}

function numberField(event, snake, camel, parse, kind) {
  const value = parse(field(event, snake, camel));
  if (value === null) throw new TypeError(`the event's ${snake} is not a ${kind}: ${String(field(event, snake, camel))}`);
  return value;
}

function stringField(event, snake, camel) {
  const value = field(event, snake, camel);
  if (typeof value !== 'string') {
    throw new TypeError(`the event's ${snake} must be the string exactly as stored, not a ${typeof value}`);
  }
  return value;
}

/**
 * The SHA-256 of the event's metadata: `metadata` (the string exactly as
 * stored) hashed, or `metadata_hash` / `metadataHash` (hex) as given; when
 * both are given they must agree.
 */
async function metadataHashOf(event) {
  const given = event.metadata_hash ?? event.metadataHash;
  const stored = event.metadata;
  if (stored === undefined || stored === null) {
    if (given === undefined || given === null) throw new TypeError('the event has neither metadata nor metadata_hash (metadataHash)');
    const hash = fromHex(given, 32);
    if (!hash) throw new TypeError(`the event's metadata_hash is not a SHA-256 in hex: ${String(given)}`);
    return hash;
  }
  if (typeof stored !== 'string') throw new TypeError(`the event's metadata must be the string exactly as stored, not a ${typeof stored}`);
  const hash = await sha256(utf8(stored));
  if (given !== undefined && given !== null && String(given).toLowerCase() !== toHex(hash)) {
    throw new TypeError(`the event's metadata does not hash to its metadata_hash ${String(given)}`);
  }
  return hash;
}

/**
 * A leaf's input: position, aggregate type, aggregate id, sequence, event
 * type, event version, payload, metadata hash and recording time, each
 * prefixed by its length as 8 big-endian bytes; numbers as big-endian bytes
 * (u64, u32 for event_version, two's-complement i64 for recorded_at_us),
 * strings as UTF-8, the payload exactly as stored, the metadata as the
 * SHA-256 of the string stored (metadataHashOf). Async: the metadata is
 * hashed. Rejects with a TypeError when a field is missing or of the wrong kind.
 */
export async function leafInput(event) {
  if (!event || typeof event !== 'object') throw new TypeError('the event is not an object');
  const position = numberField(event, 'position', 'position', u64, 'u64');
  const aggregateType = stringField(event, 'aggregate_type', 'aggregateType');
  const aggregateId = stringField(event, 'aggregate_id', 'aggregateId');
  const sequence = numberField(event, 'sequence', 'sequence', u64, 'u64');
  const eventType = stringField(event, 'event_type', 'eventType');
  const eventVersion = numberField(event, 'event_version', 'eventVersion', u32, 'u32');
  const payload = stringField(event, 'payload', 'payload');
  const metadataHash = await metadataHashOf(event);
  const recordedAtUs = numberField(event, 'recorded_at_us', 'recordedAtUs', i64, 'i64');

  const parts = [];
  const put = (bytes) => parts.push(bigEndian(8, (v) => v.setBigUint64(0, BigInt(bytes.length))), bytes);
  put(bigEndian(8, (v) => v.setBigUint64(0, position)));
  put(utf8(aggregateType));
  put(utf8(aggregateId));
  put(bigEndian(8, (v) => v.setBigUint64(0, sequence)));
  put(utf8(eventType));
  put(bigEndian(4, (v) => v.setUint32(0, Number(eventVersion))));
  put(utf8(payload));
  put(metadataHash);
  put(bigEndian(8, (v) => v.setBigInt64(0, recordedAtUs)));
  return concat(parts);
}

/** An event's leaf hash, SHA-256(0x00 || leafInput(event)), in hex. */
export async function leafHash(event) {
  return toHex(await sha256(concat([Uint8Array.of(0x00), await leafInput(event)])));
}

// ---------------------------------------------------------------- proofs

/**
 * Whether `leafHashHex` is leaf `index` (0-based: position - 1) of the tree
 * of `size` leaves whose root is `rootHex`, by the audit path
 * `pathHexArray` (RFC 9162, 2.1.3.2). False, never an exception, for a
 * proof that does not hold or input that is malformed.
 */
export async function verifyInclusion(index, size, leafHashHex, pathHexArray, rootHex) {
  const [m, n] = [u64(index), u64(size)];
  const [leaf, root, path] = [fromHex(leafHashHex, 32), fromHex(rootHex, 32), hashList(pathHexArray)];
  if (m === null || n === null || !leaf || !root || !path) return false;
  if (m >= n) return false;
  let [fn, sn] = [m, n - 1n];
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) return false; // more hashes than the tree has levels
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && sameBytes(r, root);
}

/**
 * Whether the tree of `size2` leaves with root `root2Hex` extends the tree
 * of `size1` leaves with root `root1Hex`, by the consistency proof
 * `pathHexArray` (RFC 9162, 2.1.4.2). Every tree extends the empty one, and
 * a tree extends itself, with an empty proof. False, never an exception,
 * for a proof that does not hold or input that is malformed.
 */
export async function verifyConsistency(size1, size2, root1Hex, root2Hex, pathHexArray) {
  const [m, n] = [u64(size1), u64(size2)];
  const [root1, root2, path] = [fromHex(root1Hex, 32), fromHex(root2Hex, 32), hashList(pathHexArray)];
  if (m === null || n === null || !root1 || !root2 || !path) return false;
  if (m > n) return false;
  if (m === n || m === 0n) return path.length === 0 && (m === 0n || sameBytes(root1, root2));
  if (path.length === 0) return false;
  // An old tree that is a perfect subtree is its own first node.
  const hashes = (m & (m - 1n)) === 0n ? [root1, ...path] : path;
  let [fn, sn] = [m - 1n, n - 1n];
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let [fr, sr] = [hashes[0], hashes[0]];
  for (const c of hashes.slice(1)) {
    if (sn === 0n) return false; // more hashes than the trees have levels
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && sameBytes(fr, root1) && sameBytes(sr, root2);
}

// ---------------------------------------------------------------- digests

function publicKeyBytes(publicKeyHex) {
  return typeof publicKeyHex === 'string' ? fromHex(publicKeyHex.trim(), 32) : null;
}

/** A key's id: the first 8 bytes of the SHA-256 of its 32 bytes, in hex. Throws on a key that is not 32 bytes of hex. */
export async function keyId(publicKeyHex) {
  const key = publicKeyBytes(publicKeyHex);
  if (!key) throw new TypeError('a public key is 32 bytes in hex (64 hex digits)');
  return toHex((await sha256(key)).slice(0, 8));
}

/** The parsed digest document: `digest` itself, or `digest` parsed when it is JSON text; null when neither. */
function digestDocument(digest) {
  if (typeof digest === 'string') {
    try {
      digest = JSON.parse(digest);
    } catch {
      return null;
    }
  }
  return digest && typeof digest === 'object' && !Array.isArray(digest) ? digest : null;
}

/** Why `digest` is not to be believed with the pinned key, or null when it is. */
async function digestProblem(digest, publicKeyHex) {
  const doc = digestDocument(digest);
  if (!doc) return 'the digest is not a JSON object';
  if (doc.format !== DIGEST_FORMAT) return `its format is ${JSON.stringify(doc.format)}, not ${DIGEST_FORMAT}`;
  const key = publicKeyBytes(publicKeyHex);
  if (!key) return 'the pinned public key is not 32 bytes of hex';
  const pinnedId = toHex((await sha256(key)).slice(0, 8));
  if (doc.key_id !== pinnedId) return `it is signed by key ${JSON.stringify(doc.key_id)}, not the pinned key ${pinnedId}`;
  // The document's numbers are JSON numbers; a BigInt is taken from a caller that parsed them itself.
  const number = (value, parse) => (typeof value === 'number' || typeof value === 'bigint' ? parse(value) : null);
  const treeSize = number(doc.tree_size, u64);
  if (treeSize === null) return 'malformed tree_size';
  const root = fromHex(doc.root_hash, 32);
  if (!root) return 'malformed root_hash';
  const timestampUs = number(doc.timestamp_us, i64);
  if (timestampUs === null) return 'malformed timestamp_us';
  const signature = fromHex(doc.signature, 64);
  if (!signature) return 'malformed signature';
  const message = utf8(`${DIGEST_FORMAT}\n${treeSize}\n${toHex(root)}\n${timestampUs}\n${doc.key_id}\n`);
  let valid;
  try {
    const verifier = await subtle().importKey('raw', key, { name: 'Ed25519' }, false, ['verify']);
    valid = await subtle().verify({ name: 'Ed25519' }, verifier, signature, message);
  } catch {
    return 'the pinned public key is not a valid Ed25519 key';
  }
  return valid ? null : 'the signature does not verify';
}

/**
 * Whether `digest` (the document as an object, or its JSON text) has the
 * digest format, names the pinned key (`publicKeyHex`, obtained some other
 * way than from the server) and carries that key's Ed25519 signature over
 * `pointstream-digest/1\n{tree_size}\n{root_hash}\n{timestamp_us}\n{key_id}\n`.
 */
export async function verifyDigest(digest, publicKeyHex) {
  return (await digestProblem(digest, publicKeyHex)) === null;
}

// ---------------------------------------------------------------- a member's proof

/**
 * Checks the result of the GraphQL query `myLedgerProof` with the pinned
 * key `publicKeyHex` (the `publicKey` the server sends is not trusted):
 *
 *   * the digest's `json` verifies (verifyDigest), and the digest's other
 *     fields say what that signed document says;
 *   * each entry's leaf hash, recomputed from its fields, is the proof's
 *     `leafHash`; the proof is for its position (`leafIndex` = position - 1)
 *     in the signed tree (`treeSize` = the digest's), and leads from the
 *     leaf to the signed root;
 *   * within each stream (aggregate type and id) the entries' sequence
 *     numbers are consecutive, whatever order the entries come in, and
 *     later sequences are at later positions: an event left out between
 *     two shown is named.
 *
 * Returns { ok, problems }: ok when problems is empty; each problem a sentence.
 */
export async function verifyLedgerProof(bundle, publicKeyHex) {
  const problems = [];
  if (!bundle || typeof bundle !== 'object') return { ok: false, problems: ['the ledger proof is not an object'] };
  if (bundle.publicKey != null && String(bundle.publicKey).trim().toLowerCase() !== String(publicKeyHex).trim().toLowerCase()) {
    problems.push(`the server names public key ${bundle.publicKey}, not the pinned key`);
  }
  const signed = await checkSignedDigest(bundle.digest, publicKeyHex, problems);
  let entries = bundle.entries;
  if (!Array.isArray(entries)) {
    problems.push('entries is not a list');
    entries = [];
  }
  for (const [i, entry] of entries.entries()) await checkEntry(entry, i, signed, problems);
  checkStreams(entries, problems);
  return { ok: problems.length === 0, problems };
}

/** Checks the bundle's digest; returns the signed { treeSize, root } (BigInt, hex), or null when there is none to trust. */
async function checkSignedDigest(digest, publicKeyHex, problems) {
  if (!digest) {
    problems.push('there is no signed digest: nothing can be proven against it');
    return null;
  }
  const doc = digestDocument(digest.json);
  const problem = doc ? await digestProblem(doc, publicKeyHex) : 'its json is not a JSON object';
  if (problem) {
    problems.push(`the digest does not verify: ${problem}`);
    return null;
  }
  const sameNumber = (a, b) => u64(a) !== null && u64(a) === u64(b);
  const sameSigned = (a, b) => i64(a) !== null && i64(a) === i64(b);
  const sameHex = (a, b) => typeof a === 'string' && a.toLowerCase() === String(b).toLowerCase();
  for (const [name, key, same] of [
    ['treeSize', 'tree_size', sameNumber],
    ['rootHash', 'root_hash', sameHex],
    ['timestampUs', 'timestamp_us', sameSigned],
    ['keyId', 'key_id', (a, b) => a === b],
    ['signature', 'signature', sameHex],
  ]) {
    if (digest[name] !== undefined && !same(digest[name], doc[key])) {
      problems.push(`the digest's ${name} is ${JSON.stringify(String(digest[name]))}, the signed json's ${key} is ${JSON.stringify(String(doc[key]))}`);
    }
  }
  if (digest.timestamp !== undefined) {
    const ms = Date.parse(digest.timestamp);
    const signedMs = Number(i64(doc.timestamp_us) / 1000n);
    // Date.parse keeps milliseconds: 1 ms of slack for rounding.
    if (Number.isNaN(ms) || Math.abs(ms - signedMs) > 1) {
      problems.push(`the digest's timestamp ${JSON.stringify(digest.timestamp)} is not the signed timestamp_us ${doc.timestamp_us}`);
    }
  }
  return { treeSize: u64(doc.tree_size), root: doc.root_hash.toLowerCase() };
}

async function checkEntry(entry, i, signed, problems) {
  const position = u64(entry?.position);
  const label = `entry ${i} (position ${entry?.position})`;
  if (position === null || position === 0n) {
    problems.push(`${label}: the position is not a log position (1, 2, …)`);
    return;
  }
  let leaf = null;
  try {
    leaf = await leafHash(entry);
  } catch (err) {
    problems.push(`${label}: its leaf cannot be computed: ${err.message}`);
  }
  const proof = entry.proof;
  if (!proof || typeof proof !== 'object') {
    problems.push(`${label}: it has no proof`);
    return;
  }
  if (proof.position !== undefined && u64(proof.position) !== position) {
    problems.push(`${label}: its proof is for position ${proof.position}`);
  }
  if (proof.leafIndex !== undefined && u64(proof.leafIndex) !== position - 1n) {
    problems.push(`${label}: its proof's leafIndex is ${proof.leafIndex}, not ${position - 1n}`);
  }
  if (leaf && String(proof.leafHash).toLowerCase() !== leaf) {
    problems.push(`${label}: its fields hash to leaf ${leaf}, its proof says ${proof.leafHash}`);
  }
  if (!signed) return;
  if (u64(proof.treeSize) !== signed.treeSize) {
    problems.push(`${label}: its proof is for a tree of ${proof.treeSize} events, the digest signs ${signed.treeSize}`);
  }
  if (position > signed.treeSize) {
    problems.push(`${label}: the signed tree has only ${signed.treeSize} events`);
  } else if (leaf && !(await verifyInclusion(position - 1n, signed.treeSize, leaf, proof.hashes, signed.root))) {
    problems.push(`${label}: its inclusion proof does not lead to the signed root of ${signed.treeSize} events`);
  }
}

function checkStreams(entries, problems) {
  const streams = new Map();
  for (const entry of entries) {
    if (!entry || typeof entry !== 'object') continue;
    const type = entry.aggregateType ?? entry.aggregate_type;
    const id = entry.aggregateId ?? entry.aggregate_id;
    const [sequence, position] = [u64(entry.sequence), u64(entry.position)];
    if (sequence === null || position === null) {
      problems.push(`stream ${type}/${id}: an entry has sequence ${entry.sequence} at position ${entry.position}`);
      continue;
    }
    const key = JSON.stringify([type, id]);
    if (!streams.has(key)) streams.set(key, { name: `${type}/${id}`, events: [] });
    streams.get(key).events.push({ sequence, position });
  }
  for (const { name, events } of streams.values()) {
    events.sort((a, b) => (a.sequence < b.sequence ? -1 : a.sequence > b.sequence ? 1 : 0));
    for (let k = 1; k < events.length; k++) {
      const [a, b] = [events[k - 1], events[k]];
      if (b.sequence === a.sequence) {
        problems.push(`stream ${name}: sequence ${a.sequence} appears twice (positions ${a.position} and ${b.position})`);
      } else if (b.sequence !== a.sequence + 1n) {
        const missing = b.sequence === a.sequence + 2n ? `sequence ${a.sequence + 1n} is` : `sequences ${a.sequence + 1n}..${b.sequence - 1n} are`;
        problems.push(`stream ${name}: ${missing} missing (between positions ${a.position} and ${b.position})`);
      }
      if (b.sequence !== a.sequence && b.position <= a.position) {
        problems.push(`stream ${name}: sequence ${b.sequence} is at position ${b.position}, not after sequence ${a.sequence} at ${a.position}`);
      }
    }
  }
}
