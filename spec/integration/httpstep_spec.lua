-- httpstep_spec.lua -- the model and http steps through `sluice run`, against
-- the HTTP test servers of scripts/testservers/ (MLflow protocol, OAuth,
-- Shopify Admin GraphQL), as Kafka and those servers see it.
--
-- Order per key under reordered answers and coalescing; a slow key never
-- holds the others; retries, backoff and Retry-After; dead letters with
-- status and a redacted snippet, and a secret that appears nowhere; OAuth
-- token refresh on expiry and after a 401; Shopify userErrors, 429 and its
-- cost bucket; backpressure while the model stalls; kill -9, SIGHUP and
-- SIGTERM with requests in flight; `sluice test` with and without --stub.
-- Every describe runs its own worker on its own topics and servers.

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")
local TS = dofile("spec/integration/testservers.lua")

local dir, brokers, broker

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

lazy_teardown(function()
  if broker then broker:stop() end
  if os.getenv("HTTPSTEP_SPEC_KEEP") == "1" then print("# kept " .. dir) else H.rmrf(dir) end
end)

local WINDOW = { key = "userId", time = "product.viewTimestamp", length = "5m", dedupe = "eventId",
  aggregate = { slugs = { "list", "product.slug" }, viewTimestamps = { "list", "product.viewTimestamp" } },
  as = "aggregatedProducts", max_entries = 50 }

local FIELDS = { "userId", "eventId", "aggregatedProducts", "recommendationsOutput", "recommendationIds",
  "sendResult" }

local function merge(a, b)
  local out = {}
  for k, v in pairs(a) do out[k] = v end
  for k, v in pairs(b or {}) do out[k] = v end
  return out
end

