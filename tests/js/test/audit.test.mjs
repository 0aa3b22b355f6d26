// graphql-http's audit of the GraphQL over HTTP spec against the running
// server: no MUST may fail (status `error`) and no SHOULD (status `warn`).
// Every result that is not ok is printed with its id, name and reason.

import assert from 'node:assert/strict';
import { auditServer } from 'graphql-http';
import { suite } from '../server.mjs';

const { test } = suite('audit');

test("graphql-http's server audit: no MUST and no SHOULD fails", async (t, server) => {
  const results = await auditServer({ url: server.url });
  assert.ok(results.length > 20, `the audit ran (${results.length} results)`);
  const notOk = results.filter((r) => r.status !== 'ok');
  const lines = [];
  for (const r of notOk) {
    let answer = '';
    try {
      answer = ` | answer: ${r.response.status} ${r.response.headers.get('content-type')} ${(await r.response.text()).slice(0, 300)}`;
    } catch {}
    lines.push(`${r.status.toUpperCase()} ${r.id} ${r.name}: ${r.reason}${answer}`);
  }
  const counts = Object.fromEntries(['ok', 'notice', 'warn', 'error'].map((s) => [s, results.filter((r) => r.status === s).length]));
  t.diagnostic(`audit: ${JSON.stringify(counts)}`);
  for (const line of lines) t.diagnostic(line);
  if (lines.length) process.stderr.write(`graphql-http audit, results that are not ok:\n${lines.join('\n')}\n`);
  const failing = notOk.filter((r) => r.status === 'error' || r.status === 'warn');
  assert.deepEqual(
    failing.map((r) => `${r.status} ${r.id}`),
    [],
    `audits that failed (error = MUST, warn = SHOULD):\n${lines.filter((l) => /^(ERROR|WARN) /.test(l)).join('\n')}`,
  );
});
