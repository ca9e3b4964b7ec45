#!/usr/bin/env node
// server.js -- the demo storefront: a catalog page and a page per product of
// examples/catalog.json (plus the demo-only products of demo-products.json),
// each loading the official Snowplow browser tracker pointed at sluice's
// collector and the recommendations widget. No framework, Node 20.
//
//   node examples/storefront/server.js
//
// Environment (the same names as config/recommendations.lua):
//   STORE_URL          where this server listens, http://HOST:PORT (default http://127.0.0.1:8080);
//                      product pages are STORE_URL/products/<handle>, the URLs the job counts
//   COLLECTOR_URL      the collector the tracker posts to and the widget reads
//                      /recommendations/<duid> from (default http://$COLLECTOR_LISTEN,
//                      COLLECTOR_LISTEN defaulting to 127.0.0.1:9090)
//   SNOWPLOW_APP_ID    the tracker's app id (default shopify-nu-recommendations)
//   CATALOG_FILE       the catalog (default examples/catalog.json)
//   STOREFRONT_EXTRA   demo-only products added to it (default examples/storefront/demo-products.json;
//                      "" for none)
//   WIDGET_BOUND_MS    how long the widget polls after a page view (default 30000)
//
// Prints "storefront: http://HOST:PORT/" once it listens; SIGINT/SIGTERM stop it (exit 0).
'use strict';

const http = require('http');
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const env = (name, dflt) => (process.env[name] === undefined || process.env[name] === '' ? dflt : process.env[name]);

function fail(msg) {
  process.stderr.write(`storefront: ${msg}\n`);
  process.exit(1);
}

const storeUrl = new URL(env('STORE_URL', 'http://127.0.0.1:8080'));
if (storeUrl.protocol !== 'http:') fail(`STORE_URL must be http://HOST:PORT, got ${storeUrl.href}`);
const collector = env('COLLECTOR_URL', `http://${env('COLLECTOR_LISTEN', '127.0.0.1:9090')}`).replace(/\/+$/, '');
const appId = env('SNOWPLOW_APP_ID', 'shopify-nu-recommendations');
const boundMs = Number(env('WIDGET_BOUND_MS', '30000'));
if (!(boundMs > 0)) fail(`WIDGET_BOUND_MS must be a positive number of milliseconds, got ${process.env.WIDGET_BOUND_MS}`);

function readProducts(file, what) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(`cannot read the ${what} ${file}: ${e.message}`);
  }
  if (!doc || !Array.isArray(doc.products)) fail(`${file}: expected {"products": [...]}`);
  doc.products.forEach((p, i) => {
    for (const k of ['handle', 'gid', 'title']) {
      if (typeof p[k] !== 'string' || p[k] === '') fail(`${file}: products[${i}].${k}: expected a string`);
    }
    if (!/^[a-z0-9][a-z0-9-]*$/.test(p.handle)) fail(`${file}: products[${i}].handle: not a handle: ${p.handle}`);
  });
  return doc.products;
}

const catalogFile = path.resolve(ROOT, env('CATALOG_FILE', 'examples/catalog.json'));
const extraFile = env('STOREFRONT_EXTRA', path.join(__dirname, 'demo-products.json'));
const products = readProducts(catalogFile, 'catalog')
  .concat(extraFile === '' ? [] : readProducts(path.resolve(ROOT, extraFile), 'demo products'));
const byHandle = new Map(products.map((p) => [p.handle, p]));

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
// JSON inside <script type="application/json">: no "<" may close the element.
const jsonInHtml = (v) => JSON.stringify(v).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');

function page(title, body, product) {
  const cfg = { collector, appId, product: product ? product.handle : null, pollBoundMs: boundMs };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} \u2013 NU Demo Store</title>
