#!/usr/bin/env node
// storefront.test.js -- the whole loop end to end, as `make demo` runs it:
// scripts/demo.sh (the built-in model trained at start, the job on the
// embedded broker with the store step and its read API, the demo storefront)
// driven by headless Debian chromium. One visitor views three products of a
// "frequently bought together" group of the seed and, within 2 s of each
// page, sees recommendations that include another product of that group and
// none of the three; a second visitor (another browser context) views
// another group and sees different ones; the hostile title renders as text;
// p99 of page view -> recommendations shown (measured in the browser) is
// under 1 s; Ctrl-C stops the demo with exit status 0.
//
//   node spec/e2e/storefront.test.js     (TAP; screenshots and logs in build/e2e/)
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { ROOT, OUT, tap, bail, assert, launch, freePort, start, stop, until, sleep, percentile } = require('./lib');

const T = tap();
const HOSTILE = '<img src=x onerror=alert(1)>';
const VISITS = {
  A: ['laptop', 'keyboard', 'mouse'],
  B: ['refrigerator', 'oven', 'microwave'],
};

// The handles that share a "frequently bought together" group (within or
// across categories) with all of `handles`, from the seed's rules.
function groupMates(handles) {
  const rules = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples/seed/interaction_rules.json'), 'utf8'));
  const inv = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples/seed/inventory.json'), 'utf8'));
  const h = (title) => inv.title_to_handle[title];
  const out = new Set();
  for (const g of rules.within_category_groups.concat(rules.across_category_groups)) {
    const hs = g.map(h);
    if (handles.every((x) => hs.includes(x))) hs.forEach((x) => { if (!handles.includes(x)) out.add(x); });
  }
  return out;
}

let demo;
let browser;
let noReadApi = null; // why the tests that need recommendations cannot pass
let storeUrl;
let collector;
const latencies = [];
const shown = {};

// Views `handles` in order in one browser context (one visitor); after each
// page waits (at most 2 s from the page's load) for the widget to show the
// recommendations of that view. Returns the handles shown after the last.
async function visitor(name, handles) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  let last = null;
  for (const handle of handles) {
    await page.goto(`${storeUrl}/products/${handle}`, { waitUntil: 'load' });
    const t0 = Date.now();
    const s = await until(() => page.evaluate(() => window.__sluiceRecs && (window.__sluiceRecs.shown || window.__sluiceRecs.gaveUp)),
      2000, `recommendations on /products/${handle} for visitor ${name}`);
    assert(s && s.latencyMs !== undefined, `visitor ${name} on ${handle}: the widget gave up (${s})`);
    assert(Date.now() - t0 <= 2000, `visitor ${name} on ${handle}: shown after ${Date.now() - t0} ms`);
    latencies.push(s.latencyMs);
    last = await page.$$eval('#sluice-recs li', (els) => els.map((e) => e.getAttribute('data-handle')));
    await page.screenshot({ path: path.join(OUT, `storefront-${name}-${handle}.png`), fullPage: true });
  }
  assert(dialogs.length === 0, `dialogs: ${dialogs}`);
  await ctx.close();
  return last;
}

T.test('set-up: make demo (scripts/demo.sh) on free ports, headless chromium', async () => {
  fs.mkdirSync(OUT, { recursive: true });
  const [sp, cp, ap] = [await freePort(), await freePort(), await freePort()];
  storeUrl = `http://127.0.0.1:${sp}`;
  collector = `http://127.0.0.1:${cp}`;
  const demoDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-e2e-'));
  try {
    demo = await start('sh', ['scripts/demo.sh'], {
      env: { STORE_URL: storeUrl, COLLECTOR_LISTEN: `127.0.0.1:${cp}`, ADMIN_LISTEN: `127.0.0.1:${ap}`, DEMO_DIR: demoDir },
      ready: /Ctrl-C stops everything/, timeoutMs: 90000, logFile: path.join(OUT, 'storefront-demo.log'),
    });
    browser = await launch();
  } catch (e) {
    throw bail(e.message);
  }
  const r = await fetch(`${collector}/recommendations/not-a-visitor-id`);
  if (r.status !== 400) {
    noReadApi = `the collector has no read API: GET /recommendations/<bad id> answered ${r.status}, not 400 `
      + '(config/recommendations.lua needs the store step, and the built-in model reading MODEL_FILE)';
    process.stdout.write(`# ${noReadApi}\n`);
  }
});

