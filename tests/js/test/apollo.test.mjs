// Apollo Client (core, no React) at its defaults against the running server:
// HttpLink queries (Apollo asks for application/graphql-response+json),
// GraphQLWsLink subscriptions, and Automatic Persisted Queries over POST and
// GET, with every request recorded by a fetch wrapper.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import WebSocket from 'ws';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client/core';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { createClient } from 'graphql-ws';
import { suite, deferred, untilReceived, clip, hasDemoStores, recordingFetch } from '../server.mjs';

const { test } = suite('apollo');

const sha256 = (text) => createHash('sha256').update(text).digest('hex');


/** Awaits `promise`; when it fails, the requests made so far are added to the error. */
async function logged(recorder, promise) {
  try {
    return await promise;
  } catch (err) {
    err.message = `${err.message}\nrequests:\n${recorder.requests.map(show).join('\n') || '(none)'}`;
    throw err;
  }
}

/** One request, readable in a failure message. */
function show(r) {
  return `${r.method} ${r.url.pathname}${r.url.search} ${r.body ? JSON.stringify(r.body) : ''} → ${r.status} ${r.contentType} ${clip(r.answer)}`;
}

/** The GraphQL parameters a request carried: from the JSON body, or from the URL of a GET. */
function params(r) {
  if (r.method === 'GET') {
    const p = Object.fromEntries(r.url.searchParams.entries());
    return {
      query: p.query,
      operationName: p.operationName,
      variables: p.variables && JSON.parse(p.variables),
      extensions: p.extensions && JSON.parse(p.extensions),
    };
  }
  return r.body;
}

test('HttpLink runs queries, public and with a bearer token', async (t, server) => {
  const recorder = recordingFetch();
  const client = new ApolloClient({
    link: new HttpLink({ uri: server.url, fetch: recorder.fetch }),
    cache: new InMemoryCache(),
  });
  const stores = await logged(recorder, client.query({ query: gql`query Stores { stores { id name } }` }));
  assert.equal(stores.error, undefined, String(stores.error));
  assert.ok(hasDemoStores(stores.data), recorder.requests.map(show).join('\n'));

  const bob = await server.token('member', { member: 'bob' });
  const signedIn = new ApolloClient({
    link: new HttpLink({ uri: server.url, fetch: recorder.fetch, headers: { authorization: `Bearer ${bob}` } }),
    cache: new InMemoryCache(),
  });
  const balances = await logged(recorder, signedIn.query({ query: gql`query Balances { balances(member: "bob") { storeId balance } }` }));
  const cafe = balances.data.balances.find((b) => b.storeId === 'cafe');
  assert.ok(cafe && cafe.balance > 0, `bob has points at the cafe: ${JSON.stringify(balances.data)}`);

  for (const r of recorder.requests) {
    assert.equal(r.method, 'POST', show(r));
    assert.match(r.headers.accept, /application\/graphql-response\+json/, 'Apollo asks for graphql-response+json');
    assert.equal(r.status, 200, show(r));
    assert.match(r.contentType, /^application\/graphql-response\+json/, `answered with the media type asked for first: ${show(r)}`);
  }
});

