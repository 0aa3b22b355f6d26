// Every GraphQL example in README.md and docs/*.md validates, with graphql-js,
// against schema.graphql (the SDL the server serves; the Rust test
// tests/docs.rs runs the same examples against a server loaded with the demo).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildSchema, parse, validate } from 'graphql';
import { repoRoot } from '../server.mjs';

const schema = buildSchema(readFileSync(join(repoRoot, 'schema.graphql'), 'utf8'));

/** The ```graphql blocks of a Markdown file, with their line numbers. */
function examples(file) {
  const lines = readFileSync(file, 'utf8').split('\n');
  const found = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```graphql') continue;
    const start = i + 1;
    const body = [];
    for (i++; i < lines.length && lines[i].trim() !== '```'; i++) body.push(lines[i]);
    found.push({ place: `${file}:${start}`, document: body.join('\n') });
  }
  return found;
}

const files = [
  join(repoRoot, 'README.md'),
  ...readdirSync(join(repoRoot, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => join(repoRoot, 'docs', name)),
];

test('every GraphQL example in the docs validates against schema.graphql', () => {
  let count = 0;
  for (const file of files) {
    for (const { place, document } of examples(file)) {
      const errors = validate(schema, parse(document));
      assert.deepEqual(errors.map((e) => e.message), [], place);
      count++;
    }
  }
  assert.ok(count >= 10, `the docs hold their examples (${count} found)`);
});
