/*
 * widget.js -- the "You may also be interested in..." section: finds the
 * visitor id in the Snowplow tracker's _sp_id.* cookie, polls for the
 * visitor's recommendations after a page view until the ones computed for
 * that view arrive, and renders them with DOM APIs and textContent only (a
 * product title is never parsed as HTML). Used by the demo storefront
 * (examples/storefront/) and by the Shopify theme snippet
 * (examples/shopify/), which differ only in how they load recommendations.
 *
 *   SluiceRecs.visitorId(document.cookie)   -> duid or null
 *   SluiceRecs.render(container, products, options) -> number shown
 *   SluiceRecs.watch({container, load, viewTime, ...}) -> {stop()}
 *
 * A product is {id, handle, title, url, image, price?, category?}; `load()`
 * resolves to {updatedAt (ms), products} or null (nothing for this visitor
 * yet) and rejects on errors (retried until the bound). No dependencies; plain
 * ES2017 for any browser a store supports.
 */
(function (root) {
  'use strict';

  // A tracker duid is a UUID (the tracker writes uuid v4).
  var DUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  // The visitor id: the first field of the tracker's _sp_id.<hash> cookie
  // ("<duid>.<createTs>.<visitCount>...."), or null when there is none that
  // looks like a duid.
  function visitorId(cookieString) {
    var parts = String(cookieString || '').split(';');
    for (var i = 0; i < parts.length; i++) {
      var kv = parts[i].replace(/^\s+/, '');
      var eq = kv.indexOf('=');
      if (eq < 0 || kv.lastIndexOf('_sp_id.', 0) !== 0) continue;
      var value = kv.slice(eq + 1);
      try { value = decodeURIComponent(value); } catch (e) { continue; }
      var duid = value.split('.')[0];
      if (DUID_RE.test(duid)) return duid.toLowerCase();
    }
    return null;
  }

  // A URL safe to put in href/src: http(s) or a same-site path; else null.
  function safeUrl(u) {
    if (typeof u !== 'string' || u === '') return null;
    if (/^\/(?!\/)/.test(u)) return u;
    try {
      var p = new URL(u, root.location ? root.location.href : undefined);
      return p.protocol === 'https:' || p.protocol === 'http:' ? p.href : null;
    } catch (e) {
      return null;
    }
  }

  function el(tag, className, text) {
    var e = root.document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // Renders up to options.max products into container, leaving out
  // options.exclude (handles or ids, e.g. the product on the page). Empty
  // input hides the container: nothing rather than an error.
  function render(container, products, options) {
    var opt = options || {};
    var exclude = opt.exclude || [];
    var max = opt.max || 10;
    var list = [];
    for (var i = 0; i < (products || []).length && list.length < max; i++) {
      var p = products[i];
      if (!p || typeof p.title !== 'string' || !safeUrl(p.url)) continue;
      if (exclude.indexOf(p.handle) >= 0 || exclude.indexOf(p.id) >= 0) continue;
      list.push(p);
    }
    while (container.firstChild) container.removeChild(container.firstChild);
    if (list.length === 0) {
      container.hidden = true;
      return 0;
    }
    container.appendChild(el('h2', 'sluice-recs__heading', opt.heading || 'You may also be interested in...'));
    var ul = el('ul', 'sluice-recs__list');
    list.forEach(function (p) {
      var li = el('li', 'sluice-recs__item');
      li.setAttribute('data-handle', String(p.handle || ''));
      var a = el('a', 'sluice-recs__link');
      a.href = safeUrl(p.url);
      var src = safeUrl(p.image);
      if (src) {
        var img = el('img', 'sluice-recs__image');
        img.src = src;
        img.alt = '';
        img.loading = 'lazy';
        img.width = 160;
        img.height = 160;
        a.appendChild(img);
      }
      a.appendChild(el('span', 'sluice-recs__title', p.title));
      if (p.price !== undefined && p.price !== null && p.price !== '') {
        a.appendChild(el('span', 'sluice-recs__price', p.price));
      }
      li.appendChild(a);
      ul.appendChild(li);
    });
    container.appendChild(ul);
    container.hidden = false;
    return list.length;
  }

  // Polls opts.load() after a page view at opts.viewTime (ms) until it
  // answers recommendations at least as new as the view, then renders them
  // and calls opts.onShown({latencyMs, shown, attempts}). Delays grow from
  // `first` by `factor` up to `maxDelay`; polling pauses while the tab is
  // hidden (that time does not count) and stops after `maxAttempts` polls or
  // `boundMs` of visible time, when the last recommendations seen (older than
  // the view) are rendered if there are any, and opts.onGiveUp(reason) is
  // called. A 400-like rejection with error.fatal stops at once.
  function watch(opts) {
    var doc = root.document;
    var first = opts.first || 100;
    var factor = opts.factor || 1.3;
    var maxDelay = opts.maxDelay || 2000;
    var maxAttempts = opts.maxAttempts || 40;
    var boundMs = opts.boundMs || 30000;
    var viewTime = opts.viewTime || Date.now();
    var attempts = 0;
    var delay = first;
    var visibleMs = 0;
    var visibleSince = doc.visibilityState === 'hidden' ? null : Date.now();
    var timer = null;
    var inFlight = false;
    var done = false;
    var last = null;

    function now() { return Date.now(); }
    function activeMs() { return visibleMs + (visibleSince === null ? 0 : now() - visibleSince); }

    function finish(reason) {
      if (done) return;
      done = true;
      if (timer) root.clearTimeout(timer);
      doc.removeEventListener('visibilitychange', onVisibility);
      if (reason !== 'shown' && reason !== 'stopped') {
        if (last) render(opts.container, last.products, opts);
        if (opts.onGiveUp) opts.onGiveUp(reason);
      }
    }

    function schedule(ms) {
      if (done || doc.visibilityState === 'hidden') return;
      if (timer) root.clearTimeout(timer);
      timer = root.setTimeout(poll, ms);
    }

    function poll() {
      timer = null;
      if (done || inFlight || doc.visibilityState === 'hidden') return;
      if (attempts >= maxAttempts || activeMs() >= boundMs) return finish('bound');
      attempts++;
      inFlight = true;
      Promise.resolve().then(opts.load).then(function (r) {
        inFlight = false;
        if (done) return;
        if (r && r.products && r.products.length) {
          last = r;
          if (Number(r.updatedAt) >= viewTime) {
            var shown = render(opts.container, r.products, opts);
            finish('shown');
            if (opts.onShown) opts.onShown({ latencyMs: now() - viewTime, shown: shown, attempts: attempts });
            return;
          }
        }
        delay = Math.min(maxDelay, attempts === 1 ? first : delay * factor);
        schedule(delay);
      }, function (err) {
        inFlight = false;
        if (done) return;
        if (err && err.fatal) return finish('error');
        delay = Math.min(maxDelay, attempts === 1 ? first : delay * factor);
        schedule(delay);
      });
    }

    function onVisibility() {
      if (doc.visibilityState === 'hidden') {
        if (visibleSince !== null) visibleMs += now() - visibleSince;
        visibleSince = null;
        if (timer) root.clearTimeout(timer);
        timer = null;
      } else {
        if (visibleSince === null) visibleSince = now();
        schedule(0);
      }
    }

    opts.container.hidden = true;
    doc.addEventListener('visibilitychange', onVisibility);
    schedule(opts.firstDelay === undefined ? first : opts.firstDelay);
    return { stop: function () { finish('stopped'); } };
  }

  // load() for sluice's read API: GET <api>/recommendations/<duid>.
  // 200 -> {updatedAt, products with url /products/<handle>}; 404 -> null;
  // 400 -> fatal; anything else rejects (polled again).
  function readApi(api, duid, options) {
    var opt = options || {};
    var base = String(api).replace(/\/+$/, '');
    var productPath = opt.productPath || '/products/';
    return function () {
      var ctl = typeof AbortController === 'function' ? new AbortController() : null;
      var t = ctl ? root.setTimeout(function () { ctl.abort(); }, opt.timeoutMs || 5000) : null;
      return root.fetch(base + '/recommendations/' + encodeURIComponent(duid), {
        credentials: 'omit', cache: 'no-store', signal: ctl ? ctl.signal : undefined,
      }).then(function (res) {
        if (t) root.clearTimeout(t);
        if (res.status === 404) return null;
        if (res.status === 400) { var e = new Error('bad visitor id'); e.fatal = true; throw e; }
        if (res.status !== 200) throw new Error('read API answered ' + res.status);
        return res.json().then(function (body) {
          var products = (body && Array.isArray(body.products) ? body.products : []).map(function (p) {
            return {
              id: p.id, handle: p.handle, title: p.title, price: p.price, category: p.category,
              url: typeof p.handle === 'string' ? productPath + encodeURIComponent(p.handle) : null,
              image: typeof p.image !== 'string' ? null
                : /^https?:/i.test(p.image) ? p.image : (opt.imageBase || '/') + p.image.replace(/^\/+/, ''),
            };
          });
          return { updatedAt: Number(body && body.updatedAt), products: products };
        });
      }, function (err) {
        if (t) root.clearTimeout(t);
        throw err;
      });
    };
  }

  root.SluiceRecs = { visitorId: visitorId, render: render, watch: watch, readApi: readApi, safeUrl: safeUrl };
})(typeof window !== 'undefined' ? window : this);