test("GraphQLWsLink: a subscription receives dan's wallet update", async (t, server) => {
  const wsClient = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${server.adminToken}` },
  });
  const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });
  const received = deferred();
  const subscription = client
    .subscribe({ query: gql`subscription Dan { walletUpdates(member: "dan") { position kind delta balanceAfter } }` })
    .subscribe({
      next: (result) => (result.error ? received.reject(result.error) : received.resolve(result)),
      error: (err) => received.reject(err),
      complete: () => received.reject(new Error('the subscription completed before any update')),
    });
  try {
    const result = await untilReceived((i) => server.earn('dan', `apollo-ws-${i}`), received.promise, {
      what: "dan's wallet update through GraphQLWsLink",
    });
    const update = result.data.walletUpdates;
    assert.equal(update.kind, 'earn', JSON.stringify(result));
    assert.ok(update.delta > 0 && update.balanceAfter >= update.delta, JSON.stringify(update));
  } finally {
    subscription.unsubscribe();
    await wsClient.dispose();
  }
});

test('an unknown persisted-query hash is PersistedQueryNotFound over POST and GET', async (t, server) => {
  const extensions = { persistedQuery: { version: 1, sha256Hash: sha256('query Unknown { stores { id } } # never sent') } };
  const post = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ extensions }),
  });
  const get = await fetch(`${server.url}?extensions=${encodeURIComponent(JSON.stringify(extensions))}`, {
    headers: { accept: 'application/json' },
  });
  for (const [how, response] of [['POST', post], ['GET', get]]) {
    const text = await response.text();
    let body;
    assert.doesNotThrow(() => (body = JSON.parse(text)), `${how}: a JSON answer: ${response.status} ${clip(text)}`);
    const error = body.errors?.[0];
    assert.ok(error, `${how}: an error: ${response.status} ${text}`);
    assert.equal(error.message, 'PersistedQueryNotFound', `${how}: ${text}`);
    assert.equal(error.extensions?.code, 'PERSISTED_QUERY_NOT_FOUND', `${how}: ${text}`);
  }
});

for (const useGET of [false, true]) {
  const name = useGET ? 'createPersistedQueryLink({ sha256, useGETForHashedQueries: true })' : 'createPersistedQueryLink({ sha256 })';
  test(`${name}: the query runs, and the second time only its hash is sent`, async (t, server) => {
    const recorder = recordingFetch();
    const link = ApolloLink.from([
      createPersistedQueryLink(useGET ? { sha256, useGETForHashedQueries: true } : { sha256 }),
      new HttpLink({ uri: server.url, fetch: recorder.fetch }),
    ]);
    const client = new ApolloClient({ link, cache: new InMemoryCache() });
    // A query of its own per test: its hash is unknown to the server at first.
    const query = useGET ? gql`query StoresByHashGET { stores { id name open } }` : gql`query StoresByHash { stores { id name } }`;

    const first = await logged(recorder, client.query({ query, fetchPolicy: 'network-only' }));
    const log = () => recorder.requests.map(show).join('\n');
    assert.ok(hasDemoStores(first.data), log());
    // A fresh server knows no hash: the hash alone is refused as unknown, then
    // hash and query together run and register it.
    const registered = recorder.requests.length;
    assert.equal(registered, 2, `two requests the first time: ${log()}`);
    const [miss, full] = recorder.requests.map(params);
    const hash = miss.extensions?.persistedQuery?.sha256Hash;
    assert.match(hash ?? '', /^[0-9a-f]{64}$/, `the first request carries the hash: ${log()}`);
    assert.equal(miss.query, undefined, `the first request sends no query text: ${log()}`);
    assert.equal(recorder.requests[0].method, useGET ? 'GET' : 'POST', log());
    assert.match(recorder.requests[0].answer, /PersistedQueryNotFound/, log());
    assert.match(recorder.requests[0].answer, /PERSISTED_QUERY_NOT_FOUND/, log());
    assert.equal(typeof full.query, 'string', `the retry sends the query: ${log()}`);
    assert.equal(full.extensions?.persistedQuery?.sha256Hash, hash, log());
    assert.equal(hash, sha256(full.query), `the hash is the SHA-256 of the query text sent: ${log()}`);

    const second = await logged(recorder, client.query({ query, fetchPolicy: 'network-only' }));
    assert.deepEqual(second.data, first.data);
    const again = recorder.requests.slice(registered);
    assert.equal(again.length, 1, `one request the second time: ${log()}`);
    const [request] = again;
    const sent = params(request);
    assert.equal(sent.query, undefined, `the second request sends no query text: ${show(request)}`);
    assert.equal(sent.extensions?.persistedQuery?.sha256Hash, hash, show(request));
    assert.equal(sent.extensions?.persistedQuery?.version, 1, show(request));
    assert.equal(request.method, useGET ? 'GET' : 'POST', show(request));
    assert.equal(request.status, 200, show(request));
  });
}
