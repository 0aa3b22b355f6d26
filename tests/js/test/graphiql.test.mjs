// GraphiQL in a real browser, as a person uses it. Every request the page makes
// is routed through the test: one to a host other than loopback is aborted and
// recorded, and there must be none (the page works with no internet). GraphiQL
// loads with the development admin token in its Headers tab; a query typed into
// the editor runs and its result shows; the Documentation Explorer lists
// Query; a subscription started in GraphiQL shows an update caused over HTTP
// outside the page.
//
// The selectors are GraphiQL 3's (api/assets/graphiql/graphiql-3.*.min.js):
// its editors are CodeMirror 5, whose instance hangs off the `.CodeMirror`
// element, so the tests read editors through it and type with the keyboard.

import assert from 'node:assert/strict';
import { before, after } from 'node:test';
import { suite, outDir, untilReceived, hasDemoStores } from '../server.mjs';
import { launchBrowser, screenshots } from '../browser.mjs';

const { test, onFailure } = suite('graphiql');

let browser;
let context;
let page;
const offsite = []; // requests to hosts other than loopback, aborted
const sockets = []; // WebSocket URLs the page opened
const problems = []; // uncaught page errors
const consoleLines = [];
let loaded = false; // GraphiQL came up: later tests fail at once without it

function assertLoaded() {
  assert.ok(loaded, 'GraphiQL did not load (see the first test of this file)');
}

const loopback = (hostname) => hostname === 'localhost' || hostname === '[::1]' || hostname === '::1' || /^127\./.test(hostname);

before(async () => {
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (/^(data|blob):$/.test(url.protocol) || loopback(url.hostname)) return route.continue();
    offsite.push(`${route.request().method()} ${url.href}`);
    return route.abort('blockedbyclient');
  });
  page = await context.newPage();
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('pageerror', (err) => problems.push(String(err.stack || err)));
  page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
});

after(async () => {
  await browser?.close();
});

onFailure(async (title) => {
  process.stderr.write(`browser console:\n${consoleLines.join('\n') || '(nothing)'}\n`);
  if (offsite.length) process.stderr.write(`requests to other hosts (aborted):\n${offsite.join('\n')}\n`);
  await screenshots(context, outDir('graphiql'), title);
});

/** The text of every CodeMirror editor matching `selector`. */
function editorTexts(selector) {
  return page.evaluate(
    (sel) => Array.from(document.querySelectorAll(`${sel} .CodeMirror`)).map((el) => (el.CodeMirror ? el.CodeMirror.getValue() : el.textContent)),
    selector,
  );
}

/** The result pane's text. */
async function resultText() {
  const [text] = await editorTexts('.result-window');
  return text ?? '';
}

/**
 * Replaces the query editor's text by typing `query` (with one operation,
 * `name`) into it, then waits until GraphiQL has taken it in: it parses the
 * editor's text 100 ms after the last change and keeps the operation's name in
 * localStorage, where the test can see it.
 */
async function typeQuery(query, name) {
  const editor = page.locator('.graphiql-query-editor .CodeMirror').first();
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Backspace');
  // insertText: the text as typed, without the editor's bracket auto-closing.
  await page.keyboard.insertText(query);
  const [typed] = await editorTexts('.graphiql-query-editor');
  assert.equal(typed, query, 'the query editor holds what was typed');
  await page
    .waitForFunction(
      ([q, n]) => localStorage.getItem('graphiql:query') === q && localStorage.getItem('graphiql:operationName') === n,
      [query, name],
      { timeout: 10_000, polling: 20 },
    )
    .catch((err) => {
      throw new Error(`GraphiQL did not take in the typed operation ${name}: ${err.message}`);
    });
}

/** Asserts that nothing left loopback so far. */
function assertStayedHome() {
  assert.deepEqual(offsite, [], `the page tried to reach other hosts:\n${offsite.join('\n')}`);
  const away = sockets.filter((url) => !loopback(new URL(url).hostname));
  assert.deepEqual(away, [], `the page opened WebSockets to other hosts:\n${away.join('\n')}`);
}

