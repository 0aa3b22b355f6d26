// The JavaScript verifier, verify/js/pointstream-verify.mjs, which checks
// what pointstream signs and proves with nothing but WebCrypto.
//
// The unit tests (named `unit: …`, no server) hold it to the RFC 6962 test
// tree heads, to a reference prover written here from RFC 9162's PATH and
// PROOF, to digests signed here with a fresh Ed25519 key, and to a member's
// ledger proof built here; each also alters one thing and expects a refusal.
//
// The server tests (named `server: …`) run `pointstream keygen`, start the
// server with that digest key, earn points for bob, and check bob's
// `myLedgerProof`, a consistency proof between two signed digests and an
// inclusion proof, all with the key keygen printed (pinned), never the key
// the server sends. The server is started by the first server test, so a run
// filtered to the unit tests (`--test-name-pattern '^unit:'`) starts none.

import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, binary, waitFor, clip } from '../server.mjs';
import {
  leafInput,
  leafHash,
  verifyInclusion,
  verifyConsistency,
  verifyDigest,
  keyId,
  verifyLedgerProof,
} from '../../../verify/js/pointstream-verify.mjs';

const { subtle } = globalThis.crypto;

// ------------------------------------------------------------------ helpers

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (text) => Buffer.from(text, 'hex');

async function sha256(...parts) {
  return new Uint8Array(await subtle.digest('SHA-256', Buffer.concat(parts.map((p) => Buffer.from(p)))));
}

/** SHA-256(0x00 || input): a leaf hash, computed here rather than by the module. */
const leafOf = (input) => sha256(Buffer.of(0x00), input);
const nodeOf = (left, right) => sha256(Buffer.of(0x01), left, right);

function u64be(value) {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(value));
  return bytes;
}

/** `hash` (hex) with bit `bit` (0–255) flipped. */
function flipBit(hashHex, bit) {
  const bytes = unhex(hashHex);
  bytes[(bit >> 3) % bytes.length] ^= 1 << (bit & 7);
  return hex(bytes);
}

/** `text` (hex) with the character at `at` changed. */
function flipChar(text, at) {
  return text.slice(0, at) + (text[at] === '0' ? '1' : '0') + text.slice(at + 1);
}

