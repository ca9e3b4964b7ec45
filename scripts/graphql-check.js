#!/usr/bin/env node
// graphql-check.js -- checks GraphQL request bodies against a schema, as the
// server would before running them: the query text parses and validates
// (field names, argument and variable types), and the variables coerce to
// the types the operation declares (required fields, String vs list, unknown
// input fields).
//
//   node scripts/graphql-check.js SCHEMA.json[.gz] < bodies.jsonl
//
// SCHEMA is an introspection result, {"data": {"__schema": ...}} or
// {"__schema": ...}, gzipped when its name ends in .gz (for example
// spec/fixtures/shopify/admin_2026-07.json.gz). Each input line is one
// request body {"query": "...", "variables": {...}, "operationName": ...}
// as an http step sends it (`sluice test` prints them). Each output line is
//   {"line": N, "ok": true|false, "errors": ["...", ...]}
// The exit status is 1 when any body has errors, 2 on a usage problem.
// Needs the npm package graphql 16 (package.json; `npm ci` installs it).
'use strict';

const fs = require('fs');
const zlib = require('zlib');
const readline = require('readline');
const graphql = require('graphql');
const { getVariableValues } = require('graphql/execution/values');

function usage(msg) {
  process.stderr.write(`graphql-check: ${msg}\nusage: node scripts/graphql-check.js SCHEMA.json[.gz] < bodies.jsonl\n`);
  process.exit(2);
}

function loadSchema(file) {
  let raw = fs.readFileSync(file);
  if (file.endsWith('.gz')) raw = zlib.gunzipSync(raw);
  const doc = JSON.parse(raw.toString('utf8'));
  return graphql.buildClientSchema(doc.data || doc);
}

// The problems of one request body, [] when the server would run it.
function check(schema, body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return ['the body is not a JSON object'];
  if (typeof body.query !== 'string') return ['the body has no "query" string'];
  let doc;
  try {
    doc = graphql.parse(body.query);
  } catch (e) {
    return [`query: ${e.message}`];
  }
  const errors = graphql.validate(schema, doc).map((e) => `query: ${e.message}`);
  if (errors.length) return errors;
  const op = graphql.getOperationAST(doc, body.operationName || undefined);
  if (!op) return ['query: no single operation to run (give operationName)'];
  const vars = body.variables === undefined || body.variables === null ? {} : body.variables;
  if (typeof vars !== 'object' || Array.isArray(vars)) return ['variables: not a JSON object'];
  const declared = new Set((op.variableDefinitions || []).map((d) => d.variable.name.value));
  for (const name of Object.keys(vars)) {
    if (!declared.has(name)) errors.push(`variables: $${name} is not declared by the operation`);
  }
  const coerced = getVariableValues(schema, op.variableDefinitions || [], vars);
  for (const e of coerced.errors || []) errors.push(`variables: ${e.message}`);
  return errors;
}

function main() {
  if (process.argv.length !== 3) usage('expected one argument, the schema file');
  let schema;
  try {
    schema = loadSchema(process.argv[2]);
  } catch (e) {
    usage(`cannot load the schema ${process.argv[2]}: ${e.message}`);
  }
  let n = 0;
  let failed = 0;
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    n += 1;
    if (line.trim() === '') return;
    let errors;
    try {
      errors = check(schema, JSON.parse(line));
    } catch (e) {
      errors = [`not JSON: ${e.message}`];
    }
    if (errors.length) failed += 1;
    process.stdout.write(JSON.stringify({ line: n, ok: errors.length === 0, errors }) + '\n');
  });
  rl.on('close', () => process.exit(failed ? 1 : 0));
}

main();
