/*
 * store.js -- what every page of the demo storefront runs: the official
 * Snowplow browser tracker (window.snowplowBrowserTracking, the npm package
 * @snowplow/browser-tracker's UMD bundle served as /sp.js) pointed at the
 * collector, a page view, and the recommendations widget (widget.js) polling
 * the collector's read API for that view. The page's settings come from the
 * JSON in <script id="sluice-config">, written by server.js.
 *
 * The time from the page view (the tracker's dtm) to the recommendations on
 * the page is logged to the console, kept in window.__sluiceRecs and sent to
 * the collector as a structured event (category "sluice", action
 * "recommendations_shown", property "latency_ms", value the milliseconds).
 */
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('sluice-config').textContent);
  var sp = window.snowplowBrowserTracking;
  var state = window.__sluiceRecs = { viewTime: null, duid: null, shown: null, gaveUp: null };
  var container = document.getElementById('sluice-recs');

  var viewTime = null;
  var payloadDuid = null;
  // The tracker's own timestamp of the page view (dtm) and duid, read as it
  // builds the event.
  var viewPlugin = {
    afterTrack: function (payload) {
      if (payload.e === 'pv' && viewTime === null) {
        viewTime = Number(payload.dtm);
        payloadDuid = payload.duid;
      }
    },
  };
  sp.newTracker('sp', cfg.collector, {
    plugins: [viewPlugin],
    appId: cfg.appId,
    platform: 'web',
    eventMethod: 'post',
    bufferSize: 1,
    contexts: { webPage: true },
  });
  sp.trackPageView();
  if (viewTime === null) viewTime = Date.now();
  var duid = SluiceRecs.visitorId(document.cookie) || payloadDuid;
  state.viewTime = viewTime;
  state.duid = duid;
  if (!container || !duid) return;

  SluiceRecs.watch({
    container: container,
    viewTime: viewTime,
    load: SluiceRecs.readApi(cfg.collector, duid),
    exclude: cfg.product ? [cfg.product] : [],
    boundMs: cfg.pollBoundMs,
    onShown: function (r) {
      state.shown = r;
      container.setAttribute('data-latency-ms', String(r.latencyMs));
      console.info('sluice: ' + r.shown + ' recommendations shown ' + r.latencyMs + ' ms after the page view');
      sp.trackStructEvent({
        category: 'sluice', action: 'recommendations_shown', label: cfg.product || 'catalog',
        property: 'latency_ms', value: r.latencyMs,
      });
    },
    onGiveUp: function (reason) {
      state.gaveUp = reason;
      console.info('sluice: no recommendations for this view (' + reason + ')');
    },
  });
})();
