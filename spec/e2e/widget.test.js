#!/usr/bin/env node
// widget.test.js -- the demo storefront and its recommendations widget in
// headless Debian chromium, against a fake collector in this process that
// takes the tracker's POSTs and answers GET /recommendations/<duid> as the
// read API's contract says (200 {visitorId, updatedAt, products}, 404, 400,
// 503), scripted per test. Proves: the official tracker posts the page view
// with the app id; the visitor id is the _sp_id cookie's first field; polling
// with backoff until recommendations as new as the view arrive; nothing shown
// on 404 and polling bounded; 503 retried; 400 stops; paused while hidden;
// a hostile title rendered as text; the latency reported back.
//
//   node spec/e2e/widget.test.js     (TAP; screenshots in build/e2e/)
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { OUT, tap, bail, assert, launch, freePort, start, stop, until, sleep } = require('./lib');

const HOSTILE = '<img src=x onerror=alert(1)>';
const T = tap();

// ---- the fake collector and read API ----
const fake = {
  events: [], // tracker events: {e, aid, url, duid, dtm, se_ac, se_va, ...}
  polls: [], // {duid, at}
  mode: () => ({ status: 404 }), // (duid, nth poll of that duid, polls) -> {status, updatedAt?, products?}
  reset(mode) { this.events = []; this.polls = []; this.mode = mode; },
  pollsOf(duid) { return this.polls.filter((p) => p.duid === duid); },
};

function product(handle, title) {
  return { id: `gid://shopify/Product/${handle.length}${handle.charCodeAt(0)}`, handle, title: title || handle, category: 'Home', price: '9.99', image: 'images/home.svg' };
}

let storeOrigin = null;
const api = http.createServer((req, res) => {
  const cors = {};
  if (req.headers.origin === storeOrigin) {
    cors['Access-Control-Allow-Origin'] = storeOrigin;
    cors['Access-Control-Allow-Credentials'] = 'true';
    cors.Vary = 'Origin';
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'OPTIONS') {
      res.writeHead(200, { ...cors, 'Access-Control-Allow-Headers': 'Content-Type' });
      return res.end();
    }
    if (req.method === 'POST' && req.url === '/com.snowplowanalytics.snowplow/tp2') {
      try {
        for (const ev of JSON.parse(Buffer.concat(chunks).toString('utf8')).data) fake.events.push(ev);
      } catch (e) { /* a test will notice the missing event */ }
      res.writeHead(200, { ...cors, 'Content-Type': 'text/plain' });
      return res.end('ok');
    }
    const m = req.url.match(/^\/recommendations\/([^/?]*)$/);
    if (req.method === 'GET' && m) {
      const duid = decodeURIComponent(m[1]);
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(duid)) {
        res.writeHead(400, { ...cors, 'Content-Type': 'application/json' });
        return res.end('{"error":"bad visitor id"}');
      }
      fake.polls.push({ duid, at: Date.now() });
      const a = fake.mode(duid, fake.pollsOf(duid).length);
      const headers = { ...cors, 'Content-Type': 'application/json', 'Cache-Control': 'no-store' };
      res.writeHead(a.status, headers);
      return res.end(a.status === 200
        ? JSON.stringify({ visitorId: duid, updatedAt: a.updatedAt, products: a.products })
        : JSON.stringify({ error: String(a.status) }));
    }
    res.writeHead(404, cors);
    return res.end();
  });
});

let browser;
let storeUrl;
let storefront;

// Opens a product page in a fresh context (a new visitor); returns
// {ctx, page, dialogs, consoleLines}. opts.hidden starts the tab hidden,
// controllable with window.__setHidden(bool).
async function visit(handle, opts = {}) {
  const ctx = await browser.newContext();
  if (opts.hidden !== undefined) {
    await ctx.addInitScript((startHidden) => {
      let hidden = startHidden;
      Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
      Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => hidden });
      window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event('visibilitychange')); };
    }, opts.hidden);
  }
  const page = await ctx.newPage();
  const dialogs = [];
  const consoleLines = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('console', (m) => consoleLines.push(m.text()));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.goto(`${storeUrl}/products/${handle}`, { waitUntil: 'load' });
  return { ctx, page, dialogs, consoleLines };
}

