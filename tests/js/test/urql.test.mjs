// @urql/core at its documented defaults: `url` and
// `exchanges: [cacheExchange, fetchExchange]`, plus fetchOptions for a bearer
// token. urql sends queries as GET (preferGetMethod: 'within-url-limit') and
// mutations as POST, asking for application/graphql-response+json first.

import assert from 'node:assert/strict';
import { Client, cacheExchange, fetchExchange, gql } from '@urql/core';
import { suite, clip, hasDemoStores, recordingFetch } from '../server.mjs';

const { test } = suite('urql');


const show = (r) => `${r.method} ${r.url.pathname}${r.url.search} → ${r.status} ${r.contentType} ${clip(r.answer)}`;

test('a public query goes out as GET and its data comes back', async (t, server) => {
  const recorder = recordingFetch();
  const client = new Client({ url: server.url, exchanges: [cacheExchange, fetchExchange], fetch: recorder.fetch });
  const result = await client.query(gql`query Stores { stores { id name } }`, {}).toPromise();
  const log = recorder.requests.map(show).join('\n');
  assert.equal(result.error, undefined, `${clip(result.error)}\n${log}`);
  assert.ok(hasDemoStores(result.data), log);
  assert.equal(recorder.requests.length, 1, log);
  const [request] = recorder.requests;
  assert.equal(request.method, 'GET', `urql sent its query as GET: ${log}`);
  assert.ok(request.url.searchParams.get('query')?.includes('stores'), `the query is in the URL: ${log}`);
  assert.equal(request.status, 200, log);
  assert.match(request.headers.accept, /^application\/graphql-response\+json/, 'urql asks for graphql-response+json first');
  assert.match(request.contentType, /^application\/graphql-response\+json/, `answered with the media type asked for first: ${log}`);
});

test('a query with variables and a bearer token goes out as GET and its data comes back', async (t, server) => {
  const recorder = recordingFetch();
  const bob = await server.token('member', { member: 'bob' });
  const client = new Client({
    url: server.url,
    exchanges: [cacheExchange, fetchExchange],
    fetch: recorder.fetch,
    fetchOptions: { headers: { authorization: `Bearer ${bob}` } },
  });
  const result = await client
    .query(gql`query Balances($member: String!) { balances(member: $member) { storeId balance } }`, { member: 'bob' })
    .toPromise();
  const log = recorder.requests.map(show).join('\n');
  assert.equal(result.error, undefined, `${clip(result.error)}\n${log}`);
  const cafe = result.data.balances.find((b) => b.storeId === 'cafe');
  assert.ok(cafe && cafe.balance > 0, `bob has points at the cafe: ${JSON.stringify(result.data)}`);
  assert.deepEqual(recorder.requests.map((r) => r.method), ['GET'], log);
  assert.deepEqual(JSON.parse(recorder.requests[0].url.searchParams.get('variables')), { member: 'bob' }, log);
});

test('a mutation goes out as POST and its data comes back', async (t, server) => {
  const recorder = recordingFetch();
  const client = new Client({
    url: server.url,
    exchanges: [cacheExchange, fetchExchange],
    fetch: recorder.fetch,
    fetchOptions: { headers: { authorization: `Bearer ${server.adminToken}` } },
  });
  const result = await client
    .mutation(
      gql`mutation Earn { earnPoints(member: "dan", store: "cafe", purchaseRef: "urql-1", amount: 2500, idempotencyKey: "urql-1") { position balance { balance } } }`,
      {},
    )
    .toPromise();
  const log = recorder.requests.map(show).join('\n');
  assert.equal(result.error, undefined, `${clip(result.error)}\n${log}`);
  assert.ok(result.data.earnPoints.balance.balance > 0, log);
  assert.deepEqual(recorder.requests.map((r) => r.method), ['POST'], log);
});

test('a mutation sent as GET is refused with 405', async (t, server) => {
  const query = 'mutation { earnPoints(member: "dan", store: "cafe", purchaseRef: "get-1", amount: 2500) { position } }';
  const response = await fetch(`${server.url}?query=${encodeURIComponent(query)}`, {
    headers: { accept: 'application/graphql-response+json', authorization: `Bearer ${server.adminToken}` },
  });
  const text = await response.text();
  assert.equal(response.status, 405, `a mutation over GET: ${response.status} ${clip(text)}`);
  const after = await server.query('{ balances(member: "dan") { storeId balance earned } }', { token: server.adminToken });
  const ledger = await server.query('{ ledger(member: "dan", first: 100) { nodes { purchaseRef } } }', { token: server.adminToken });
  assert.ok(!ledger.ledger.nodes.some((n) => n.purchaseRef === 'get-1'), `nothing was written: ${JSON.stringify(after)}`);
});