/** The largest power of two below n (n > 1). */
function split(n) {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * RFC 9162's MTH, PATH(m, D[n]) and PROOF(m, D[n]) over the prefixes of
 * `leaves` (hashes as bytes), by the RFC's recursion, memoized. Hashes out as hex.
 */
function referenceTree(leaves) {
  const memo = new Map();
  const mth = (lo, hi) => {
    const key = `${lo}:${hi}`;
    if (!memo.has(key)) {
      memo.set(
        key,
        (async () => {
          const n = hi - lo;
          if (n === 0) return sha256();
          if (n === 1) return leaves[lo];
          const k = split(n);
          return nodeOf(await mth(lo, lo + k), await mth(lo + k, hi));
        })(),
      );
    }
    return memo.get(key);
  };
  const path = async (m, lo, hi) => {
    const n = hi - lo;
    if (n <= 1) return [];
    const k = split(n);
    return m < k ? [...(await path(m, lo, lo + k)), await mth(lo + k, hi)] : [...(await path(m - k, lo + k, hi)), await mth(lo, lo + k)];
  };
  const subproof = async (m, lo, hi, whole) => {
    const n = hi - lo;
    if (m === n) return whole ? [] : [await mth(lo, hi)];
    const k = split(n);
    return m <= k
      ? [...(await subproof(m, lo, lo + k, whole)), await mth(lo + k, hi)]
      : [...(await subproof(m - k, lo + k, hi, false)), await mth(lo, lo + k)];
  };
  return {
    root: async (n) => hex(await mth(0, n)),
    inclusion: async (m, n) => (await path(m, 0, n)).map(hex),
    consistency: async (m, n) => (m === 0 || m === n ? [] : (await subproof(m, 0, n, true)).map(hex)),
  };
}

/** Leaf hashes of the inputs 0, 1, … (u64 big-endian), as the Rust tests make them. */
async function numberedLeaves(count) {
  return Promise.all(Array.from({ length: count }, (_, i) => leafOf(u64be(i))));
}

/** An event's leaf input built here, field by field, without the module (metadata: its SHA-256). */
async function leafInputHere(e) {
  const parts = [];
  const put = (bytes) => parts.push(u64be(bytes.length), bytes);
  const i64 = (value) => {
    const bytes = Buffer.alloc(8);
    bytes.writeBigInt64BE(BigInt(value));
    return bytes;
  };
  const u32 = (value) => {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32BE(Number(value));
    return bytes;
  };
  put(u64be(e.position));
  put(Buffer.from(e.aggregateType, 'utf8'));
  put(Buffer.from(e.aggregateId, 'utf8'));
  put(u64be(e.sequence));
  put(Buffer.from(e.eventType, 'utf8'));
  put(u32(e.eventVersion));
  put(Buffer.from(e.payload, 'utf8'));
  put(e.metadata === undefined ? unhex(e.metadataHash) : Buffer.from(await sha256(Buffer.from(e.metadata, 'utf8'))));
  put(i64(e.recordedAtUs));
  return Buffer.concat(parts);
}

/** A fresh Ed25519 key pair; the public key also as hex. */
async function newKey() {
  const pair = await subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  return { ...pair, hex: hex(await subtle.exportKey('raw', pair.publicKey)) };
}

/** A digest document signed with `key`, as the server makes one. */
async function signDigest(key, { tree_size, root_hash, timestamp_us }, { naming } = {}) {
  const key_id = naming ?? hex((await sha256(unhex(key.hex))).subarray(0, 8));
  const message = `pointstream-digest/1\n${tree_size}\n${root_hash}\n${timestamp_us}\n${key_id}\n`;
  const signature = hex(await subtle.sign({ name: 'Ed25519' }, key.privateKey, Buffer.from(message, 'utf8')));
  return { format: 'pointstream-digest/1', tree_size, root_hash, timestamp_us, key_id, signature };
}

// ------------------------------------------------------------------ unit: trees and proofs

const RFC6962_INPUTS = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'];
const RFC6962_HEADS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

test('unit: the RFC 6962 test tree heads are reproduced, and every proof in those trees verifies', async () => {
  const leaves = await Promise.all(RFC6962_INPUTS.map((input) => leafOf(unhex(input))));
  const tree = referenceTree(leaves);
  assert.equal(await tree.root(0), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'the empty root');
  for (let n = 1; n <= 8; n++) {
    assert.equal(await tree.root(n), RFC6962_HEADS[n - 1], `the head of size ${n}`);
  }
  for (let n = 1; n <= 8; n++) {
    for (let m = 0; m < n; m++) {
      const ok = await verifyInclusion(m, n, hex(leaves[m]), await tree.inclusion(m, n), RFC6962_HEADS[n - 1]);
      assert.ok(ok, `leaf ${m} of the RFC 6962 tree of ${n}`);
    }
    for (let m = 1; m <= n; m++) {
      const ok = await verifyConsistency(m, n, RFC6962_HEADS[m - 1], RFC6962_HEADS[n - 1], await tree.consistency(m, n));
      assert.ok(ok, `RFC 6962 tree ${m} -> ${n}`);
    }
  }
});

test('unit: every inclusion proof of trees of 1 to 40 leaves verifies; any flipped bit, wrong length or index fails', async () => {
  const leaves = await numberedLeaves(40);
  const tree = referenceTree(leaves);
  for (let n = 1; n <= 40; n++) {
    const root = await tree.root(n);
    for (let m = 0; m < n; m++) {
      const what = `leaf ${m} of ${n}`;
      const leaf = hex(leaves[m]);
      const proof = await tree.inclusion(m, n);
      const bit = (m * 31 + n * 7) % 256;
      assert.equal(await verifyInclusion(m, n, leaf, proof, root), true, what);
      assert.equal(await verifyInclusion(m, n, flipBit(leaf, bit), proof, root), false, `${what}: flipped leaf`);
      assert.equal(await verifyInclusion(m, n, leaf, proof, flipBit(root, bit)), false, `${what}: flipped root`);
      for (let k = 0; k < proof.length; k++) {
        // Every hash of the path, the middle ones included.
        const altered = proof.map((h, j) => (j === k ? flipBit(h, (bit + 8 * k) % 256) : h));
        assert.equal(await verifyInclusion(m, n, leaf, altered, root), false, `${what}: flipped path hash ${k} of ${proof.length}`);
      }
      if (proof.length) {
        assert.equal(await verifyInclusion(m, n, leaf, proof.slice(0, -1), root), false, `${what}: last hash dropped`);
        assert.equal(await verifyInclusion(m, n, leaf, proof.slice(1), root), false, `${what}: first hash dropped`);
      }
      assert.equal(await verifyInclusion(m, n, leaf, [...proof, root], root), false, `${what}: a hash too many`);
      assert.equal(await verifyInclusion(m, n, leaf, [leaf, ...proof], root), false, `${what}: a hash too many in front`);
      if (n > 1) {
        const other = (m + 1 + (n >> 1)) % n;
        if (other !== m) assert.equal(await verifyInclusion(other, n, leaf, proof, root), false, `${what}: taken as leaf ${other}`);
      }
      assert.equal(await verifyInclusion(n, n, leaf, proof, root), false, `${what}: index ${n} = size`);
      assert.equal(await verifyInclusion(n + m, n, leaf, proof, root), false, `${what}: index ${n + m} > size`);
    }
  }
});

test('unit: every consistency proof between trees of 0 to 40 leaves verifies; any flipped bit or wrong length fails', async () => {
  const leaves = await numberedLeaves(40);
  const tree = referenceTree(leaves);
  for (let n = 1; n <= 40; n++) {
    const newRoot = await tree.root(n);
    for (let m = 0; m <= n; m++) {
      const what = `${m} -> ${n}`;
      const oldRoot = await tree.root(m);
      const proof = await tree.consistency(m, n);
      const bit = (m * 13 + n * 5) % 256;
      assert.equal(await verifyConsistency(m, n, oldRoot, newRoot, proof), true, what);
      assert.equal(await verifyConsistency(m, n, oldRoot, newRoot, [...proof, newRoot]), false, `${what}: a hash too many`);
      assert.equal(await verifyConsistency(n + 1, n, oldRoot, newRoot, proof), false, `${what}: sizes out of order`);
      if (m === 0) continue; // every tree extends the empty one, whatever the roots
      if (m === n) {
        assert.equal(await verifyConsistency(m, n, oldRoot, flipBit(newRoot, bit), proof), false, `${what}: different roots`);
        continue;
      }
      assert.equal(await verifyConsistency(m, n, flipBit(oldRoot, bit), newRoot, proof), false, `${what}: flipped old root`);
      assert.equal(await verifyConsistency(m, n, oldRoot, flipBit(newRoot, bit), proof), false, `${what}: flipped new root`);
      assert.equal(await verifyConsistency(m, n, newRoot, oldRoot, proof), false, `${what}: roots swapped`);
      for (let k = 0; k < proof.length; k++) {
        const altered = proof.map((h, j) => (j === k ? flipBit(h, (bit + 8 * k) % 256) : h));
        assert.equal(await verifyConsistency(m, n, oldRoot, newRoot, altered), false, `${what}: flipped proof hash ${k} of ${proof.length}`);
      }
      assert.equal(await verifyConsistency(m, n, oldRoot, newRoot, proof.slice(0, -1)), false, `${what}: last hash dropped`);
      assert.equal(await verifyConsistency(m, n, oldRoot, newRoot, proof.slice(1)), false, `${what}: first hash dropped`);
      assert.equal(await verifyConsistency(m, n, oldRoot, newRoot, []), false, `${what}: empty proof`);
    }
  }
});

test('unit: proofs take sizes as numbers, BigInts or decimal strings, and malformed input is false, not an exception', async () => {
  const leaves = await numberedLeaves(11);
  const tree = referenceTree(leaves);
  const [root5, root11] = [await tree.root(5), await tree.root(11)];
  const proof = await tree.inclusion(6, 11);
  const leaf = hex(leaves[6]);
  for (const [index, size] of [[6, 11], [6n, 11n], ['6', '11']]) {
    assert.equal(await verifyInclusion(index, size, leaf, proof, root11), true, `${typeof index} sizes`);
  }
  assert.equal(await verifyInclusion(6, 11, leaf.toUpperCase(), proof.map((h) => h.toUpperCase()), root11.toUpperCase()), true, 'upper-case hex');
  const consistency = await tree.consistency(5, 11);
  assert.equal(await verifyConsistency(5n, '11', root5, root11, consistency), true, 'BigInt and string sizes');
  for (const [what, args] of [
    ['a negative index', [-1, 11, leaf, proof, root11]],
    ['a fractional index', [6.5, 11, leaf, proof, root11]],
    ['an unsafe number', [6, 2 ** 60, leaf, proof, root11]],
    ['a size over 2^64 - 1', [6, 2n ** 64n, leaf, proof, root11]],
    ['a short leaf hash', [6, 11, leaf.slice(2), proof, root11]],
    ['a leaf hash that is not hex', [6, 11, `zz${leaf.slice(2)}`, proof, root11]],
    ['a path that is not a list', [6, 11, leaf, proof.join(''), root11]],
    ['a path with a non-string', [6, 11, leaf, [...proof.slice(0, -1), 42], root11]],
    ['no root', [6, 11, leaf, proof, undefined]],
    ['an empty tree', [0, 0, leaf, [], root11]],
  ]) {
    assert.equal(await verifyInclusion(...args), false, `inclusion with ${what}`);
  }
  assert.equal(await verifyConsistency(5, 11, root5, root11, 'not a list'), false, 'consistency with a path that is not a list');
  assert.equal(await verifyConsistency(-5, 11, root5, root11, consistency), false, 'consistency with a negative size');
  assert.equal(await verifyConsistency(5, 11, root5, null, consistency), false, 'consistency with no new root');
});

// ------------------------------------------------------------------ unit: leaves

test('unit: leafInput is every field length-prefixed, big-endian, the metadata hashed; both event shapes and all number forms agree', async () => {
  const graphql = {
    position: 7,
    aggregateType: 'wallet',
    aggregateId: 'bob@cafe',
    sequence: 3,
    eventType: 'PointsEarned',
    eventVersion: 2,
    payload: '{"note":"café ☕","points":45}',
    metadata: '{"role":"staff"}',
    recordedAtUs: -1,
  };
  const metadataHash = hex(await sha256(Buffer.from(graphql.metadata)));
  // By hand: 8-byte big-endian length, then the bytes; u32 for the version,
  // the SHA-256 of the metadata, two's complement for the time.
  const expected =
    '0000000000000008' + '0000000000000007' +
    '0000000000000006' + Buffer.from('wallet').toString('hex') +
    '0000000000000008' + Buffer.from('bob@cafe').toString('hex') +
    '0000000000000008' + '0000000000000003' +
    '000000000000000c' + Buffer.from('PointsEarned').toString('hex') +
    '0000000000000004' + '00000002' +
    '0000000000000020' + Buffer.from('{"note":"café ☕","points":45}', 'utf8').toString('hex') +
    '0000000000000020' + metadataHash +
    '0000000000000008' + 'ffffffffffffffff';
  assert.equal(hex(await leafInput(graphql)), expected);
  assert.equal(hex(await leafInputHere(graphql)), expected, 'the builder of this test agrees');
  const withHash = { ...graphql, metadata: undefined, metadataHash };
  assert.equal(hex(await leafInput(withHash)), expected, 'metadataHash instead of the metadata');
  assert.equal(hex(await leafInput({ ...graphql, metadataHash: metadataHash.toUpperCase() })), expected, 'both, agreeing');

  const exported = {
    position: '7',
    aggregate_type: 'wallet',
    aggregate_id: 'bob@cafe',
    sequence: 3n,
    event_type: 'PointsEarned',
    event_version: '2',
    payload: graphql.payload,
    metadata: graphql.metadata,
    recorded_at_us: -1n,
    hash: 'not part of the leaf',
  };
  assert.equal(hex(await leafInput(exported)), expected, 'the export shape, numbers as strings and BigInts');
  const hash = await leafHash(graphql);
  assert.equal(hash, hex(await leafOf(unhex(expected))), 'leafHash = SHA-256(0x00 || leafInput)');
  assert.equal(await leafHash(exported), hash);
  assert.equal(await leafHash(withHash), hash);

  const big = { ...graphql, position: 2n ** 64n - 1n, recordedAtUs: '-9223372036854775808', eventVersion: 0xffffffff };
  assert.equal(hex(await leafInput(big)), hex(await leafInputHere(big)), 'extreme values');
  assert.notEqual(await leafHash({ ...graphql, payload: `${graphql.payload} ` }), hash, 'one more byte of payload');
  assert.notEqual(await leafHash({ ...graphql, metadata: `${graphql.metadata} ` }), hash, 'one more byte of metadata');
  assert.notEqual(await leafHash({ ...withHash, metadataHash: flipBit(metadataHash, 9) }), hash, 'another metadata hash');
  assert.notEqual(await leafHash({ ...graphql, position: 8 }), hash, 'another position');

  for (const [what, event] of [
    ['a parsed payload has lost its bytes', { ...graphql, payload: { note: 'parsed' } }],
    ['parsed metadata has lost its bytes', { ...graphql, metadata: { role: 'staff' } }],
    ['no metadata nor its hash', { ...graphql, metadata: undefined }],
    ['a metadata hash that is not one', { ...withHash, metadataHash: metadataHash.slice(2) }],
    ['metadata and a hash that disagree', { ...graphql, metadataHash: flipBit(metadataHash, 1) }],
    ['a negative position', { ...graphql, position: -1 }],
    ['a version over u32', { ...graphql, eventVersion: 2 ** 32 }],
    ['a fractional sequence', { ...graphql, sequence: 1.5 }],
    ['no event type', { ...graphql, eventType: undefined }],
  ]) {
    await assert.rejects(() => leafInput(event), TypeError, what);
  }
});

// ------------------------------------------------------------------ unit: digests

test('unit: verifyDigest accepts a digest signed with the pinned key and refuses any altered field or another key', async () => {
  const key = await newKey();
  const other = await newKey();
  const root = hex(await sha256(Buffer.from('some tree')));
  const digest = await signDigest(key, { tree_size: 1234, root_hash: root, timestamp_us: 1_700_000_000_123_456 });
  assert.equal(digest.key_id, await keyId(key.hex), 'keyId: the first 8 bytes of SHA-256 of the key');
  assert.match(digest.key_id, /^[0-9a-f]{16}$/);

  assert.equal(await verifyDigest(digest, key.hex), true, 'the object');
  assert.equal(await verifyDigest(JSON.stringify(digest), key.hex), true, 'its JSON text');
  assert.equal(await verifyDigest(digest, ` ${key.hex.toUpperCase()}\n`), true, 'the key in upper case, with spaces');
  assert.equal(await verifyDigest({ ...digest, root_hash: root.toUpperCase() }, key.hex), true, 'the root in upper case (the same bytes)');

  for (const [what, altered] of [
    ['tree_size + 1', { ...digest, tree_size: 1235 }],
    ['tree_size as a string', { ...digest, tree_size: '1234' }],
    ['a flipped root bit', { ...digest, root_hash: flipBit(root, 77) }],
    ['timestamp_us + 1', { ...digest, timestamp_us: digest.timestamp_us + 1 }],
    ['a flipped signature bit', { ...digest, signature: flipBit(digest.signature, 3) }],
    ['a signature cut short', { ...digest, signature: digest.signature.slice(0, 126) }],
    ['another format', { ...digest, format: 'pointstream-digest/2' }],
    ['no format', { ...digest, format: undefined }],
    ['a key_id in upper case', { ...digest, key_id: digest.key_id.toUpperCase() }],
    ['another key_id', { ...digest, key_id: await keyId(other.hex) }],
  ]) {
    assert.equal(await verifyDigest(altered, key.hex), false, what);
  }
  assert.equal(await verifyDigest(digest, other.hex), false, 'another pinned key');
  const byOther = await signDigest(other, { tree_size: 1234, root_hash: root, timestamp_us: digest.timestamp_us });
  assert.equal(await verifyDigest(byOther, key.hex), false, 'signed by another key');
  assert.equal(await verifyDigest(byOther, other.hex), true, 'which that key verifies');
  assert.equal(await verifyDigest({ ...byOther, key_id: digest.key_id }, key.hex), false, "another key's signature under the pinned key's id");
  // Signed by the pinned key, but naming another key: refused like the Rust verifier (UnknownKey).
  for (const naming of [await keyId(other.hex), digest.key_id.toUpperCase()]) {
    const misnamed = await signDigest(key, { tree_size: 1234, root_hash: root, timestamp_us: digest.timestamp_us }, { naming });
    assert.equal(await verifyDigest(misnamed, key.hex), false, `signed by the pinned key, naming key_id ${naming}`);
  }
  assert.equal(await verifyDigest('{not json', key.hex), false, 'not JSON');
  assert.equal(await verifyDigest(digest, key.hex.slice(2)), false, 'a short pinned key');
  await assert.rejects(() => keyId('abcd'), TypeError);
});

// ------------------------------------------------------------------ unit: a member's ledger proof

/**
 * A small log (12 events; bob's in 2 streams among others') with a digest of
 * its first `signedSize` events, and bob's ledger proof: his entries with
 * their metadata's hash (as a member is shown them), each with its proof.
 */
async function ledgerFixture(key, signedSize = 10) {
  const streams = ['wallet/bob@cafe', 'member/ann', 'wallet/bob@cafe', 'wallet/bob@bakery', 'wallet/bob@cafe', 'member/ann',
    'wallet/bob@bakery', 'wallet/cat@bakery', 'wallet/bob@cafe', 'wallet/bob@cafe', 'wallet/bob@cafe', 'wallet/bob@bakery'];
  const seen = new Map();
  const events = streams.map((stream, i) => {
    const [aggregateType, aggregateId] = stream.split('/');
    const sequence = (seen.get(stream) ?? 0) + 1;
    seen.set(stream, sequence);
    return {
      position: i + 1,
      aggregateType,
      aggregateId,
      sequence,
      eventType: aggregateType === 'wallet' ? 'PointsEarned' : 'MemberJoined',
      eventVersion: 1,
      payload: JSON.stringify({ points: 10 * (i + 1), note: 'café' }),
      metadata: JSON.stringify({ role: 'staff', command: `c-${i}` }),
      recordedAtUs: 1_700_000_000_000_000 + i * 1_000,
    };
  });
  const leaves = await Promise.all(events.map(async (e) => leafOf(await leafInputHere(e))));
  const tree = referenceTree(leaves);
  const timestamp_us = 1_700_000_123_456_789;
  const doc = await signDigest(key, { tree_size: signedSize, root_hash: await tree.root(signedSize), timestamp_us });
  const entries = [];
  for (const e of events.filter((e) => e.aggregateId.startsWith('bob@') && e.position <= signedSize)) {
    const m = e.position - 1;
    const { metadata, ...shown } = e;
    entries.push({
      ...shown,
      metadataHash: hex(await sha256(Buffer.from(metadata))),
      proof: { position: e.position, leafIndex: m, treeSize: signedSize, leafHash: hex(leaves[m]), hashes: await tree.inclusion(m, signedSize) },
    });
  }
  return {
    publicKey: key.hex,
    digest: {
      treeSize: doc.tree_size,
      rootHash: doc.root_hash,
      timestamp: new Date(Math.floor(timestamp_us / 1000)).toISOString(),
      timestampUs: doc.timestamp_us,
      keyId: doc.key_id,
      signature: doc.signature,
      json: JSON.stringify(doc),
    },
    entries,
    hasMore: false,
    pending: events.filter((e) => e.aggregateId.startsWith('bob@') && e.position > signedSize).length,
  };
}

test('unit: verifyLedgerProof accepts an honest ledger proof and names what is wrong with an altered one', async () => {
  const key = await newKey();
  const other = await newKey();
  const bundle = await ledgerFixture(key);
  assert.equal(bundle.entries.length, 7);

  const honest = await verifyLedgerProof(bundle, key.hex);
  assert.deepEqual(honest, { ok: true, problems: [] });
  const withMetadata = structuredClone(bundle);
  for (const e of withMetadata.entries) {
    e.metadata = JSON.stringify({ role: 'staff', command: `c-${e.position - 1}` });
    delete e.metadataHash;
  }
  assert.deepEqual(await verifyLedgerProof(withMetadata, key.hex), { ok: true, problems: [] }, 'the metadata itself instead of its hash');
  const reversed = { ...bundle, entries: [...bundle.entries].reverse() };
  assert.deepEqual(await verifyLedgerProof(reversed, key.hex), { ok: true, problems: [] }, 'newest first is as good');

  /** Verifies a copy of the bundle changed by `change`; expects a refusal with a problem matching `pattern`. */
  const refused = async (what, change, pattern, pinned = key.hex) => {
    const copy = structuredClone(bundle);
    await change(copy);
    const report = await verifyLedgerProof(copy, pinned);
    assert.equal(report.ok, false, `${what}: accepted`);
    assert.ok(
      report.problems.some((p) => pattern.test(p)),
      `${what}: no problem matches ${pattern}: ${JSON.stringify(report.problems)}`,
    );
  };
  const deep = bundle.entries.findIndex((e) => e.proof.hashes.length >= 3);
  assert.ok(deep >= 0, 'the fixture has a proof of 3 hashes or more');
  const position = bundle.entries[deep].position;

  await refused('another pinned key', () => {}, /not the pinned key/, other.hex);
  await refused(
    "the server's own key and digest",
    async (copy) => {
      const forged = await signDigest(other, JSON.parse(copy.digest.json));
      Object.assign(copy.digest, { keyId: forged.key_id, signature: forged.signature, json: JSON.stringify(forged) });
      copy.publicKey = other.hex;
    },
    /digest does not verify: it is signed by key .*, not the pinned key/,
  );
  await refused('an edited payload', (copy) => {
    copy.entries[deep].payload = copy.entries[deep].payload.replace('"points":', '"points":1');
  }, new RegExp(`position ${position}\\).*hash to leaf`));
  await refused('an altered metadata hash', (copy) => {
    copy.entries[deep].metadataHash = flipChar(copy.entries[deep].metadataHash, 3);
  }, new RegExp(`position ${position}\\).*hash to leaf`));
  await refused('a flipped middle hash', (copy) => {
    const hashes = copy.entries[deep].proof.hashes;
    const k = Math.floor(hashes.length / 2);
    hashes[k] = flipChar(hashes[k], 17);
  }, new RegExp(`position ${position}\\).*does not lead to the signed root`));
  await refused('a proof for another tree size', (copy) => {
    copy.entries[0].proof.treeSize += 1;
  }, /proof is for a tree of/);
  await refused('a wrong leafIndex', (copy) => {
    copy.entries[0].proof.leafIndex += 1;
  }, /leafIndex/);
  await refused('a tree size other than the signed one', (copy) => {
    copy.digest.treeSize += 1;
  }, /treeSize .* tree_size/);
  await refused('a root other than the signed one', (copy) => {
    copy.digest.rootHash = flipChar(copy.digest.rootHash, 0);
  }, /rootHash .* root_hash/);
  await refused('a timestamp other than the signed one', (copy) => {
    copy.digest.timestamp = new Date(Date.parse(copy.digest.timestamp) + 60_000).toISOString();
  }, /timestamp/);
  await refused('no digest', (copy) => {
    copy.digest = null;
  }, /no signed digest/);
  await refused('an event left out', (copy) => {
    // bob@cafe's sequence 2 (position 3).
    copy.entries = copy.entries.filter((e) => e.position !== 3);
  }, /wallet\/bob@cafe: sequence 2 is missing/);
  await refused('an event shown twice', (copy) => {
    copy.entries.push(structuredClone(copy.entries[0]));
  }, /appears twice/);
  await refused('a parsed payload', (copy) => {
    copy.entries[0].payload = JSON.parse(copy.entries[0].payload);
  }, /exactly as stored/);
  await refused('an event past the signed tree', async (copy) => {
    const later = await ledgerFixture(key, 12);
    copy.entries.push(later.entries.find((e) => e.position === 11));
  }, /only 10 events|proof is for a tree of 12/);
});

// ------------------------------------------------------------------ server

/** The `myLedgerProof` query, the entries' metadata selected as `metadata` (the field or fields that carry it). */
const ledgerProofQuery = (metadata) => `{ myLedgerProof(first: 50) {
  publicKey
  digest { treeSize rootHash timestamp timestampUs keyId signature json }
  entries { position aggregateType aggregateId sequence eventType eventVersion payload ${metadata} recordedAtUs
            proof { position leafIndex treeSize leafHash hashes } }
  hasMore pending } }`;

/**
 * Bob's `myLedgerProof`. A leaf covers the metadata by its hash, so a member
 * may be shown `metadataHash` rather than the metadata: the entries' type
 * (found by introspection) says which, and `metadataHash` is taken when it is there.
 */
async function ledgerProof(server, token) {
  const typeRef = 'name ofType { name ofType { name ofType { name } } }';
  const named = (ref) => {
    while (ref && !ref.name) ref = ref.ofType;
    return ref?.name;
  };
  const fieldsOf = async (type) => {
    const data = await server.query(`{ __type(name: ${JSON.stringify(type)}) { fields { name type { ${typeRef} } } } }`, { token });
    return data.__type?.fields ?? [];
  };
  const proofType = named((await fieldsOf('Query')).find((f) => f.name === 'myLedgerProof')?.type);
  assert.ok(proofType, 'Query has myLedgerProof');
  const entryType = named((await fieldsOf(proofType)).find((f) => f.name === 'entries')?.type);
  assert.ok(entryType, `${proofType} has entries`);
  const names = (await fieldsOf(entryType)).map((f) => f.name);
  const metadata = names.includes('metadataHash') ? 'metadataHash' : 'metadata';
  assert.ok(names.includes(metadata), `${entryType} has metadataHash or metadata: ${names.join(', ')}`);
  return (await server.query(ledgerProofQuery(metadata), { token })).myLedgerProof;
}

let server;
let pinned;
let keyDir;

after(async () => {
  await server?.stop();
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

/** The environment for `pointstream keygen`: ours less any pointstream settings. */
function cleanEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('POINTSTREAM_') && k !== 'REDIS_URL'));
}

