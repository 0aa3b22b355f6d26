// graphql-js introspects the running server with every optional part of the
// introspection query on, and the schema it rebuilds from the answer must be
// the one in schema.graphql: no breaking change either way. Timestamps and
// positions must not be 32-bit Int.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildClientSchema,
  buildSchema,
  findBreakingChanges,
  findDangerousChanges,
  getIntrospectionQuery,
  getNamedType,
  isInputObjectType,
  isInterfaceType,
  isObjectType,
  printSchema,
  specifiedDirectives,
  specifiedScalarTypes,
  GraphQLSchema,
} from 'graphql';
import { suite, repoRoot } from '../server.mjs';

const { test } = suite('introspection');
const sdl = readFileSync(join(repoRoot, 'schema.graphql'), 'utf8');
const file = buildSchema(sdl);
let served;

// Built-in directives schema.graphql does not declare: graphql-js fills in its
// own, which need not be the server's (graphql-js 16.15 lets @deprecated
// stand on DIRECTIVE_DEFINITION too, a draft of the next spec), so changes to
// them compare two libraries' built-ins, not schema.graphql with the server.
const undeclaredBuiltIns = specifiedDirectives
  .map((d) => d.name)
  .filter((name) => !new RegExp(`^directive @${name}\\b`, 'm').test(sdl));
// Standard scalars (Int, Float, String, Boolean, ID) exist in every schema: an
// SDL names none, and graphql-js builds only those it references, while a
// server may list all five.
const standardScalars = specifiedScalarTypes.map((t) => t.name);
const aboutUndeclaredBuiltIn = (change) =>
  (change.type.startsWith('DIRECTIVE_') &&
    undeclaredBuiltIns.some((name) => new RegExp(`\\b${name}\\b`).test(change.description))) ||
  (change.type === 'TYPE_REMOVED' && standardScalars.some((name) => new RegExp(`^(Standard scalar )?${name} was removed`).test(change.description)));

const introspectionQuery = getIntrospectionQuery({
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
});

test('the full introspection query succeeds over HTTP', async (t, server) => {
  const { status, body } = await server.post(introspectionQuery, { operationName: 'IntrospectionQuery' });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.errors, undefined, `introspection answered errors: ${JSON.stringify(body.errors, null, 2)}`);
  assert.ok(body.data?.__schema, 'the answer has data.__schema');
  served = buildClientSchema(body.data);
});

test('the served schema and schema.graphql have no breaking change either way', async (t, server) => {
  assert.ok(served, 'introspection succeeded');
  const dangerous = [
    ...findDangerousChanges(file, served).map((c) => `schema.graphql → served: ${c.type}: ${c.description}`),
    ...findDangerousChanges(served, file).map((c) => `served → schema.graphql: ${c.type}: ${c.description}`),
  ];
  // Reported, not failed: e.g. an argument default changed.
  t.diagnostic(dangerous.length ? `${dangerous.length} dangerous changes:` : 'no dangerous change either way');
  for (const line of dangerous) t.diagnostic(line);
  const describe = (c) => `${c.type}: ${c.description}`;
  const builtIns = [...findBreakingChanges(file, served), ...findBreakingChanges(served, file)].filter(aboutUndeclaredBuiltIn);
  if (builtIns.length) {
    t.diagnostic('ignored, built-ins that schema.graphql does not declare:');
    for (const change of builtIns) t.diagnostic(describe(change));
  }
  const forward = findBreakingChanges(file, served).filter((c) => !aboutUndeclaredBuiltIn(c)).map(describe);
  const backward = findBreakingChanges(served, file).filter((c) => !aboutUndeclaredBuiltIn(c)).map(describe);
  assert.deepEqual(forward, [], `from schema.graphql to the served schema:\n${forward.join('\n')}`);
  assert.deepEqual(backward, [], `from the served schema to schema.graphql:\n${backward.join('\n')}`);
});

