/*
 * sluice-recs-shopify.js -- the Shopify theme's loader for the
 * recommendations section (sections/sluice-recommendations.liquid): reads the
 * visitor's metaobject (type nu_recommendation, handle customer-<duid>, field
 * products = list of product references) and the products' titles, images,
 * prices and links in ONE Storefront API query, and renders them with the
 * same widget as the demo storefront (assets/sluice-recs-widget.js, a copy of
 * examples/storefront/widget.js): DOM APIs and textContent only, nothing
 * shown when there is nothing to show, polling with backoff after the page
 * view until the metaobject is at least as new as the view, paused while the
 * tab is hidden, bounded.
 *
 * The section element carries the settings as data attributes:
 *   data-storefront-token  a Storefront API access token (public, read-only)
 *   data-api-version       Storefront API version (2026-07)
 *   data-metaobject-type   metaobject type (nu_recommendation)
 *   data-product-handle    the product on the page (left out of the list)
 *   data-heading           the section's heading
 */
(function () {
  'use strict';
  // Must equal examples/shopify/recommendations.storefront.graphql (a spec
  // checks it, and validates it against the Storefront schema 2026-07).
  var QUERY = 'query SluiceRecommendations($handle: MetaobjectHandleInput!) { metaobject(handle: $handle) { updatedAt field(key: "products") { references(first: 10) { nodes { ... on Product { id handle title onlineStoreUrl featuredImage { url(transform: {maxWidth: 320, maxHeight: 320}) altText } priceRange { minVariantPrice { amount currencyCode } } } } } } } }';

  function price(p) {
    var m = p.priceRange && p.priceRange.minVariantPrice;
    if (!m) return null;
    try {
      return new Intl.NumberFormat(document.documentElement.lang || undefined, { style: 'currency', currency: m.currencyCode }).format(Number(m.amount));
    } catch (e) {
      return m.amount + ' ' + m.currencyCode;
    }
  }

  // load() for the Storefront API: {updatedAt, products} or null when the
  // visitor has no metaobject yet; rejects on HTTP or GraphQL errors
  // (THROTTLED included), which the widget retries until its bound.
  function storefrontLoad(cfg, duid) {
    var url = '/api/' + encodeURIComponent(cfg.apiVersion) + '/graphql.json';
    var body = JSON.stringify({
      query: QUERY,
      variables: { handle: { type: cfg.type, handle: 'customer-' + duid } },
    });
    return function () {
      return fetch(url, {
        method: 'POST',
        credentials: 'omit',
        headers: { 'Content-Type': 'application/json', 'X-Shopify-Storefront-Access-Token': cfg.token },
        body: body,
      }).then(function (res) {
        if (res.status === 401 || res.status === 403) { var e = new Error('Storefront API ' + res.status); e.fatal = true; throw e; }
        if (res.status !== 200) throw new Error('Storefront API answered ' + res.status);
        return res.json();
      }).then(function (r) {
        if (r.errors && r.errors.length) throw new Error('Storefront API: ' + r.errors[0].message);
        var mo = r.data && r.data.metaobject;
        if (!mo) return null;
        var nodes = (mo.field && mo.field.references && mo.field.references.nodes) || [];
        var products = nodes.filter(function (n) { return n && n.handle; }).map(function (n) {
          return {
            id: n.id, handle: n.handle, title: n.title, price: price(n),
            url: n.onlineStoreUrl || (window.Shopify && window.Shopify.routes ? window.Shopify.routes.root : '/') + 'products/' + encodeURIComponent(n.handle),
            image: n.featuredImage ? n.featuredImage.url : null,
          };
        });
        return { updatedAt: Date.parse(mo.updatedAt), products: products };
      });
    };
  }

  function start() {
    var sections = document.querySelectorAll('[data-sluice-recs]');
    var viewTime = Date.now();
    var duid = window.SluiceRecs && window.SluiceRecs.visitorId(document.cookie);
    for (var i = 0; i < sections.length; i++) {
      var el = sections[i];
      if (!duid) { el.hidden = true; continue; }
      var cfg = {
        token: el.getAttribute('data-storefront-token'),
        apiVersion: el.getAttribute('data-api-version') || '2026-07',
        type: el.getAttribute('data-metaobject-type') || 'nu_recommendation',
      };
      if (!cfg.token) { el.hidden = true; continue; }
      var exclude = el.getAttribute('data-product-handle');
      window.SluiceRecs.watch({
        container: el,
        viewTime: viewTime,
        load: storefrontLoad(cfg, duid),
        exclude: exclude ? [exclude] : [],
        heading: el.getAttribute('data-heading') || undefined,
        first: 500, factor: 1.5, maxDelay: 5000, boundMs: 60000,
      });
    }
  }

  // The tracker sets the _sp_id cookie as it tracks the page view; start
  // once the page (and the tracker, loaded before this file) has run.
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