function keygen(bin, out) {
  return new Promise((resolve, reject) => {
    execFile(bin, ['keygen', '--out', out], { env: cleanEnv(), timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`\`pointstream keygen --out ${out}\` failed: ${err.message}\n--- stderr ---\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Like the other files' `suite(…).test`: the running server, a deadline, and the server's log when it fails. */
function serverTest(title, fn, { timeout = 50_000 } = {}) {
  test(title, { timeout: Math.min(timeout + 5_000, 60_000) }, async (t) => {
    if (!server) throw new Error('pointstream did not start (see the first server test)');
    let timer;
    try {
      await Promise.race([
        fn(t, server),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`"${title}" did not finish within ${timeout} ms`)), timeout);
        }),
      ]);
    } catch (err) {
      server.printLog(`"${title}" failed`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  });
}

/** The size of the latest signed digest (0 before the first). */
async function signedSize(server) {
  const { logDigest } = await server.query('{ logDigest { treeSize } }', { token: server.adminToken });
  return logDigest ? Number(logDigest.treeSize) : 0;
}

/** Earns points for bob (admin token: earnPoints is for staff and admins) and waits for a digest that covers the earn. */
async function earnForBob(server, ref) {
  const earned = await server.earn('bob', `${ref}-${Date.now()}`);
  const position = Number(earned.position);
  assert.ok(position > 0, `earnPoints answered position ${earned.position}`);
  await waitFor(async () => (await signedSize(server)) >= position, {
    timeout: 20_000,
    interval: 100,
    what: `a signed digest covering position ${position} (POINTSTREAM_DIGEST_EVERY_EVENTS=1)`,
  });
  return position;
}

test('server: `pointstream keygen` prints a key the module names alike, and serve starts with it as its digest key', { timeout: 60_000 }, async () => {
  const bin = binary();
  keyDir = mkdtempSync(join(tmpdir(), 'pointstream-js-verify-key-'));
  const keyFile = join(keyDir, 'digest.key');
  const stdout = await keygen(bin, keyFile);
  const line = stdout.trim().split('\n').filter((l) => l.trim().startsWith('{')).pop();
  assert.ok(line, `keygen printed no JSON line: ${clip(stdout)}`);
  const printed = JSON.parse(line);
  assert.match(printed.public_key, /^[0-9a-f]{64}$/, `public_key: ${line}`);
  assert.equal(await keyId(printed.public_key), printed.key_id, 'key_id is the first 8 bytes of SHA-256 of the key, in hex');
  pinned = printed.public_key;
  server = await startServer('verify', {
    // Published digests go to the temporary directory, not the working directory.
    env: { POINTSTREAM_DIGEST_KEY_FILE: keyFile, POINTSTREAM_DIGEST_EVERY_EVENTS: '1' },
  });
});

serverTest("server: bob's myLedgerProof verifies with the pinned key and holds his new earn; an altered hash or payload fails", async (t, server) => {
  const bob = await server.token('member', { member: 'bob' });
  const position = await earnForBob(server, 'verify-ledger');
  const bundle = await ledgerProof(server, bob);
  const positions = bundle.entries.map((e) => Number(e.position));
  t.diagnostic(`myLedgerProof: ${bundle.entries.length} entries, digest of ${bundle.digest?.treeSize} events, hasMore ${bundle.hasMore}, pending ${bundle.pending}`);

  assert.equal(bundle.publicKey, pinned, 'the server names the key keygen printed');
  const report = await verifyLedgerProof(bundle, pinned);
  assert.deepEqual(report.problems, [], 'no problem with the honest proof');
  assert.equal(report.ok, true);
  assert.ok(
    positions.includes(position),
    `the earn at position ${position} is among the entries (positions ${clip(positions.join(', '))}; hasMore ${bundle.hasMore}, pending ${bundle.pending})`,
  );

  const other = await newKey();
  assert.equal((await verifyLedgerProof(bundle, other.hex)).ok, false, 'another pinned key refuses it');

  const deep = Math.max(0, bundle.entries.findIndex((e) => e.proof.hashes.length >= 3));
  const hashes = bundle.entries[deep].proof.hashes;
  assert.ok(hashes.length > 0, `entry ${deep} has a proof of at least one hash`);
  const altered = structuredClone(bundle);
  const k = Math.floor(hashes.length / 2);
  altered.entries[deep].proof.hashes[k] = flipChar(hashes[k], 10);
  const alteredReport = await verifyLedgerProof(altered, pinned);
  assert.equal(alteredReport.ok, false, `hash ${k} of ${hashes.length} of entry ${deep}'s proof altered, yet it verified`);

  const edited = structuredClone(bundle);
  const entry = edited.entries.find((e) => Number(e.position) === position) ?? edited.entries[0];
  entry.payload = /[0-9]/.test(entry.payload)
    ? entry.payload.replace(/[0-9]/, (d) => String((Number(d) + 1) % 10))
    : `${entry.payload} `;
  const editedReport = await verifyLedgerProof(edited, pinned);
  assert.equal(editedReport.ok, false, `the payload of position ${entry.position} edited, yet it verified`);
  assert.ok(
    editedReport.problems.some((p) => p.includes(`position ${entry.position})`)),
    `the problems name position ${entry.position}: ${JSON.stringify(editedReport.problems)}`,
  );
});

serverTest('server: an earlier and the latest signed digest are consistent, and the earn is included in the latest', async (t, server) => {
  const admin = server.adminToken;
  const position = await earnForBob(server, 'verify-consistency');
  const data = await server.query(
    '{ logDigest { treeSize rootHash json } logDigests(first: 100) { treeSize rootHash json } }',
    { token: admin },
  );
  const digests = [...data.logDigests, ...(data.logDigest ? [data.logDigest] : [])];
  for (const d of digests) {
    assert.equal(await verifyDigest(d.json, pinned), true, `the digest of ${d.treeSize} events verifies with the pinned key: ${d.json}`);
    const doc = JSON.parse(d.json);
    assert.equal(Number(d.treeSize), doc.tree_size, 'treeSize is the signed tree_size');
    assert.equal(d.rootHash, doc.root_hash, 'rootHash is the signed root_hash');
  }
  const latest = digests.reduce((a, b) => (Number(b.treeSize) > Number(a.treeSize) ? b : a));
  const sizes = [...new Set(digests.map((d) => Number(d.treeSize)))].sort((a, b) => a - b);
  const earlier = digests
    .filter((d) => Number(d.treeSize) > 0 && Number(d.treeSize) < Number(latest.treeSize))
    .reduce((a, b) => (a && Number(a.treeSize) <= Number(b.treeSize) ? a : b), undefined);
  assert.ok(earlier, `an earlier digest than the latest (sizes signed: ${sizes.join(', ')})`);
  const [A, B] = [Number(earlier.treeSize), Number(latest.treeSize)];
  assert.ok(B >= position, `the latest digest (${B} events) covers the earn at ${position}`);
  const [rootA, rootB] = [JSON.parse(earlier.json).root_hash, JSON.parse(latest.json).root_hash];

  const { consistencyProof } = await server.query(`{ consistencyProof(fromSize: ${A}, toSize: ${B}) { fromSize toSize hashes } }`, { token: admin });
  assert.deepEqual([Number(consistencyProof.fromSize), Number(consistencyProof.toSize)], [A, B]);
  assert.equal(await verifyConsistency(A, B, rootA, rootB, consistencyProof.hashes), true, `${A} -> ${B} is consistent`);
  assert.equal(await verifyConsistency(A, B, rootB, rootA, consistencyProof.hashes), false, 'the roots swapped');
  if (consistencyProof.hashes.length) {
    const k = Math.floor(consistencyProof.hashes.length / 2);
    const altered = consistencyProof.hashes.map((h, j) => (j === k ? flipChar(h, 5) : h));
    assert.equal(await verifyConsistency(A, B, rootA, rootB, altered), false, `hash ${k} of the consistency proof altered`);
  }

  const { inclusionProof } = await server.query(
    `{ inclusionProof(position: ${position}, treeSize: ${B}) { position leafIndex treeSize leafHash hashes } }`,
    { token: admin },
  );
  assert.deepEqual(
    [Number(inclusionProof.position), Number(inclusionProof.leafIndex), Number(inclusionProof.treeSize)],
    [position, position - 1, B],
  );
  assert.equal(
    await verifyInclusion(position - 1, B, inclusionProof.leafHash, inclusionProof.hashes, rootB),
    true,
    `position ${position} is in the signed tree of ${B} events`,
  );
  // The leaf is the earn itself: its hash recomputed from the event bob is shown.
  const bob = await server.token('member', { member: 'bob' });
  const myLedgerProof = await ledgerProof(server, bob);
  const event = myLedgerProof.entries.find((e) => Number(e.position) === position);
  assert.ok(event, `bob's ledger proof shows the earn at ${position}`);
  assert.equal(await leafHash(event), inclusionProof.leafHash, 'the leaf hash is the hash of the earn event');
  assert.equal(await verifyInclusion(position - 1, B, inclusionProof.leafHash, inclusionProof.hashes, rootA), false, "not under the earlier digest's root");
});