test('the root types are Query, Mutation and Subscription', async (t, server) => {
  for (const schema of [['schema.graphql', file], ['served', served]]) {
    const [which, s] = schema;
    assert.ok(s, `${which} schema is there`);
    assert.equal(s.getQueryType()?.name, 'Query', `${which}: query root`);
    assert.equal(s.getMutationType()?.name, 'Mutation', `${which}: mutation root`);
    assert.equal(s.getSubscriptionType()?.name, 'Subscription', `${which}: subscription root`);
  }
});

/** Every field and argument whose name says it holds a time or a position, with its type. */
function timeLike(schema) {
  // Names that say "a time" (…Us, …At, …Time) or "a position in the log"
  // (position, sequence, checkpoint, and eventLog's `after`). `balanceAt` is a
  // balance as of a time, not a time.
  const looksLikeTime = (name, parent) =>
    name !== 'balanceAt' &&
    (/Us$/.test(name) ||
      /[a-z](At|Time|Timestamp)$/.test(name) ||
      /^(position|sequence|checkpoint|at)$/i.test(name) ||
      /(Position|Sequence|Checkpoint)$/.test(name) ||
      (name === 'after' && parent === 'eventLog'));
  const found = [];
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__')) continue;
    if (isObjectType(type) || isInterfaceType(type)) {
      for (const field of Object.values(type.getFields())) {
        if (looksLikeTime(field.name)) found.push({ where: `${type.name}.${field.name}`, type: getNamedType(field.type).name });
        for (const arg of field.args) {
          if (looksLikeTime(arg.name, field.name)) {
            found.push({ where: `${type.name}.${field.name}(${arg.name})`, type: getNamedType(arg.type).name });
          }
        }
      }
    } else if (isInputObjectType(type)) {
      for (const field of Object.values(type.getFields())) {
        if (looksLikeTime(field.name)) found.push({ where: `${type.name}.${field.name}`, type: getNamedType(field.type).name });
      }
    }
  }
  return found;
}

test('no timestamp or position is a 32-bit Int', async (t, server) => {
  for (const [which, schema] of [['schema.graphql', file], ['served', served]]) {
    assert.ok(schema, `${which} schema is there`);
    const fields = timeLike(schema);
    const ints = fields.filter((f) => f.type === 'Int').map((f) => f.where);
    assert.deepEqual(ints, [], `${which}: times and positions typed Int (expected DateTime or Long):\n${ints.join('\n')}`);
    assert.ok(fields.some((f) => f.where === 'LedgerEntry.position'), `${which}: LedgerEntry.position is found`);
  }
  // Timestamps are DateTime, 64-bit values Long.
  for (const [which, schema] of [['schema.graphql', file], ['served', served]]) {
    assert.ok(schema.getType('DateTime'), `${which} has a DateTime scalar`);
    assert.ok(schema.getType('Long'), `${which} has a Long scalar`);
    const ledger = schema.getType('LedgerEntry').getFields();
    assert.equal(getNamedType(ledger.recordedAt?.type)?.name, 'DateTime', `${which}: LedgerEntry.recordedAt is DateTime`);
    assert.equal(getNamedType(ledger.position.type).name, 'Long', `${which}: LedgerEntry.position is Long`);
  }
});

test('printing both schemas gives the same SDL modulo order', async (t, server) => {
  assert.ok(served, 'introspection succeeded');
  // async-graphql answers __schema.description with the description of the
  // __Schema type itself, whatever the schema: not something schema.graphql
  // could say, so that text is left out.
  const generic = /^A GraphQL Schema defines the capabilities of a GraphQL server\./;
  const servedWithout = generic.test(served.description ?? '')
    ? new GraphQLSchema({ ...served.toConfig(), description: undefined })
    : served;
  const lines = (s) => printSchema(s).split('\n').map((l) => l.trim()).filter(Boolean).sort();
  const a = new Set(lines(file));
  const b = new Set(lines(servedWithout));
  const onlyFile = [...a].filter((l) => !b.has(l));
  const onlyServed = [...b].filter((l) => !a.has(l));
  assert.deepEqual(
    { onlyFile, onlyServed },
    { onlyFile: [], onlyServed: [] },
    'schema.graphql printed differs from the served schema printed (lines only in one of them; ' +
      'e.g. a scalar whose specifiedByURL is served must carry @specifiedBy(url: ...) in schema.graphql)',
  );
});