<link rel="stylesheet" href="/style.css">
<script id="sluice-config" type="application/json">${jsonInHtml(cfg)}</script>
<script src="/sp.js" defer></script>
<script src="/widget.js" defer></script>
<script src="/store.js" defer></script>
</head><body>
<header><a class="brand" href="/collections/all">NU Demo Store</a></header>
<main>${body}
<section id="sluice-recs" class="sluice-recs" aria-live="polite" hidden></section>
</main>
</body></html>`;
}

function image(p) {
  return `/${esc((p.image || 'images/placeholder.svg').replace(/^\/+/, ''))}`;
}

function catalogPage() {
  const items = products.map((p) => `<li class="card"><a href="/products/${esc(p.handle)}">`
    + `<img src="${image(p)}" alt="" width="160" height="160" loading="lazy">`
    + `<span class="title">${esc(p.title)}</span><span class="price">${esc(p.price || '')}</span></a></li>`).join('\n');
  return page('All products', `<h1>All products</h1>\n<ul class="grid">\n${items}\n</ul>`, null);
}

function productPage(p) {
  return page(p.title, `<article class="product" data-handle="${esc(p.handle)}">
<img src="${image(p)}" alt="" width="320" height="320">
<div><h1 class="product-title">${esc(p.title)}</h1>
<p class="category">${esc(p.category || '')}</p>
<p class="price">${esc(p.price || '')}</p>
<p><a href="/collections/all">All products</a></p></div>
</article>`, p);
}

const STATIC = {
  '/sp.js': [path.join(ROOT, 'node_modules/@snowplow/browser-tracker/dist/index.umd.min.js'), 'application/javascript'],
  '/widget.js': [path.join(__dirname, 'widget.js'), 'application/javascript'],
  '/store.js': [path.join(__dirname, 'store.js'), 'application/javascript'],
  '/style.css': [path.join(__dirname, 'style.css'), 'text/css'],
};

function send(res, status, type, body, headers) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...(headers || {}) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  let u;
  try {
    u = new URL(req.url, storeUrl);
  } catch (e) {
    return send(res, 400, 'text/plain', 'bad request\n');
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n', { Allow: 'GET, HEAD' });
  const p = u.pathname;
  if (p === '/' || p === '/collections/all' || p === '/collections/all/') {
    return send(res, 200, 'text/html; charset=utf-8', catalogPage());
  }
  const m = p.match(/^\/products\/([a-z0-9][a-z0-9-]*)\/?$/);
  if (m) {
    const prod = byHandle.get(m[1]);
    return prod ? send(res, 200, 'text/html; charset=utf-8', productPage(prod))
      : send(res, 404, 'text/html; charset=utf-8', page('Not found', '<h1>No such product</h1>', null));
  }
  if (STATIC[p]) {
    const [file, type] = STATIC[p];
    return fs.readFile(file, (err, data) => {
      if (err) return send(res, 500, 'text/plain', `cannot read ${path.relative(ROOT, file)}: run scripts/node-deps.sh\n`);
      return send(res, 200, type, data);
    });
  }
  const img = p.match(/^\/images\/([a-z0-9-]+\.svg)$/);
  if (img) {
    return fs.readFile(path.join(ROOT, 'examples/images', img[1]), (err, data) => (err
      ? send(res, 404, 'text/plain', 'not found\n') : send(res, 200, 'image/svg+xml', data)));
  }
  if (p === '/favicon.ico') return send(res, 204, 'text/plain', '');
  return send(res, 404, 'text/plain', 'not found\n');
});

if (!fs.existsSync(STATIC['/sp.js'][0])) {
  fail('the Snowplow tracker (npm @snowplow/browser-tracker) is not installed: run scripts/node-deps.sh');
}
server.on('error', (e) => fail(`cannot listen on ${storeUrl.host}: ${e.message}`));
server.listen(Number(storeUrl.port || 80), storeUrl.hostname, () => {
  process.stdout.write(`storefront: ${storeUrl.origin}/ (${products.length} products, collector ${collector})\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