function needsReadApi() {
  if (noReadApi) throw new Error(noReadApi);
}
T.cleanup(async () => { if (browser) await browser.close(); });
T.cleanup(async () => { await stop(demo, 'SIGINT'); });

T.test(`visitor A views ${VISITS.A.join(', ')} and sees another product of their group, none of the three`, async () => {
  needsReadApi();
  const mates = groupMates(VISITS.A);
  shown.A = await visitor('A', VISITS.A);
  assert(shown.A.length > 0, 'nothing shown');
  assert(shown.A.some((h) => mates.has(h)), `shown ${shown.A}, none of ${[...mates]}`);
  assert(!shown.A.some((h) => VISITS.A.includes(h)), `shown ${shown.A} includes a viewed product`);
});

T.test(`visitor B (another context) views ${VISITS.B.join(', ')} and sees different ones, of their own group`, async () => {
  needsReadApi();
  const mates = groupMates(VISITS.B);
  shown.B = await visitor('B', VISITS.B);
  assert(shown.B.some((h) => mates.has(h)), `shown ${shown.B}, none of ${[...mates]}`);
  assert(!shown.B.some((h) => VISITS.B.includes(h)), `shown ${shown.B} includes a viewed product`);
  assert(JSON.stringify(shown.A) !== JSON.stringify(shown.B), `both saw ${shown.B}`);
});

T.test('the product with a hostile title renders it as text, runs nothing', async () => {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  await page.goto(`${storeUrl}/products/xss-test-product`, { waitUntil: 'load' });
  await until(() => page.evaluate(() => window.__sluiceRecs && window.__sluiceRecs.duid), 5000, 'the page\'s scripts');
  await sleep(500);
  assert((await page.textContent('h1.product-title')) === HOSTILE, 'title not shown as text');
  assert((await page.$$('img[src="x"]')).length === 0 && dialogs.length === 0, `the title ran: dialogs ${dialogs}`);
  await page.screenshot({ path: path.join(OUT, 'storefront-xss.png'), fullPage: true });
  await ctx.close();
});

T.test('page view -> recommendations shown: p99 under 1 s (measured in the browser)', async () => {
  needsReadApi();
  assert(latencies.length >= 6, `only ${latencies.length} views measured`);
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  process.stdout.write(`# latency: p50 ${p50} ms, p99 ${p99} ms, max ${Math.max(...latencies)} ms over ${latencies.length} views\n`);
  assert(p99 < 1000, `p99 ${p99} ms`);
});

T.test('the demo printed each view\'s latency (the widget\'s event, read back from the topic)', async () => {
  needsReadApi();
  const log = path.join(OUT, 'storefront-demo.log');
  const lines = await until(() => {
    const l = fs.readFileSync(log, 'utf8').split('\n').filter((x) => /^latency: \d+ ms from page view/.test(x));
    return l.length >= latencies.length ? l : null;
  }, 5000, () => `${latencies.length} latency lines in ${log}`);
  process.stdout.write(`# demo: ${lines[lines.length - 1]}\n`);
});

T.test('Ctrl-C stops the demo and everything it started, exit status 0', async () => {
  const code = await stop(demo, 'SIGINT');
  assert(code === 0, `demo exited with ${code}`);
  for (const u of [`${storeUrl}/`, `${collector}/health`]) {
    const up = await fetch(u).then(() => true, () => false);
    assert(!up, `${u} still answers`);
  }
});

T.run();