-- A job: extract, window, model (o.model: the MLflow server's URL, o.model_opts
-- more keys), limit, shopify (o.shopify: the store URL, o.shopify_opts),
-- record, debug. Returns the names and the config.
local function job(prefix, o)
  local n = {
    input = H.unique(prefix .. "-in"), output = H.unique(prefix .. "-out"),
    dead_letter = H.unique(prefix .. "-dlq"), group = H.unique(prefix .. "-g"),
    admin_port = H.free_port(), brokers = brokers, state_dir = dir .. "/" .. H.unique("state"),
    max_inflight = o.max_inflight, shutdown_timeout = o.shutdown_timeout,
  }
  local p = {
    { lua = "recommendations.extract", params = { store_url = H.STORE_URL, app_id = H.APP_ID } },
    { name = "window", window = WINDOW },
    { name = "model", model = merge({ kind = "mlflow", url = o.model, as = "recommendationsModelOutput",
      input = "recommendations.model.input", output = "recommendations.model.output",
      timeout = "10s", retries = 3, backoff = "50ms" }, o.model_opts) },
    { lua = "recommendations.limit" },
  }
  if o.shopify then
    p[#p + 1] = { name = "shopify", http = merge({
      url = o.shopify .. "/admin/api/2026-07/graphql.json", method = "POST",
      headers = { ["X-Shopify-Access-Token"] = o.shopify_token or "shpat_test_token" },
      request = "recommendations.shopify.request", response = "recommendations.shopify.response",
      as = "sendResult", accept = { 200 }, retries = 3, backoff = "50ms" }, o.shopify_opts) }
  end
  p[#p + 1] = { lua = "recommendations.record" }
  p[#p + 1] = { name = "debug", kafka = { topic = n.output, key = "userId", fields = FIELDS } }
  n.pipeline = p
  return n, H.pipeline_config(n)
end

local function start(name, n, cfg, env)
  local w = H.start_sluice(dir, name, cfg, { admin_port = n.admin_port, env = env })
  w.n = n
  return w
end

-- A visitor id: 36 characters like a tracker's duid.
local function visitor(i) return string.format("22222222-2222-4222-8222-%012d", i) end

-- Page views: count views of visitor v, event ids from `first` on.
local function views(v, first, count) return H.page_views(first, count, { duid = v }) end

local function dead_letters(n)
  local out = {}
  for _, r in ipairs(H.records(brokers, n.dead_letter)) do out[#out + 1] = r.json or { raw = r.value } end
  return out
end

-- Sink records by visitor, each list in offset order (one key, one partition).
local function by_user(recs)
  table.sort(recs, function(a, b) return a.offset < b.offset end)
  local out = {}
  for _, r in ipairs(recs) do
    local u = r.json and r.json.userId
    if u then
      out[u] = out[u] or {}
      table.insert(out[u], r.json)
    end
  end
  return out
end

local function metric(w, sample) return H.metric(H.metrics(w.n.admin_port), sample) or 0 end

local function rss_kb(pid)
  local s = H.read("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

local function count_eids(recs)
  local seen, n = {}, 0
  for _, r in ipairs(recs) do
    local e = r.json and r.json.eventId
    if e and not seen[e] then seen[e], n = true, n + 1 end
  end
  return n, seen
end

-- ==================== Order per key and coalescing ====================

describe("model and Shopify steps: order per key under reordered answers", function()
  local ml, shop, w, n
  local users = { visitor(1), visitor(2), visitor(3) }
  local counts = { 8, 4, 4 }

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "", "ml-order")
    shop = TS.start(dir, "shopify", "", "shop-order")
    local cfg
    n, cfg = job("order", { model = ml.url, shopify = shop.url })
    w = start("order", n, cfg)
    -- answers come back in another order than asked: 300 ms, 0, 150, ...
    ml:control({ delays = { 300, 0, 150, 20, 0, 80, 10, 200 } })
    local recs, id = {}, 100
    for u, v in ipairs(users) do
      for _, r in ipairs(views(v, id, counts[u])) do recs[#recs + 1] = r end
      id = id + 100
    end
    H.produce(brokers, n.input, recs)
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
    if shop then shop:stop() end
  end)

  it("sends each visitor's windows in event order; skipped ones are counted, none lost", function()
    local total = counts[1] + counts[2] + counts[3]
    local sink, coalesced
    H.wait_for(function()
      sink = H.records(brokers, n.output)
      coalesced = metric(w, 'sluice_filtered_total{step="model",reason="coalesced"}')
      return #sink + coalesced >= total
    end, 30, 0.3)
    assert.are.equal(total, #sink + coalesced, "every record reaches the sink or is coalesced: "
      .. #sink .. " + " .. coalesced)
    assert.is_true(coalesced >= 1, "the burst of visitor 1 coalesced while its request was in flight")
    local per = by_user(sink)
    for u, v in ipairs(users) do
      local got = per[v] or {}
      assert.is_true(#got >= 1, "visitor " .. u .. " reached the sink")
      local last = 0
      for i, r in ipairs(got) do
        local size = #r.aggregatedProducts.slugs
        assert.is_true(size > last, string.format("visitor %d: record %d has a window of %d views "
          .. "after one of %d: out of order", u, i, size, last))
        last = size
        assert.are.equal(10, #r.recommendationIds, "10 recommendations")
        assert.is_string(r.sendResult.metaobject.id, "Shopify answered with the metaobject id")
      end
      assert.are.equal(counts[u], last, "visitor " .. u .. ": the newest window is the last one sent")
    end
    assert.are.equal(0, #dead_letters(n), "no dead letter")
  end)

  it("writes each visitor's metaobject in the same order: the newest value stays", function()
    local per = by_user(H.records(brokers, n.output))
    local code, doc = shop:get("/_metaobjects")
    assert.are.equal(200, code)
    for u, v in ipairs(users) do
      local handle = "customer-" .. v
      local mo = doc.metaobjects[handle]
      assert.is_table(mo, "metaobject of visitor " .. u)
      local sent = per[v]
      assert.are.same(sent[#sent].recommendationIds, cjson.decode(mo.fields.products),
        "the stored value is the newest window's recommendations")
      local writes = {}
      for _, h in ipairs(doc.history) do
        if h.handle == handle then writes[#writes + 1] = cjson.decode(h.fields.products) end
      end
      assert.are.equal(#sent, #writes, "one write per record sent")
      for i, ids in ipairs(writes) do
        assert.are.same(sent[i].recommendationIds, ids, "write " .. i .. " of visitor " .. u .. " in order")
      end
    end
  end)
end)

describe("model step: coalesce = false", function()
  local ml, w, n

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "", "ml-nocoalesce")
    local cfg
    n, cfg = job("nocoal", { model = ml.url, model_opts = { coalesce = false } })
    w = start("nocoal", n, cfg)
    ml:control({ delays = { 200, 0, 100 } })
    H.produce(brokers, n.input, views(visitor(7), 700, 6))
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
  end)

  it("sends every window of a key, one after the other, in order", function()
    local sink = H.wait_records(brokers, n.output, 6, 20)
    assert.are.equal(6, #sink)
    local got = by_user(sink)[visitor(7)]
    for i, r in ipairs(got) do assert.are.equal(i, #r.aggregatedProducts.slugs, "window " .. i) end
    assert.are.equal(0, metric(w, 'sluice_filtered_total{step="model",reason="coalesced"}'))
    assert.are.equal(1, ml:stats().max_in_flight, "one request of the key at a time")
  end)
end)

describe("model step: a slow key", function()
  local ml, w, n
  local slow = "__sleep_2500__"  -- the MLflow test server sleeps 2.5 s for this userId

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "", "ml-slow")
    local cfg
    n, cfg = job("slowkey", { model = ml.url })
    w = start("slowkey", n, cfg)
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
  end)

  it("never holds back the other keys", function()
    H.produce(brokers, n.input, views(slow, 900, 1))
    H.sleep(0.3)
    local recs = {}
    for i = 1, 5 do recs[#recs + 1] = H.page_view(910 + i, { duid = visitor(10 + i) }) end
    H.produce(brokers, n.input, recs)
    local sink = H.wait_records(brokers, n.output, 5, 10)
    local per = by_user(sink)
    for i = 1, 5 do assert.is_table(per[visitor(10 + i)], "visitor " .. i .. " went past the slow key") end
    assert.is_nil(per[slow], "the slow key is still waiting for its answer")
    H.wait_for(function() return by_user(H.records(brokers, n.output))[slow] end, 10)
    assert.is_table(by_user(H.records(brokers, n.output))[slow], "the slow key finished too")
  end)
end)

-- ==================== Failures ====================

describe("model step: retries and dead letters", function()
  local ml, w, n
  local SECRET = "sekrit-model-token-" .. math.random(100000, 999999)

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "--bearer " .. SECRET, "ml-retry")
    local cfg
    n, cfg = job("retry", { model = ml.url, model_opts = { retries = 2, backoff = "200ms",
      auth = { kind = "bearer", token = SECRET } } })
    cfg.pipeline[3].model.auth = nil
    -- the token comes from the environment through env(), as in production
    local path = dir .. "/retry.lua"
    local text = "return " .. H.lua(cfg) .. "\n"
    text = text:gsub("model = {", 'model = { auth = { kind = "bearer", token = env("SPEC_MODEL_TOKEN") },', 1)
    H.write(path, text)
    H.create_topic(brokers, n.input)
    w = H.start_sluice(dir, "retry", path, { admin_port = n.admin_port,
      env = "env SPEC_MODEL_TOKEN=" .. SECRET .. " " })
    w.n = n
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
  end)

  it("retries 5xx with exponential backoff and succeeds", function()
    ml:control({ mode = "500", times = 2 })
    local since = #ml:received()
    H.produce(brokers, n.input, views(visitor(20), 2000, 1))
    local sink = H.wait_records(brokers, n.output, 1, 15)
    assert.are.equal(1, #sink)
    local got = ml:received(since)
    assert.are.equal(3, #got, "two failures, then the answer")
    local gap1, gap2 = got[2].t_ms - got[1].t_ms, got[3].t_ms - got[2].t_ms
    assert.is_true(gap1 >= 90, "first backoff >= 100 ms with jitter, got " .. gap1)
    assert.is_true(gap2 >= 190, "second backoff >= 200 ms with jitter, got " .. gap2)
    assert.are.equal(2, metric(w, 'sluice_http_retries_total{endpoint="model"}'))
  end)

  it("honours Retry-After of a 429", function()
    ml:control({ mode = "429", retry_after = 1, times = 1 })
    local since = #ml:received()
    H.produce(brokers, n.input, views(visitor(21), 2100, 1))
    H.wait_for(function() return by_user(H.records(brokers, n.output))[visitor(21)] end, 15)
    local got = ml:received(since)
    assert.are.equal(2, #got)
    assert.is_true(got[2].t_ms - got[1].t_ms >= 990, "waited the second Retry-After asked for, got "
      .. (got[2].t_ms - got[1].t_ms))
  end)

  it("dead-letters after its retries with step, status and the error", function()
    ml:control({ mode = "500", times = 3 })
    H.produce(brokers, n.input, views(visitor(22), 2200, 1))
    local dl = H.wait_for(function()
      local l = dead_letters(n)
      return #l >= 1 and l
    end, 15)
    assert.is_table(dl, "a dead letter")
    local d = dl[1]
    assert.are.equal("model", d.step)
    assert.are.equal(500, d.http.status)
    assert.are.equal(3, d.http.attempts, "1 + 2 retries")
    assert.is_truthy(d.error:find("HTTP 500", 1, true), d.error)
    assert.is_truthy(d.http.response:find("INTERNAL_ERROR", 1, true), "a snippet of the answer")
    assert.are.equal(visitor(22), d.source.key)
  end)

  it("redacts a secret in the answer from the dead letter; the secret is nowhere", function()
    -- the answer carries the token, and a number where a product id must be
    ml:control({ inject_ids = { SECRET, 5 } })
    H.produce(brokers, n.input, views(visitor(23), 2300, 1))
    local d = H.wait_for(function()
      for _, l in ipairs(dead_letters(n)) do if l.source and l.source.key == visitor(23) then return l end end
    end, 15)
    ml:post("/_control", '{"inject_ids": []}', { "Content-Type: application/json" })
    assert.is_table(d, "the bad answer is dead-lettered")
    assert.are.equal(1, d.http.attempts, "a bad answer is not retried")
    assert.is_truthy(d.error:find("itemIds", 1, true), d.error)
    assert.is_truthy(d.http.response:find("[redacted]", 1, true), d.http.response)
    local everything = H.records(brokers, n.dead_letter)
    for _, r in ipairs(everything) do
      assert.is_nil(r.value:find(SECRET, 1, true), "the secret in a dead letter: " .. r.value)
    end
    assert.is_nil(w:stderr():find(SECRET, 1, true), "the secret in the log")
    assert.is_nil(H.metrics(n.admin_port):find(SECRET, 1, true), "the secret on /metrics")
    -- and in the trace of sluice test
    H.write(dir .. "/one.jsonl", views(visitor(24), 2400, 1)[1].value .. "\n")
    local rc, out = H.run(string.format("env SPEC_MODEL_TOKEN=%s %s test -c %s -i %s", SECRET, H.q(H.BIN),
      H.q(dir .. "/retry.lua"), H.q(dir .. "/one.jsonl")))
    assert.are.equal(0, rc)
    assert.is_truthy(out:find('"request":', 1, true), out)
    assert.is_truthy(out:find("Bearer [redacted]", 1, true), out)
    assert.is_nil(out:find(SECRET, 1, true), "the secret in the trace")
  end)
end)

describe("model step: OAuth2 client credentials", function()
  local ml, w, n

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "--oauth --expires-in 2", "ml-oauth")
    local cfg
    n, cfg = job("oauth", { model = ml.url, model_opts = { auth = { kind = "oauth2",
      token_url = ml.url .. "/oidc/v1/token", client_id = "sluice-test-client",
      client_secret = "sluice-test-secret", scope = "all-apis" } } })
    w = start("oauth", n, cfg)
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
  end)

  it("fetches a token, refreshes it before it expires and after a 401", function()
    for b = 0, 2 do
      H.produce(brokers, n.input, { H.page_view(3000 + b, { duid = visitor(30 + b) }) })
      H.sleep(1.5)
    end
    -- a long-lived token next, so that the revoke below hits a token in use
    ml:control({ expires_in = 60 })
    H.sleep(2.1)
    H.produce(brokers, n.input, { H.page_view(3005, { duid = visitor(35) }) })
    H.wait_records(brokers, n.output, 4, 15)
    ml:control({ revoke = true })  -- tokens issued so far answer 401
    H.produce(brokers, n.input, { H.page_view(3010, { duid = visitor(40) }) })
    local sink = H.wait_records(brokers, n.output, 5, 15)
    assert.are.equal(5, #sink, "every record answered")
    assert.are.equal(0, #dead_letters(n))
    local stats = ml:stats()
    assert.is_true(stats.tokens_issued >= 3, "tokens of 2 s renewed over ~5 s and after the revoke: "
      .. stats.tokens_issued)
    assert.is_true((stats.by_status["401"] or 0) >= 1, "the revoked token got a 401")
    assert.is_nil(w:stderr():find("sluice-test-secret", 1, true), "the client secret in the log")
  end)
end)

describe("Shopify step: userErrors, 429 and throttling", function()
  local ml, shop, w, n

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "", "ml-shop")
    shop = TS.start(dir, "shopify", "", "shop-fail")
    local cfg
    n, cfg = job("shopfail", { model = ml.url, shopify = shop.url })
    w = start("shopfail", n, cfg)
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
    if shop then shop:stop() end
  end)

  it("dead-letters userErrors (not retried) with the store's message", function()
    shop:control({ mode = "user_errors", times = 1 })
    H.produce(brokers, n.input, views(visitor(50), 5000, 1))
    local d = H.wait_for(function() return dead_letters(n)[1] end, 15)
    assert.is_table(d)
    assert.are.equal("shopify", d.step)
    assert.are.equal(200, d.http.status)
    assert.are.equal(1, d.http.attempts)
    assert.is_truthy(d.error:find("userErrors", 1, true), d.error)
    assert.is_nil(cjson.encode(d):find("shpat_test_token", 1, true), "the access token in the dead letter")
  end)

  it("waits out a 429 and writes", function()
    shop:control({ mode = "429", retry_after = 1, times = 1 })
    H.produce(brokers, n.input, views(visitor(51), 5100, 1))
    H.wait_for(function() return by_user(H.records(brokers, n.output))[visitor(51)] end, 15)
    local r = by_user(H.records(brokers, n.output))[visitor(51)]
    assert.is_table(r, "written after the 429")
    assert.is_string(r[1].sendResult.metaobject.id)
  end)

  it("keeps a cost bucket: a burst is paced instead of throttled", function()
    shop:control({ bucket = { maximumAvailable = 40, currentlyAvailable = 40, restoreRate = 20, cost = 10 } })
    local before = shop:stats().throttled or 0
    -- one write teaches the step the bucket, then a burst of 12 visitors
    H.produce(brokers, n.input, views(visitor(60), 6000, 1))
    H.wait_for(function() return by_user(H.records(brokers, n.output))[visitor(60)] end, 15)
    local recs = {}
    for i = 1, 12 do recs[i] = H.page_view(6100 + i, { duid = visitor(60 + i) }) end
    H.produce(brokers, n.input, recs)
    local ok = H.wait_for(function()
      local per = by_user(H.records(brokers, n.output))
      for i = 1, 12 do if not per[visitor(60 + i)] then return false end end
      return true
    end, 30)
    assert.is_true(ok, "all 12 written")
    -- The step is the bucket's only client: it waits rather than being
    -- throttled, whatever order it reads the answers in (core/costbucket.h).
    assert.are.equal(0, (shop:stats().throttled or 0) - before, "THROTTLED answers")
    assert.is_true(metric(w, 'sluice_http_cost_waits_total{step="shopify"}') >= 1, "the step waited for the bucket")
    assert.are.equal(1, #dead_letters(n), "only the userErrors record of the first test")
  end)

  it("retries a THROTTLED answer when another client drained the bucket", function()
    local before = shop:stats().throttled or 0
    local retries = metric(w, 'sluice_http_step_retries_total{step="shopify"}')
    shop:control({ mode = "throttled", times = 1 })
    H.produce(brokers, n.input, views(visitor(80), 8000, 1))
    local r = H.wait_for(function() return by_user(H.records(brokers, n.output))[visitor(80)] end, 30)
    assert.is_table(r, "written after THROTTLED")
    assert.is_string(r[1].sendResult.metaobject.id)
    assert.is_true((shop:stats().throttled or 0) - before >= 1, "the store answered THROTTLED")
    assert.is_true(metric(w, 'sluice_http_step_retries_total{step="shopify"}') > retries, "the step retried")
    assert.are.equal(1, #dead_letters(n), "only the userErrors record of the first test")
  end)
end)

-- ==================== Bounds and signals ====================

describe("model step: backpressure while the model stalls", function()
  local ml, w, n

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "", "ml-stall")
    local cfg
    n, cfg = job("stall", { model = ml.url, max_inflight = 100000,
      model_opts = { max_in_flight = 2, max_queued = 2 } })
    w = start("stall", n, cfg)
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if ml then ml:stop() end
  end)

  it("holds the consumer with memory bounded, then drains everything", function()
    ml:control({ mode = "slow", delay_ms = 4000, times = 4 })
    local rss0 = rss_kb(w.pid)
    local recs = {}
    for i = 1, 400 do recs[i] = H.page_view(8000 + i, { duid = visitor(1000 + i) }) end
    H.produce(brokers, n.input, recs)
    H.sleep(2.5)
    local inflight = metric(w, "sluice_inflight_records")
    assert.is_true(inflight <= 12, "records in flight bounded by the endpoint's slots and queue, got " .. inflight)
    assert.is_true(ml:stats().max_in_flight <= 2, "max_in_flight requests at the server")
    assert.is_true(rss_kb(w.pid) - rss0 < 30000, "RSS grew by " .. (rss_kb(w.pid) - rss0) .. " kB")
    local sink = H.wait_records(brokers, n.output, 400, 40)
    assert.are.equal(400, count_eids(sink), "every record processed once the model answers")
    assert.are.equal(0, #dead_letters(n))
  end)
end)

describe("model step: signals with requests in flight", function()
  local ml, n, cfg

  lazy_setup(function()
    ml = TS.start(dir, "mlflow", "", "ml-signals")
    n, cfg = job("signals", { model = ml.url, shutdown_timeout = "1s" })
  end)

  lazy_teardown(function()
    if ml then ml:stop() end
  end)

  it("SIGHUP reloads while requests are in flight; none is lost or run twice", function()
    local w = start("hup", n, cfg)
    ml:control({ mode = "slow", delay_ms = 1500, times = 10 })
    local recs = {}
    for i = 1, 10 do recs[i] = H.page_view(9100 + i, { duid = visitor(1500 + i) }) end
    H.produce(brokers, n.input, recs)
    H.wait_for(function() return ml:stats().in_flight > 0 end, 10, 0.05)
    w:signal("HUP")
    assert.is_truthy(w:wait_log("rules reloaded", 10), "the reload happened")
    local sink = H.wait_records(brokers, n.output, 10, 20)
    assert.are.equal(10, #sink, "every record once")
    assert.are.equal(10, count_eids(sink))
    assert.are.equal(0, #dead_letters(n))
    assert.are.equal(0, w:stop(10), "clean stop")
  end)

  it("kill -9 with requests in flight loses nothing: a restart processes them", function()
    local out0 = #H.records(brokers, n.output)
    local w = start("kill1", n, cfg)
    ml:control({ mode = "slow", delay_ms = 5000 })
    local recs = {}
    for i = 1, 20 do recs[i] = H.page_view(9200 + i, { duid = visitor(1600 + i) }) end
    H.produce(brokers, n.input, recs)
    H.wait_for(function() return ml:stats().in_flight > 0 end, 10, 0.05)
    w:signal("KILL")
    w:wait(5)
    ml:control({ mode = "normal" })
    local w2 = start("kill2", n, cfg)
    local want = {}
    for _, r in ipairs(recs) do want[r.eid] = true end
    local ok = H.wait_for(function()
      local _, seen = count_eids(H.records(brokers, n.output))
      for e in pairs(want) do if not seen[e] then return false end end
      return true
    end, 40, 0.5)
    assert.is_true(ok, "all 20 records processed after the restart (" .. out0 .. " before)")
    assert.are.equal(0, #dead_letters(n))
    w2:stop()
  end)

  it("SIGTERM cancels requests still in flight at shutdown_timeout and exits", function()
    local w = start("term", n, cfg)
    ml:control({ mode = "slow", delay_ms = 8000 })
    H.produce(brokers, n.input, views(visitor(1700), 9300, 1))
    H.wait_for(function() return ml:stats().in_flight > 0 end, 10, 0.05)
    local t0 = H.now_ms()
    w:signal("TERM")
    local rc = w:wait(6)
    ml:control({ mode = "normal" })
    assert.are.equal(0, rc, "exit 0 after the shutdown timeout")
    assert.is_true(H.now_ms() - t0 < 5000, "did not wait for the stalled model")
    assert.is_truthy(w:stderr():find("still in flight", 1, true), w:stderr())
  end)
end)

-- ==================== sluice test ====================

describe("sluice test with HTTP steps", function()
  local cfgpath, input

  lazy_setup(function()
    local n, cfg = job("trace", { model = "http://127.0.0.1:9", shopify = "http://127.0.0.1:9",
      shopify_token = "shpat_trace_secret" })
    n.brokers = "embedded"
    cfgpath = H.write_config(dir .. "/trace.lua", cfg)
    input = dir .. "/trace.jsonl"
    H.write(input, views(visitor(77), 7700, 2)[1].value .. "\n" .. views(visitor(77), 7701, 1)[1].value .. "\n")
    H.write(dir .. "/model.json", cjson.encode({ status = 200, headers = { ["Content-Type"] = "application/json" },
      body = { predictions = { { itemIds = { "gid://shopify/Product/1", "gid://shopify/Product/2" },
        preds = { 0.9, 0.8 } } } } }))
  end)

  local function lines(out)
    local t = {}
    for l in out:gmatch("[^\n]+") do t[#t + 1] = cjson.decode(l) end
    return t
  end

  it("without a stub traces the request the model would send and stops there", function()
    local rc, out, err = H.run(string.format("%s test -c %s -i %s", H.q(H.BIN), H.q(cfgpath), H.q(input)))
    assert.are.equal(0, rc, err)
    local req, stopped
    for _, l in ipairs(lines(out)) do
      if l.step == "model" and l.request then req = l.request end
      if l.step == "model" and l.stopped then stopped = true end
      assert.are_not.equal("limit", l.step, "nothing after the model without a stub")
    end
    assert.are.equal("POST", req.method)
    assert.are.equal("http://127.0.0.1:9/invocations", req.url)
    assert.are.same({ "userId", "items", "timestamps" }, req.body.dataframe_split.columns)
    assert.is_true(stopped)
  end)

  it("with --stub answers the model and shows the exact GraphQL body for Shopify", function()
    local rc, out, err = H.run(string.format("%s test -c %s -i %s --stub model=%s", H.q(H.BIN), H.q(cfgpath),
      H.q(input), H.q(dir .. "/model.json")))
    assert.are.equal(0, rc, err)
    local shop, limited
    for _, l in ipairs(lines(out)) do
      if l.step == "shopify" and l.request then shop = l.request end
      if l.step == "limit" then limited = l.ctx.recommendationIds end
    end
    assert.are.same({ "gid://shopify/Product/1", "gid://shopify/Product/2" }, limited)
    local query = H.read("spec/fixtures/shopify/upsert-metaobject.admin.graphql"):gsub("%s+$", "")
    assert.are.equal(query, shop.body.query)
    assert.are.equal("customer-" .. visitor(77), shop.body.variables.handle.handle)
    assert.are.same(limited, cjson.decode(shop.body.variables.metaobject.fields[1].value))
    assert.is_truthy(table.concat(shop.headers, "\n"):find("X-Shopify-Access-Token: [redacted]", 1, true))
    assert.is_nil(out:find("shpat_trace_secret", 1, true), "the token in the trace")
  end)

  it("refuses a stub for a step that is not an HTTP step", function()
    local rc, _, err = H.run(string.format("%s test -c %s -i %s --stub limit=%s", H.q(H.BIN), H.q(cfgpath),
      H.q(input), H.q(dir .. "/model.json")))
    assert.are.equal(1, rc)
    assert.is_truthy(err:find("not an http or model step", 1, true), err)
  end)
end)

-- ==================== sluice check ====================

describe("sluice check with HTTP steps", function()
  local function check(cfg, env)
    local path = H.write_config(dir .. "/" .. H.unique("check") .. ".lua", cfg)
    local rc, out, err = H.run(string.format("%s%s check -c %s", env or "", H.q(H.BIN), H.q(path)))
    return rc, out, err, path
  end

  local function one_step(step)
    return { kafka = { brokers = "embedded" }, pipeline = { { lua = "recommendations.limit" }, step } }
  end

  it("names the file and key path of a bad http or model step", function()
    local cases = {
      { { name = "m", model = { kind = "tensorflow", url = "http://x", input = "a.b" } },
        "pipeline[2].model.kind: expected \"mlflow\" or \"builtin\"" },
      { { name = "m", model = { url = "http://x", input = "a.b", auth = { kind = "bearer" } } },
        "pipeline[2].model.auth.token: expected a non-empty string (is its environment variable set?)" },
      { { name = "m", model = { url = "ftp://x", input = "a.b" } },
        "pipeline[2].model.url: expected a URL starting with http:// or https://" },
      { { name = "s", http = { url = "http://x" } }, "pipeline[2].http.request: expected a string" },
      { { name = "s", http = { url = "http://x", request = "a.b", timeout = 2 } },
        "pipeline[2].http.timeout: expected a duration" },
      { { name = "s", http = { url = "http://x", request = "a.b", accept = { 200, 42 } } },
        "pipeline[2].http.accept[2]: expected an HTTP status" },
      { { name = "s", http = { url = "http://x", request = "a.b", retry = 3 } },
        "pipeline[2].http.retry: unknown key" },
    }
    for _, c in ipairs(cases) do
      local rc, _, err, path = check(one_step(c[1]))
      assert.are.equal(1, rc, c[2])
      assert.is_truthy(err:find(path .. ": " .. c[2], 1, true), "expected " .. c[2] .. ", got " .. err)
    end
  end)

  it("fails on a request function the rules do not have", function()
    local rc, _, err = check(one_step({ name = "s", http = { url = "http://x",
      request = "recommendations.shopify.nope" } }))
    assert.are.equal(1, rc)
    assert.is_truthy(err:find("step s: module recommendations.shopify has no function nope", 1, true), err)
  end)

  it("says which steps of config/recommendations.lua run and why", function()
    local model_file = dir .. "/check.model"
    assert.are.equal(0, (H.run(string.format("%s model gen --seed 1 --out %s && %s model train -i %s "
      .. "-c examples/catalog.json -o %s", H.q(H.BIN), H.q(dir .. "/check.tsv"), H.q(H.BIN),
      H.q(dir .. "/check.tsv"), H.q(model_file)))))
    local rc, out = H.run("env MODEL_FILE=" .. H.q(model_file) .. " " .. H.q(H.BIN)
      .. " check -c config/recommendations.lua")
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("steps: extract (lua) -> window (window) -> model (model) -> limit (lua) -> "
      .. "record (lua) -> debug (kafka) -> store (store)", 1, true), out)
    assert.is_truthy(out:find("note: model: built-in, file MODEL_FILE=" .. model_file, 1, true), out)
    rc, out = H.run("env MODEL_URL=http://127.0.0.1:9 MODEL_TOKEN=t SHOPIFY_STORE=127.0.0.1:9 "
      .. "SHOPIFY_ADMIN_TOKEN=shpat_x " .. H.q(H.BIN) .. " check -c config/recommendations.lua")
    assert.are.equal(0, rc)
    assert.is_truthy(out:find("window (window) -> model (model) -> limit (lua) -> shopify (http) -> record (lua)",
      1, true), out)
    assert.is_truthy(out:find("note: model: MLflow at MODEL_URL, auth bearer", 1, true), out)
    local _, out3 = H.run("env MODEL_URL=http://127.0.0.1:9 " .. H.q(H.BIN) .. " check -c config/recommendations.lua")
    assert.is_truthy(out3:find("note: shopify: left out (set SHOPIFY_STORE and SHOPIFY_ADMIN_TOKEN)", 1, true), out3)
  end)
end)
