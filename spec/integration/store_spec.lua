-- The store sink and the read API, driven through Kafka and HTTP: records
-- in, GET /recommendations/<visitor id> out with the catalog's details,
-- CORS and no-store; 400/404; max_keys; the ordering guard against a replay;
-- two workers of one group sharing a real redis-server (started here, on a
-- free port, stopped after), Redis killed (503, the sink retries, nothing
-- crashes) and started again (the records flow and are readable).

local H = dofile("spec/integration/helpers.lua")
local cjson = require "cjson"

local ORIGIN = "http://shop.example"
local V1 = "4f1195b8-6b68-4cd6-a7eb-925bd120e8ad"
local V2 = "9a8b7c6d-1111-4222-8333-444455556666"
local G = {
  figure = "gid://shopify/Product/10334951440715",
  aircon = "gid://shopify/Product/10334954619211",
  freshener = "gid://shopify/Product/10334953472331",
  anthology = "gid://shopify/Product/10334951342411",
}

local function config(t)
  return {
    kafka = { brokers = t.brokers, group = t.group, input = t.input,
              dead_letter = t.input .. ".dl", consumer = H.FAST_GROUP },
    rules = { path = { "spec/integration/fixtures/rules" }, budget = "200ms", watchdog = "5s",
              state_dir = t.dir .. "/state-" .. t.name },
    admin = "127.0.0.1:" .. t.admin_port,
    collector = { listen = "127.0.0.1:" .. t.port, topic = t.input .. ".collector",
                  allowed_origins = { ORIGIN } },
    shutdown_timeout = "3s",
    pipeline = {
      { lua = "storespec.direct", params = t.params },
      { name = "store", store = { key = "userId", value = "recommendationIds",
        max_keys = t.max_keys or 1000, ttl = "30m", redis = t.redis,
        catalog = "examples/catalog.json" } },
    },
  }
end

local function rec(visitor, recs, tag)
  return { key = visitor, value = { visitor = visitor, recs = recs, tag = tag or "x" } }
end

local function get(port, id, headers)
  local code, body, hdrs = H.http(port, "GET", "/recommendations/" .. id,
                                  { headers = headers or { "Origin: " .. ORIGIN } })
  local ok, doc = pcall(cjson.decode, body)
  return code, ok and doc or body, hdrs
end

