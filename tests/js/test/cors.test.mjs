// CORS as a real browser enforces it. Two tiny page servers on other loopback
// ports serve a page whose script POSTs a GraphQL query (JSON, with a bearer
// token: a preflighted request) to pointstream. pointstream runs with
// `--cors-origins` naming only the first: the first page's fetch succeeds,
// the second's is blocked by the browser. A second pointstream without
// `--cors-origins`, on loopback, lets any loopback origin in.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after } from 'node:test';
import { suite, startServer, outDir } from '../server.mjs';
import { launchBrowser, screenshots } from '../browser.mjs';

// The page: reads the target URL and token from its own query string, fetches,
// and leaves the outcome in window.outcome.
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head>
<body><pre id="out">running</pre>
<script>
(async () => {
  const params = new URLSearchParams(location.search);
  try {
    const response = await fetch(params.get('target') + '/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' + params.get('token') },
      body: JSON.stringify({ query: '{ balances(member: "bob") { storeId balance } }' }),
    });
    window.outcome = { status: response.status, body: await response.json() };
  } catch (err) {
    window.outcome = { rejected: String(err) };
  }
  document.getElementById('out').textContent = JSON.stringify(window.outcome);
})();
</script></body></html>`;

function pageServer() {
  const server = createServer((req, res) => {
    if (req.url.startsWith('/favicon')) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const pages = {};
let browser;
let context;

const allowedOrigin = () => `http://127.0.0.1:${pages.allowed.address().port}`;
const otherOrigin = () => `http://127.0.0.1:${pages.other.address().port}`;

// The page servers and the browser come first: pointstream is told the allowed origin's port.
const { test, onFailure } = suite('cors', async () => {
  pages.allowed = await pageServer();
  pages.other = await pageServer();
  browser = await launchBrowser();
  return { args: ['--cors-origins', allowedOrigin()] };
});

after(async () => {
  await browser?.close();
  for (const server of Object.values(pages)) server.close();
});

onFailure((title) => screenshots(context, outDir('cors'), title));

/** Opens `origin`'s page in a fresh browser context, aimed at `target`; returns window.outcome and the console. */
async function fetchFrom(origin, target, token) {
  context = await browser.newContext();
  const tab = await context.newPage();
  const console = [];
  tab.on('console', (message) => console.push(`${message.type()}: ${message.text()}`));
  const requests = [];
  tab.on('request', (request) => requests.push(`${request.method()} ${request.url()}`));
  await tab.goto(`${origin}/?target=${encodeURIComponent(target)}&token=${encodeURIComponent(token)}`);
  await tab.waitForFunction(() => window.outcome !== undefined, null, { timeout: 15_000 });
  const outcome = await tab.evaluate(() => window.outcome);
  return { outcome, console, requests };
}

test('a page on the allowed origin fetches with a bearer token', async (t, server) => {
  const { outcome, console } = await fetchFrom(allowedOrigin(), server.origin, server.adminToken);
  assert.equal(outcome.rejected, undefined, `the browser blocked the allowed origin: ${outcome.rejected}\n${console.join('\n')}`);
  assert.equal(outcome.status, 200, JSON.stringify(outcome));
  assert.equal(outcome.body.errors, undefined, JSON.stringify(outcome.body));
  assert.ok(outcome.body.data.balances.some((b) => b.storeId === 'cafe' && b.balance > 0), JSON.stringify(outcome.body));
  await context.close();
});

test('a page on another origin is blocked by the browser', async (t, server) => {
  const { outcome, console } = await fetchFrom(otherOrigin(), server.origin, server.adminToken);
  assert.ok(
    outcome.rejected,
    `the fetch from ${otherOrigin()} (not in --cors-origins) should have been blocked, it got ${JSON.stringify(outcome)}`,
  );
  assert.match(outcome.rejected, /TypeError|Failed to fetch/, outcome.rejected);
  assert.ok(
    console.some((line) => /CORS|Access-Control-Allow-Origin/i.test(line)),
    `the browser says why (CORS): ${console.join('\n')}`,
  );
  await context.close();
});

test('without --cors-origins, a server on loopback lets loopback origins in', async (t) => {
  const plain = await startServer('cors-default');
  try {
    for (const origin of [otherOrigin(), otherOrigin().replace('127.0.0.1', 'localhost')]) {
      const { outcome, console } = await fetchFrom(origin, plain.origin, plain.adminToken);
      assert.equal(outcome.rejected, undefined, `${origin} was blocked: ${outcome.rejected}\n${console.join('\n')}`);
      assert.equal(outcome.status, 200, JSON.stringify(outcome));
      assert.ok(outcome.body.data?.balances, JSON.stringify(outcome.body));
      await context.close();
    }
  } catch (err) {
    plain.printLog('the server without --cors-origins');
    throw err;
  } finally {
    await plain.stop();
  }
});