const state = (page) => page.evaluate(() => window.__sluiceRecs);
const shownTitles = (page) => page.$$eval('#sluice-recs .sluice-recs__title', (els) => els.map((e) => e.textContent));
const shot = (page, name) => page.screenshot({ path: path.join(OUT, `widget-${name}.png`), fullPage: true });

async function duidOf(page) {
  return until(async () => (await state(page) || {}).duid, 5000, 'the widget to know the visitor id');
}

T.test('set-up: fake collector, demo storefront, headless chromium', async () => {
  fs.mkdirSync(OUT, { recursive: true });
  const apiPort = await freePort();
  await new Promise((r) => api.listen(apiPort, '127.0.0.1', r));
  const storePort = await freePort();
  storeUrl = `http://127.0.0.1:${storePort}`;
  storeOrigin = storeUrl;
  try {
    storefront = await start('node', ['examples/storefront/server.js'], {
      env: { STORE_URL: storeUrl, COLLECTOR_URL: `http://127.0.0.1:${apiPort}`, WIDGET_BOUND_MS: '2500' },
      ready: /storefront: http/, timeoutMs: 10000, logFile: path.join(OUT, 'widget-storefront.log'),
    });
    browser = await launch();
  } catch (e) {
    throw bail(e.message);
  }
});
T.cleanup(async () => { if (browser) await browser.close(); });
T.cleanup(async () => { await stop(storefront, 'SIGTERM'); });
T.cleanup(() => new Promise((r) => api.close(r)));

T.test('the official tracker posts the page view (app id, product URL, tracker 4.10.1); the visitor id is the _sp_id cookie\'s first field', async () => {
  fake.reset(() => ({ status: 404 }));
  const v = await visit('laptop');
  const ev = await until(() => fake.events.find((e) => e.e === 'pv'), 5000, 'the page view POST');
  assert(ev.aid === 'shopify-nu-recommendations', `aid ${ev.aid}`);
  assert(ev.url === `${storeUrl}/products/laptop`, `url ${ev.url}`);
  assert(ev.tv === 'js-4.10.1', `tracker version ${ev.tv}`);
  const cookie = (await v.ctx.cookies()).find((c) => c.name.startsWith('_sp_id.'));
  assert(cookie, 'no _sp_id cookie');
  const duid = await duidOf(v.page);
  assert(cookie.value.split('.')[0] === duid && ev.duid === duid, `cookie ${cookie.value}, payload duid ${ev.duid}, widget ${duid}`);
  await until(() => fake.pollsOf(duid).length > 0, 3000, 'a read API request');
  assert((await state(v.page)).viewTime === Number(ev.dtm), 'the widget\'s view time is the tracker\'s dtm');
  await v.ctx.close();
});

T.test('visitorId() reads the first field of _sp_id.* and refuses what is not a duid', async () => {
  const v = await visit('laptop');
  const fixture = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'snowplow', 'cookies-and-duid.json'), 'utf8'));
  const cases = fixture.visits.map((x) => [x.Cookie_request_header_seen_by_collector, x.payload.duid]).concat([
    ['', null], ['_sp_ses.dc78=*', null], ['_sp_id.dc78=not-a-uuid.1.2', null],
    ['x_sp_id.dc78=4f1195b8-6b68-4cd6-a7eb-925bd120e8ad.1', null],
    ['a=1; _sp_id.ab12=4F1195B8-6B68-4CD6-A7EB-925BD120E8AD.1795667676.1; b=2', '4f1195b8-6b68-4cd6-a7eb-925bd120e8ad'],
    ['_sp_id.ab12=%3Cscript%3E.1', null], ['_sp_id.ab12=%E0%A4%A', null],
  ]);
  const got = await v.page.evaluate((cs) => cs.map(([c]) => window.SluiceRecs.visitorId(c)), cases);
  cases.forEach(([c, want], i) => assert(got[i] === want, `visitorId(${JSON.stringify(c)}) = ${got[i]}, want ${want}`));
  await v.ctx.close();
});

