// Subscriptions over /graphql/ws with the two client libraries people use,
// unmodified: graphql-ws (graphql-transport-ws protocol) and the legacy
// subscriptions-transport-ws (graphql-ws protocol). Tokens go in
// connection_init's payload; a bad or missing one closes the socket.

import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import { suite, deferred, untilReceived } from '../server.mjs';

const { test } = suite('graphql-ws');

const walletUpdates = 'subscription { walletUpdates(member: "dan") { position kind delta balanceAfter } }';

/** Checks one walletUpdates result: an earn for dan that left a positive balance. */
function assertEarnUpdate(result) {
  assert.equal(result.errors, undefined, `the update carries errors: ${JSON.stringify(result.errors)}`);
  const update = result.data?.walletUpdates;
  assert.ok(update, `an update: ${JSON.stringify(result)}`);
  assert.equal(update.kind, 'earn');
  assert.ok(update.delta > 0, `delta ${update.delta}`);
  assert.ok(update.balanceAfter >= update.delta, `balanceAfter ${update.balanceAfter}`);
  assert.equal(typeof update.position, 'number', `position is a JSON number: ${JSON.stringify(update.position)}`);
}

for (const [who, mint] of [
  ['dan himself (a member token)', (server) => server.token('member', { member: 'dan' })],
  ['the admin', (server) => server.adminToken],
]) {
  test(`graphql-ws: ${who} receives dan's wallet update after an earnPoints over HTTP`, async (t, server) => {
    const token = await mint(server);
    const connected = deferred();
    const client = createClient({
      url: server.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams: { Authorization: `Bearer ${token}` },
      on: { connected: () => connected.resolve() },
    });
    const received = deferred();
    const unsubscribe = client.subscribe(
      { query: walletUpdates },
      {
        next: (result) => received.resolve(result),
        error: (err) => received.reject(new Error(`the subscription failed: ${describe(err)}`)),
        complete: () => received.reject(new Error('the subscription completed before any update')),
      },
    );
    try {
      await connected.wait(10_000, 'connection_ack');
      const tag = who.startsWith('dan') ? 'member' : 'admin';
      const result = await untilReceived((i) => server.earn('dan', `gws-${tag}-${i}`), received.promise, {
        what: "dan's wallet update over graphql-transport-ws",
      });
      assertEarnUpdate(result);
    } finally {
      unsubscribe();
      await dispose(client);
    }
  });
}

/**
 * Disposes a graphql-ws client. dispose() waits for a connection attempt in
 * flight, and rejects with its close event when the server refuses it (the
 * client retries a 4403 at its defaults): that refusal is what the test
 * looked at already, not a failure of its own.
 */
async function dispose(client) {
  try {
    await client.dispose();
  } catch (err) {
    if (!(err && typeof err === 'object' && 'code' in err && 'reason' in err)) throw err;
  }
}

/** A close event or error, readable. */
function describe(err) {
  if (err && typeof err === 'object' && 'code' in err && 'reason' in err) return `close ${err.code} ${err.reason}`;
  if (Array.isArray(err)) return JSON.stringify(err);
  return String(err?.stack || err);
}

for (const [what, params] of [
  ['a malformed token', async () => ({ Authorization: 'Bearer not-a-token' })],
  [
    'an admin token signed with another secret',
    async (server) => ({ Authorization: `Bearer ${await server.token('admin', { secret: 'not-the-server-secret' })}` }),
  ],
  ['no token', async () => undefined],
]) {
  test(`graphql-ws: ${what} at connection_init ends with close code 4403`, async (t, server) => {
    const connectionParams = await params(server);
    const closed = deferred();
    const seen = [];
    const client = createClient({
      url: server.wsUrl,
      webSocketImpl: WebSocket,
      connectionParams,
      on: {
        connected: () => seen.push('connection_ack'),
        closed: (event) => closed.resolve(event),
      },
    });
    const unsubscribe = client.subscribe(
      { query: walletUpdates },
      {
        next: (result) => seen.push(`next ${JSON.stringify(result)}`),
        error: (err) => seen.push(`error ${describe(err)}`),
        complete: () => seen.push('complete'),
      },
    );
    try {
      const event = await closed.wait(15_000, 'the socket to close');
      assert.equal(
        event.code,
        4403,
        `expected close code 4403, got ${event.code} "${event.reason}"; before it the client saw: ${seen.join('; ') || 'nothing'}`,
      );
      assert.ok(!seen.includes('connection_ack'), `the server acknowledged the connection: ${seen.join('; ')}`);
    } finally {
      unsubscribe();
      await dispose(client);
    }
  });
}

test("subscriptions-transport-ws: the legacy protocol receives dan's wallet update", async (t, server) => {
  const connected = deferred();
  const client = new SubscriptionClient(
    server.wsUrl,
    {
      connectionParams: { Authorization: `Bearer ${server.adminToken}` },
      connectionCallback: (error) => (error ? connected.reject(new Error(`connection_error: ${JSON.stringify(error)}`)) : connected.resolve()),
    },
    WebSocket,
  );
  const received = deferred();
  const subscription = client.request({ query: walletUpdates }).subscribe({
    next: (result) => received.resolve(result),
    error: (err) => received.reject(new Error(`the subscription failed: ${describe(err)}`)),
    complete: () => received.reject(new Error('the subscription completed before any update')),
  });
  try {
    await connected.wait(10_000, 'connection_ack');
    const result = await untilReceived((i) => server.earn('dan', `legacy-${i}`), received.promise, {
      what: "dan's wallet update over the legacy protocol",
    });
    assertEarnUpdate(result);
  } finally {
    subscription.unsubscribe();
    client.close();
  }
});

test('subscriptions-transport-ws: a bad token gets connection_error, then the socket closes', async (t, server) => {
  const refused = deferred();
  const disconnected = deferred();
  const client = new SubscriptionClient(
    server.wsUrl,
    {
      connectionParams: { Authorization: 'Bearer not-a-token' },
      connectionCallback: (error) => (error ? refused.resolve(error) : refused.reject(new Error('the server acknowledged the connection'))),
    },
    WebSocket,
  );
  client.onDisconnected(() => disconnected.resolve());
  try {
    const error = await refused.wait(10_000, 'connection_error');
    assert.ok(error, 'connection_error has a payload');
    await disconnected.wait(10_000, 'the server to close the socket after connection_error');
  } finally {
    client.close();
  }
});