local function ids(doc)
  local out = {}
  for _, p in ipairs(doc.products or {}) do out[#out + 1] = p.id end
  return out
end

-- Waits until visitor's products are want (a list of GIDs).
local function wait_products(port, visitor, want, timeout)
  local last
  local ok = H.wait_for(function()
    local code, doc = get(port, visitor)
    last = { code, doc }
    return code == 200 and table.concat(ids(doc), ",") == table.concat(want, ",")
  end, timeout or 20, 0.1)
  assert(ok, "expected " .. visitor .. " -> " .. table.concat(want, ",") .. ", last answer "
    .. tostring(last[1]) .. " " .. (type(last[2]) == "table" and cjson.encode(last[2]) or tostring(last[2])))
end

-- A redis-server on a free port, without persistence.
local function start_redis(dir, port)
  assert(H.sh("command -v redis-server"):find("redis%-server"),
    "redis-server is not installed: scripts/deps.sh installs it")
  local p = H.spawn(dir, "redis-" .. port, string.format(
    "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no", port))
  local ok = H.wait_for(function()
    return H.sh(string.format("redis-cli -p %d PING 2>/dev/null", port)):find("PONG")
  end, 10, 0.1)
  assert(ok, "redis-server did not start: " .. p:stderr() .. p:stdout())
  return p
end

describe("store sink in process", function()
  local dir, brokers, broker, w, port, admin, input

  setup(function()
    dir = H.mktemp()
    brokers, broker = H.kafka(dir)
    port, admin = H.free_port(), H.free_port()
    input = H.unique("store-in")
    w = H.start_sluice(dir, "w", config({ brokers = brokers, group = H.unique("g"), input = input,
      dir = dir, name = "w", port = port, admin_port = admin, max_keys = 3 }), { admin_port = admin })
  end)

  teardown(function()
    if w then w:stop(5) end
    if broker then broker:stop() end
    H.rmrf(dir)
  end)

  it("answers the latest recommendations with the catalog's details, CORS and no-store", function()
    H.produce(brokers, input, { rec(V1, { G.figure, "gid://shopify/Product/unknown", G.aircon }) })
    wait_products(port, V1, { G.figure, G.aircon })
    H.produce(brokers, input, { rec(V1, { G.anthology, G.freshener }) })
    wait_products(port, V1, { G.anthology, G.freshener })
    local code, doc, hdrs = get(port, V1)
    assert.are.equal(200, code)
    assert.are.equal(V1, doc.visitorId)
    assert.is_true(math.abs(doc.updatedAt - H.now_ms()) < 60000, "updatedAt is a recent ms time")
    assert.are.same({ id = G.anthology, handle = "anthology", title = "Anthology",
      category = "Books", price = "22.99", image = "images/books.svg" }, doc.products[1])
    assert.are.equal("no-store", hdrs["cache-control"])
    assert.are.equal(ORIGIN, hdrs["access-control-allow-origin"])
    assert.are.equal("true", hdrs["access-control-allow-credentials"])
    assert.truthy(hdrs["content-type"]:find("application/json", 1, true))
    code, doc = get(port, V1:upper())
    assert.are.equal(200, code, "an upper-case duid reads the same visitor")
    assert.are.equal(V1, doc.visitorId)
  end)

  it("answers 404 for an unknown visitor, 400 for an id that is no duid, and preflights", function()
    local before = H.metric(H.metrics(admin), 'sluice_collector_requests_total{result="no_recommendations"}')
    local code, _, hdrs = get(port, "00000000-0000-4000-8000-000000000000")
    assert.are.equal(404, code)
    assert.are.equal("no-store", hdrs["cache-control"])
    assert.are.equal(ORIGIN, hdrs["access-control-allow-origin"])
    for _, bad in ipairs({ "42", "not-a-uuid", V1 .. "0", "4f1195b8x6b68-4cd6-a7eb-925bd120e8ad",
                           "..%2F..%2Fetc%2Fpasswd" }) do
      code = get(port, bad)
      assert.are.equal(400, code, bad .. " is no visitor id")
    end
    code, _, hdrs = H.http(port, "OPTIONS", "/recommendations/" .. V1,
      { headers = { "Origin: " .. ORIGIN, "Access-Control-Request-Method: GET" } })
    assert.are.equal(200, code)
    assert.truthy(hdrs["access-control-allow-methods"]:find("GET", 1, true))
    code = get(port, V1, { "Origin: http://evil.example" })
    assert.are.equal(403, code, "an origin not allowed is refused")
    local m = H.metrics(admin)
    assert.is_true(H.metric(m, 'sluice_collector_requests_total{result="recommendations"}') >= 3)
    assert.are.equal(5, H.metric(m, 'sluice_collector_requests_total{result="bad_visitor"}'))
    assert.are.equal(before + 1, H.metric(m, 'sluice_collector_requests_total{result="no_recommendations"}'))
  end)

  it("keeps at most max_keys visitors, evicting the least recently updated", function()
    local vs = {}
    for i = 1, 4 do vs[i] = string.format("aaaaaaaa-0000-4000-8000-%012d", i) end
    for i = 1, 4 do
      H.produce(brokers, input, { rec(vs[i], { G.figure }) })
      wait_products(port, vs[i], { G.figure })
    end
    local code = get(port, vs[1])
    assert.are.equal(404, code, "the oldest of four went at max_keys = 3")
    for i = 2, 4 do assert.are.equal(200, (get(port, vs[i]))) end
    local m = H.metrics(admin)
    assert.are.equal(3, H.metric(m, "sluice_store_keys"))
    assert.is_true(H.metric(m, "sluice_store_evictions_total") >= 2)
  end)

  it("filters a context without a visitor and dead-letters a value that is not a list", function()
    H.produce(brokers, input, { { key = "k", value = { recs = { G.figure } } },
                                { key = V2, value = { visitor = V2, recs = "nope" } } })
    local dl = H.wait_records(brokers, input .. ".dl", 1, 20)
    assert.truthy(#dl >= 1 and dl[1].value:find("expected a list of product GIDs", 1, true))
    assert.are.equal(404, (get(port, V2)))
    assert.is_true(w:alive())
  end)
end)

describe("store sink on Redis", function()
  local dir, brokers, broker, redis, rport, ws, ports, admins, input, group

  local function start_worker(i, params)
    ports[i], admins[i] = ports[i] or H.free_port(), admins[i] or H.free_port()
    ws[i] = H.start_sluice(dir, "w" .. i, config({ brokers = brokers, group = group, input = input,
      dir = dir, name = "w" .. i, port = ports[i], admin_port = admins[i], params = params,
      redis = "redis://127.0.0.1:" .. rport .. "/0" }), { admin_port = admins[i] })
  end

  setup(function()
    dir = H.mktemp()
    brokers, broker = H.kafka(dir)
    rport = H.free_port()
    redis = start_redis(dir, rport)
    input = H.unique("store-redis")
    group = H.unique("g")
    ws, ports, admins = {}, {}, {}
  end)

  teardown(function()
    for _, w in pairs(ws) do w:stop(5) end
    if redis then redis:stop(2) end
    if broker then broker:stop() end
    H.rmrf(dir)
  end)

  it("two workers of one group: every visitor is readable from both", function()
    start_worker(1)
    start_worker(2, nil)
    local visitors, batch = {}, {}
    for i = 1, 12 do
      visitors[i] = string.format("bbbbbbbb-0000-4000-8000-%012d", i)
      batch[#batch + 1] = rec(visitors[i], { G.aircon, G.freshener })
    end
    H.produce(brokers, input, batch)
    for i = 1, 12 do
      wait_products(ports[1], visitors[i], { G.aircon, G.freshener })
      wait_products(ports[2], visitors[i], { G.aircon, G.freshener })
    end
    local written = 0
    for i = 1, 2 do
      written = written + (H.metric(H.metrics(admins[i]),
        'sluice_store_writes_total{result="written"}') or 0)
    end
    assert.are.equal(12, written, "each record written once, by the worker owning its partition")
    local ttl = tonumber(H.sh(string.format("redis-cli -p %d PTTL 'sluice:recs:%s'", rport,
      visitors[1])))
    assert.is_true(ttl > 29 * 60000 and ttl <= 30 * 60000, "entries expire after ttl: " .. ttl)
  end)

  it("a replayed older record never replaces a newer one", function()
    H.produce(brokers, input, { rec(V1, { G.figure }, "old") })
    wait_products(ports[1], V1, { G.figure })
    H.produce(brokers, input, { rec(V1, { G.anthology }, "new") })
    wait_products(ports[2], V1, { G.anthology })
    -- A third worker in a fresh group replays the topic from the start,
    -- taking only the old record.
    local p3, a3 = H.free_port(), H.free_port()
    local w3 = H.start_sluice(dir, "w3", config({ brokers = brokers, group = H.unique("replay"),
      input = input, dir = dir, name = "w3", port = p3, admin_port = a3,
      params = { only = "old" }, redis = "redis://127.0.0.1:" .. rport }), { admin_port = a3 })
    local stale = H.wait_for(function()
      return (H.metric(H.metrics(a3), 'sluice_store_writes_total{result="stale"}') or 0) >= 1
    end, 20, 0.2)
    w3:stop(5)
    assert.truthy(stale, "the replayed record was found stale")
    local code, doc = get(ports[1], V1)
    assert.are.equal(200, code)
    assert.are.same({ G.anthology }, ids(doc))
  end)

  it("Redis down: 503 and the sink waits; Redis back: the records flow", function()
    redis:signal("KILL")
    H.wait_for(function() return not redis:alive() end, 5, 0.1)
    local code, hdrs
    H.wait_for(function()
      local _
      code, _, hdrs = get(ports[1], V1)
      return code == 503
    end, 10, 0.2)
    assert.are.equal(503, code, "the read API answers 503 while Redis is down")
    assert.are.equal(ORIGIN, hdrs and hdrs["access-control-allow-origin"])
    H.produce(brokers, input, { rec(V2, { G.freshener, G.figure }) })
    H.sleep(2)
    for i = 1, 2 do assert.is_true(ws[i]:alive(), "worker " .. i .. " survives Redis going") end
    local pending = 0
    for i = 1, 2 do
      local m = H.metrics(admins[i])
      assert.are.equal(0, H.metric(m, "sluice_store_redis_up"))
      pending = pending + H.metric(m, "sluice_store_pending_writes")
    end
    assert.are.equal(1, pending, "the record waits for Redis")
    local m1 = H.metrics(admins[1])
    assert.is_true(H.metric(m1, 'sluice_collector_requests_total{result="store_unavailable"}') >= 1)
    redis = start_redis(dir, rport)   -- empty: no persistence
    wait_products(ports[1], V2, { G.freshener, G.figure }, 30)
    wait_products(ports[2], V2, { G.freshener, G.figure }, 10)
    assert.are.equal(404, (get(ports[1], V1)), "what the old Redis held is gone")
  end)
end)