T.test('polls with backoff until recommendations as new as the view arrive, then shows them (not the product on the page) and reports the latency', async () => {
  const fresh = [product('monitor', 'Monitor'), product('laptop', 'Laptop'), product('mouse-pad', 'Mouse Pad')];
  fake.reset((duid, n) => (n <= 4 ? { status: 404 }
    : n <= 6 ? { status: 200, updatedAt: Date.now() - 60000, products: [product('stale-thing', 'Stale Thing')] }
      : { status: 200, updatedAt: Date.now(), products: fresh }));
  const v = await visit('laptop');
  const duid = await duidOf(v.page);
  await until(async () => (await state(v.page)).shown, 8000, 'recommendations shown');
  const titles = await shownTitles(v.page);
  assert(JSON.stringify(titles) === JSON.stringify(['Monitor', 'Mouse Pad']), `shown ${JSON.stringify(titles)}`);
  assert(await v.page.isVisible('#sluice-recs'), 'section not visible');
  assert((await v.page.textContent('#sluice-recs h2')) === 'You may also be interested in...', 'heading');
  const href = await v.page.getAttribute('#sluice-recs a', 'href');
  assert(href === '/products/monitor', `link ${href}`);
  const polls = fake.pollsOf(duid).map((p) => p.at);
  assert(polls.length === 7, `${polls.length} polls, want 7 (4 × 404, 2 stale, 1 fresh)`);
  const gaps = polls.slice(1).map((t, i) => t - polls[i]);
  assert(gaps[gaps.length - 1] > gaps[0] * 1.5, `no backoff: gaps ${gaps}`);
  const s = await state(v.page);
  assert(s.shown.latencyMs >= polls[6] - s.viewTime - 50, `latency ${s.shown.latencyMs}`);
  await sleep(600);
  assert(fake.pollsOf(duid).length === 7, 'polled again after showing');
  const se = await until(() => fake.events.find((e) => e.e === 'se' && e.se_ac === 'recommendations_shown'), 5000, 'the latency event');
  assert(Number(se.se_va) === s.shown.latencyMs && se.se_pr === 'latency_ms' && se.se_la === 'laptop', `event ${JSON.stringify(se)}, shown ${JSON.stringify(s.shown)}`);
  assert(v.consoleLines.some((l) => /recommendations shown \d+ ms after the page view/.test(l)), 'no console line');
  await shot(v.page, 'backoff');
  await v.ctx.close();
});

T.test('nothing shown for an unknown visitor (404), and polling stops at its bound', async () => {
  fake.reset(() => ({ status: 404 }));
  const v = await visit('laptop');
  const duid = await duidOf(v.page);
  await until(async () => (await state(v.page)).gaveUp, 6000, 'the widget to give up');
  const n = fake.pollsOf(duid).length;
  assert(n >= 5, `only ${n} polls in the bound`);
  await sleep(1500);
  assert(fake.pollsOf(duid).length === n, 'polled after giving up');
  assert(!(await v.page.isVisible('#sluice-recs')), 'section visible');
  assert((await v.page.textContent('#sluice-recs')) === '', 'section has text');
  assert(!v.consoleLines.some((l) => /error/i.test(l) && !/404/.test(l)), `console: ${v.consoleLines}`);
  await shot(v.page, 'nothing');
  await v.ctx.close();
});

T.test('a 503 (store down) is retried and shows nothing until an answer comes; a 400 stops polling', async () => {
  fake.reset((duid, n) => (n <= 3 ? { status: 503 } : { status: 200, updatedAt: Date.now(), products: [product('monitor', 'Monitor')] }));
  let v = await visit('laptop');
  await until(async () => (await state(v.page)).shown, 6000, 'recommendations after the 503s');
  assert(JSON.stringify(await shownTitles(v.page)) === '["Monitor"]', 'shown after 503');
  await v.ctx.close();
  fake.reset(() => ({ status: 400 }));
  v = await visit('laptop');
  const duid = await duidOf(v.page);
  await until(async () => (await state(v.page)).gaveUp, 3000, 'the widget to stop');
  assert((await state(v.page)).gaveUp === 'error' && fake.pollsOf(duid).length === 1, `gave up ${(await state(v.page)).gaveUp} after ${fake.pollsOf(duid).length} polls`);
  await v.ctx.close();
});