test('GraphiQL loads from the binary alone, with the admin token in the Headers tab', async (t, server) => {
  const response = await page.goto(server.url, { waitUntil: 'load' });
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-type'] ?? '', /^text\/html/);
  await page
    .locator('.graphiql-container')
    .waitFor({ timeout: 20_000 })
    .catch((err) => {
      throw new Error(
        `GraphiQL did not come up: ${err.message}\n` +
          (offsite.length ? `it tried to load from other hosts (aborted):\n${offsite.join('\n')}` : 'no request left loopback'),
      );
    });
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor({ timeout: 20_000 });
  await page.locator('button.graphiql-execute-button').waitFor({ timeout: 20_000 });
  loaded = true;
  assertStayedHome();
  const tools = await editorTexts('.graphiql-editor-tool');
  assert.ok(
    tools.some((text) => text.includes(`Bearer ${server.adminToken}`)),
    `the Headers tab holds the development admin token: ${JSON.stringify(tools)}`,
  );
  assert.deepEqual(problems, [], `uncaught errors in the page:\n${problems.join('\n')}`);
});

test('a query typed into the editor runs and its result shows in the result pane', async (t) => {
  assertLoaded();
  await typeQuery('query TypedStores {\n  stores {\n    id\n    name\n  }\n}', 'TypedStores');
  await page.locator('button.graphiql-execute-button').click();
  await page.waitForFunction(
    () => {
      const el = document.querySelector('.result-window .CodeMirror');
      return el && el.CodeMirror && el.CodeMirror.getValue().includes('Corner Cafe');
    },
    null,
    { timeout: 15_000 },
  ).catch(async (err) => {
    throw new Error(`the result pane never showed the cafe: ${await resultText()}\n${err.message}`);
  });
  const result = JSON.parse(await resultText());
  assert.equal(result.errors, undefined, JSON.stringify(result));
  assert.ok(hasDemoStores(result.data), JSON.stringify(result.data));
  assertStayedHome();
});

test('the Documentation Explorer lists Query', async () => {
  assertLoaded();
  const explorer = page.locator('section.graphiql-doc-explorer');
  if (!(await explorer.isVisible())) {
    await page.locator('button[aria-label="Show Documentation Explorer"]').click();
  }
  await explorer.waitFor({ timeout: 15_000 });
  const query = explorer.locator('a.graphiql-doc-explorer-type-name', { hasText: /^Query$/ });
  await query.first().waitFor({ timeout: 15_000 }).catch(async (err) => {
    throw new Error(`the Documentation Explorer does not list Query; it shows:\n${await explorer.innerText()}\n${err.message}`);
  });
  // Into Query: its fields are listed.
  await query.first().click();
  await explorer.locator('a.graphiql-doc-explorer-field-name', { hasText: /^stores$/ }).first().waitFor({ timeout: 10_000 });
  assertStayedHome();
});

test('a subscription started in GraphiQL shows an update made over HTTP', async (t, server) => {
  assertLoaded();
  await typeQuery('subscription DanWallet {\n  walletUpdates(member: "dan") {\n    position\n    kind\n    delta\n    balanceAfter\n  }\n}', 'DanWallet');
  const socketsBefore = sockets.length;
  await page.locator('button.graphiql-execute-button').click();
  const shown = page
    .waitForFunction(
      () => {
        const el = document.querySelector('.result-window .CodeMirror');
        const text = el && el.CodeMirror ? el.CodeMirror.getValue() : '';
        return text.includes('walletUpdates') && text.includes('"earn"');
      },
      null,
      { timeout: 40_000, polling: 100 },
    )
    .then(() => true);
  await untilReceived((i) => server.earn('dan', `graphiql-${i}`), shown, { timeout: 30_000, what: 'the update in the result pane' }).catch(
    async (err) => {
      throw new Error(`${err.message}; the result pane shows: ${await resultText()}`);
    },
  );
  const result = JSON.parse(await resultText());
  assert.equal(result.errors, undefined, JSON.stringify(result));
  assert.equal(result.data.walletUpdates.kind, 'earn');
  assert.ok(result.data.walletUpdates.delta > 0, JSON.stringify(result));
  assert.ok(sockets.length > socketsBefore, 'the subscription went over a WebSocket');
  assert.ok(sockets.slice(socketsBefore).every((url) => new URL(url).pathname === '/graphql/ws'), sockets.join(', '));
  // Stop it (the execute button is the stop button while it runs).
  await page.locator('button.graphiql-execute-button').click();
  assertStayedHome();
  assert.deepEqual(problems, [], `uncaught errors in the page:\n${problems.join('\n')}`);
});
