#!/usr/bin/env node
// latency.js -- reads collector records (one JSON a line, as kcat prints the
// topic http.shopify-events) and prints, for each "recommendations_shown"
// structured event the storefront's widget sends, the time from the page
// view (the tracker's dtm) to the recommendations on the page, with the
// running p50 and p99:
//
//   latency: 143 ms from page view to recommendations (laptop); p50 120 ms, p99 180 ms over 7 views
//
//   node examples/storefront/latency.js --kcat BROKERS   (runs kcat on the topic itself)
//   kcat -b BROKERS -C -t http.shopify-events -o end -u -q -f '%s\n' | node examples/storefront/latency.js
'use strict';

const readline = require('readline');
const { spawn } = require('child_process');

const seen = new Set();
const values = [];

function percentile(p) {
  const s = values.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

// The tracker events of a record: a tp2 body {"data": [...]} or one GET's
// parameters.
function events(rec) {
  const m = rec && rec.message;
  if (!m || typeof m !== 'object') return [];
  return Array.isArray(m.data) ? m.data : [m];
}

let input = process.stdin;
if (process.argv[2] === '--kcat' && process.argv[3]) {
  const kcat = spawn('kcat', ['-b', process.argv[3], '-C', '-t', process.env.COLLECTOR_TOPIC || 'http.shopify-events',
    '-o', 'end', '-u', '-q', '-f', '%s\n'], { stdio: ['ignore', 'pipe', 'inherit'] });
  kcat.on('error', (e) => { process.stderr.write(`latency.js: cannot run kcat: ${e.message}\n`); process.exit(1); });
  kcat.on('exit', (code) => process.exit(code === null ? 0 : code));
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { kcat.kill('SIGKILL'); process.exit(0); });
  process.on('exit', () => kcat.kill('SIGKILL'));
  input = kcat.stdout;
}

readline.createInterface({ input, crlfDelay: Infinity }).on('line', (line) => {
  let rec;
  try {
    rec = JSON.parse(line);
  } catch (e) {
    return;
  }
  for (const ev of events(rec)) {
    if (!ev || ev.e !== 'se' || ev.se_ac !== 'recommendations_shown' || ev.se_pr !== 'latency_ms') continue;
    if (seen.has(ev.eid)) continue; // a tracker re-send
    seen.add(ev.eid);
    const ms = Number(ev.se_va);
    if (!Number.isFinite(ms)) continue;
    values.push(ms);
    process.stdout.write(`latency: ${ms} ms from page view to recommendations (${ev.se_la || '?'}); `
      + `p50 ${percentile(50)} ms, p99 ${percentile(99)} ms over ${values.length} view${values.length === 1 ? '' : 's'}\n`);
  }
});