T.test('polling pauses while the tab is hidden and resumes at once when it is shown', async () => {
  fake.reset(() => ({ status: 200, updatedAt: Date.now(), products: [product('monitor', 'Monitor')] }));
  const v = await visit('laptop', { hidden: true });
  const duid = await duidOf(v.page);
  await sleep(1500);
  assert(fake.pollsOf(duid).length === 0, `${fake.pollsOf(duid).length} polls while hidden`);
  const t0 = Date.now();
  await v.page.evaluate(() => window.__setHidden(false));
  await until(async () => (await state(v.page)).shown, 3000, 'recommendations once visible');
  assert(fake.pollsOf(duid)[0].at - t0 < 500, 'first poll late after becoming visible');
  // Hidden again mid-way: no poll until visible.
  await v.ctx.close();
  fake.reset(() => ({ status: 404 }));
  const w = await visit('laptop', { hidden: false });
  const d2 = await duidOf(w.page);
  await until(() => fake.pollsOf(d2).length >= 2, 3000, 'polls while visible');
  await w.page.evaluate(() => window.__setHidden(true));
  await sleep(300);
  const n = fake.pollsOf(d2).length;
  await sleep(1500);
  assert(fake.pollsOf(d2).length === n, `polled while hidden (${n} -> ${fake.pollsOf(d2).length})`);
  await w.page.evaluate(() => window.__setHidden(false));
  await until(() => fake.pollsOf(d2).length > n, 1000, 'a poll after becoming visible');
  await w.ctx.close();
});

T.test('a product title holding HTML renders as text: no element made from it, no script run', async () => {
  fake.reset(() => ({ status: 200, updatedAt: Date.now(), products: [product('xss-test-product', HOSTILE), product('monitor', '"><script>alert(2)</script>')] }));
  const v = await visit('laptop');
  await until(async () => (await state(v.page)).shown, 5000, 'recommendations');
  await sleep(300);
  const titles = await shownTitles(v.page);
  assert(titles[0] === HOSTILE && titles[1] === '"><script>alert(2)</script>', `titles ${JSON.stringify(titles)}`);
  assert(await v.page.isVisible(`text=${HOSTILE}`), 'hostile title not visible as text');
  assert((await v.page.$$('#sluice-recs img[src="x"], #sluice-recs script')).length === 0, 'an element was made from a title');
  assert(v.dialogs.length === 0, `dialogs: ${v.dialogs}`);
  await shot(v.page, 'xss-widget');
  await v.ctx.close();
  // The storefront's own page of the demo-only hostile product.
  const p = await visit('xss-test-product');
  assert((await p.page.textContent('h1.product-title')) === HOSTILE, 'product page title');
  assert((await p.page.$$('img[src="x"]')).length === 0 && p.dialogs.length === 0, 'product page ran the title');
  await shot(p.page, 'xss-page');
  await p.ctx.close();
});

T.test('unsafe links and images in an answer are left out (javascript: URLs)', async () => {
  const v = await visit('laptop');
  const r = await v.page.evaluate(() => {
    const c = document.createElement('section');
    const n = window.SluiceRecs.render(c, [
      { handle: 'a', title: 'A', url: 'javascript:alert(1)' },
      { handle: 'b', title: 'B', url: '/products/b', image: 'javascript:alert(1)' },
      { handle: 'c', title: 'C', url: 'https://shop.example/products/c', image: 'https://cdn.example/c.png' },
    ]);
    return { n, html: c.innerHTML };
  });
  assert(r.n === 2 && !/javascript:/.test(r.html) && /cdn\.example\/c\.png/.test(r.html), `rendered ${r.n}: ${r.html}`);
  await v.ctx.close();
});

T.test('the Shopify section: one Storefront query for the visitor\'s metaobject, polled until as new as the view, rendered as text', async () => {
  const root = path.join(__dirname, '..', '..');
  const shop = 'https://shop.example';
  const duid = '4f1195b8-6b68-4cd6-a7eb-925bd120e8ad';
  const query = fs.readFileSync(path.join(root, 'examples/shopify/recommendations.storefront.graphql'), 'utf8').trim();
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"></head><body>
<section class="sluice-recs page-width" data-sluice-recs data-storefront-token="public-token" data-api-version="2026-07"
  data-metaobject-type="nu_recommendation" data-product-handle="laptop" data-heading="You may also like" hidden></section>
<script src="/assets/sluice-recs-widget.js" defer></script><script src="/assets/sluice-recs-shopify.js" defer></script>
</body></html>`;
  const node = (handle, title) => ({ id: `gid://shopify/Product/${handle.length}`, handle, title, onlineStoreUrl: `${shop}/products/${handle}`,
    featuredImage: { url: `https://cdn.shopify.example/${handle}.png`, altText: null },
    priceRange: { minVariantPrice: { amount: '12.5', currencyCode: 'EUR' } } });
  const bodies = [];
  const ctx = await browser.newContext();
  await ctx.addCookies([{ name: '_sp_id.1fff', value: `${duid}.1795667676.1.1795667676..s..e.1795667676496.1`, url: shop }]);
  await ctx.route(`${shop}/**`, (route) => {
    const u = new URL(route.request().url());
    if (u.pathname === '/products/laptop') return route.fulfill({ contentType: 'text/html', body: html });
    if (u.pathname === '/assets/sluice-recs-widget.js') return route.fulfill({ contentType: 'application/javascript', path: path.join(root, 'examples/storefront/widget.js') });
    if (u.pathname === '/assets/sluice-recs-shopify.js') return route.fulfill({ contentType: 'application/javascript', path: path.join(root, 'examples/shopify/assets/sluice-recs-shopify.js') });
    if (u.pathname === '/api/2026-07/graphql.json') {
      bodies.push({ token: route.request().headers()['x-shopify-storefront-access-token'], body: JSON.parse(route.request().postData()), at: Date.now() });
      const data = bodies.length === 1 ? { metaobject: null }
        : { metaobject: { updatedAt: new Date(Date.now() - (bodies.length === 2 ? 60000 : 0)).toISOString(),
          field: { references: { nodes: [node('laptop', 'Laptop'), node('monitor', HOSTILE), {}, node('mouse', 'Mouse')] } } } };
      return route.fulfill({ contentType: 'application/json', body: JSON.stringify({ data }) });
    }
    return route.fulfill({ status: 404, body: '' });
  });
  const page = await ctx.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  await page.goto(`${shop}/products/laptop`);
  await until(() => page.isVisible('.sluice-recs__list'), 8000, 'the Shopify section to show recommendations');
  assert(bodies.length === 3, `${bodies.length} Storefront requests, want 3 (none, stale, fresh)`);
  for (const b of bodies) {
    assert(b.token === 'public-token' && b.body.query === query, `request ${JSON.stringify(b)}`);
    assert(JSON.stringify(b.body.variables) === JSON.stringify({ handle: { type: 'nu_recommendation', handle: `customer-${duid}` } }), `variables ${JSON.stringify(b.body.variables)}`);
  }
  const titles = await page.$$eval('.sluice-recs__title', (els) => els.map((e) => e.textContent));
  assert(JSON.stringify(titles) === JSON.stringify([HOSTILE, 'Mouse']), `titles ${JSON.stringify(titles)}`);
  assert((await page.textContent('.sluice-recs h2')) === 'You may also like', 'heading');
  assert((await page.getAttribute('.sluice-recs__link', 'href')) === `${shop}/products/monitor`, 'link');
  assert((await page.$$('.sluice-recs img[src="x"]')).length === 0 && dialogs.length === 0, 'the title ran');
  await shot(page, 'shopify-section');
  await ctx.close();
});

T.run();
