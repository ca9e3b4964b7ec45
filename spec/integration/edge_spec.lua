-- edge_spec.lua -- the listeners facing the network (collector and admin)
-- under hostile input: what the collector accepts the pipeline can decode.
--
-- Drives the built binary over HTTP with curl (and python3 for many sockets at
-- once) and reads what it produced with kcat. SLUICE_BIN names the binary;
-- SLUICE_TEST_KAFKA is "embedded" (default: a `sluice broker` process) or the
-- address of a real Kafka broker.

local cjson = require "cjson"
local S = dofile("spec/integration/helpers.lua")

local ORIGIN = S.STORE_URL
local TP2 = "/com.snowplowanalytics.snowplow/tp2"
local SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"

local function post_headers()
  return { "Origin: " .. ORIGIN, "Content-Type: application/json; charset=UTF-8" }
end

-- A tp2 body of one product page view (event id `id`) whose event carries
-- `extra` as a member written raw (e.g. '"x":1e999').
local function view_body(id, extra)
  local ev = cjson.decode(S.page_view(id).value).message.data[1]
  local body = cjson.encode({ schema = SCHEMA, data = { ev } })
  local raw = body:gsub('"eid":', extra .. ',"eid":', 1)
  return raw, ev.eid
end

local stop_all = S.stop_all

local function count(text, reason)
  return S.metric(text, 'sluice_collector_requests_total{result="' .. reason .. '"}') or 0
end

describe("collector and pipeline agree on JSON numbers", function()
  local dir, broker, brokers, sluice, port, admin_port, input, output

  lazy_setup(function()
    dir = S.mktemp()
    brokers, broker = S.kafka(dir, "broker")
    input, output = S.unique("edge-in"), S.unique("edge-out")
    port, admin_port = S.free_port(), S.free_port()
    local cfg = S.pipeline_config({ brokers = brokers, group = S.unique("edge"), input = input,
      dead_letter = S.unique("edge-dl"), output = output, admin_port = admin_port })
    cfg.collector = { listen = "127.0.0.1:" .. port, topic = input, allowed_origins = { ORIGIN } }
    sluice = S.start_sluice(dir, "sluice", cfg, { admin_port = admin_port })
  end)

  lazy_teardown(function() stop_all(sluice, broker, dir) end)

  it("refuses numbers beyond a double with 400 bad_json, counted, and produces nothing", function()
    local before = count(S.metrics(admin_port), "bad_json")
    for i, num in ipairs({ "1e999", "-1e400", "1.2e329" }) do
      local body = view_body(100 + i, '"x":' .. num)
      local code, text = S.http(port, "POST", TP2, { headers = post_headers(), body = body })
      assert.are.equal(400, code, num .. " must be refused, not lost after a 200")
      assert.are.equal("bad_json\n", text)
    end
    assert.are.equal(before + 3, count(S.metrics(admin_port), "bad_json"))
    assert.are.equal(0, #S.records(brokers, input), "nothing produced")
  end)

  it("accepts numbers a double holds and the pipeline emits the view", function()
    local filtered = 'sluice_filtered_total{step="extract",reason="not_json_object"}'
    local before = S.metric(S.metrics(admin_port), filtered) or 0
    local body, eid = view_body(200, '"x":1.7e308,"y":-1e-400,"z":[0.5e-3]')
    local code = S.http(port, "POST", TP2, { headers = post_headers(), body = body })
    assert.are.equal(200, code)
    local recs = S.wait_records(brokers, output, 1)
    assert.are.equal(1, #recs, "the view reached the output topic")
    assert.are.equal(eid, recs[1].json.eventId)
    assert.are.equal(before, S.metric(S.metrics(admin_port), filtered) or 0,
      "nothing filtered as not_json_object")
  end)
end)

describe("allowed origins", function()
  it("match as a browser sends them, whatever case, default port or trailing slash", function()
    local dir = S.mktemp()
    local brokers, broker = S.kafka(dir, "broker")
    local port, admin_port = S.free_port(), S.free_port()
    local topic = S.unique("edge-origins")
    local sluice = S.start_sluice(dir, "sluice", {
      kafka = { brokers = brokers },
      collector = { listen = "127.0.0.1:" .. port, topic = topic,
        allowed_origins = { "HTTP://127.0.0.1:8080/", "https://Shop.Example:443" } },
      admin = "127.0.0.1:" .. admin_port,
    }, { wait_assigned = false, admin_port = admin_port })
    local results = {}
    for _, origin in ipairs({ "http://127.0.0.1:8080", "https://shop.example" }) do
      local code, _, h = S.http(port, "POST", TP2, { headers = { "Origin: " .. origin,
        "Content-Type: application/json" }, body = view_body(300, '"x":1') })
      results[#results + 1] = { code, h["access-control-allow-origin"] }
    end
    stop_all(sluice, broker, dir)
    assert.are.same({ { 200, "http://127.0.0.1:8080" }, { 200, "https://shop.example" } }, results)
  end)

  it("refuse an entry that is not an origin, naming it and its key path", function()
    local dir = S.mktemp()
    local cfg = S.write_config(dir .. "/bad.lua", { kafka = { brokers = "embedded" },
      collector = { allowed_origins = { "http://127.0.0.1:8080", "http://shop.example/products" } } })
    local rc, _, err = S.run(S.q(S.BIN) .. " check -c " .. S.q(cfg))
    S.rmrf(dir)
    assert.are.equal(1, rc)
    assert.matches('collector.allowed_origins[2]: expected an origin like', err, 1, true)
    assert.matches('got "http://shop.example/products"', err, 1, true)
  end)

  it("the shipped config does not put the collector on the store's address", function()
    local env = {}
    local chunk = assert(loadfile("config/recommendations.lua"))
    setfenv(chunk, setmetatable({ env = function(name, def) return env[name] or def end },
      { __index = _G }))
    local cfg = chunk()
    local store = cfg.pipeline[1].params.store_url:match("^https?://([^/]+)")
    assert.are_not.equal(store, cfg.collector.listen)
    assert.are.same({ "http://127.0.0.1:8080" }, cfg.collector.allowed_origins)
  end)
end)

-- ==================== Raw HTTP (fixtures/edge_client.py) ====================

local CLIENT = "python3 spec/integration/fixtures/edge_client.py"

-- Sends a raw request head (and body) to port; returns {status, headers,
-- body, ms, interim, interim_ms, closed} (status nil: no answer in time).
local function raw(port, req)
  local dir = S.mktemp()
  S.write(dir .. "/req.json", cjson.encode(req))
  local out = S.sh(string.format("%s request %d <%s", CLIENT, port, S.q(dir .. "/req.json")))
  S.rmrf(dir)
  return assert(cjson.decode(out), "edge_client.py printed nothing")
end

local function client(args)
  local out = S.sh(CLIENT .. " " .. args)
  return assert(cjson.decode(out), "edge_client.py printed nothing")
end

-- CPU seconds (user + system) the process has used so far.
local function cpu_s(pid)
  local stat = S.read("/proc/" .. pid .. "/stat") or ""
  local fields = {}
  for f in stat:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = f end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime in ticks
end

local function head(method, path, headers)
  return method .. " " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    .. table.concat(headers or {}, "\r\n") .. (headers and #headers > 0 and "\r\n" or "") .. "\r\n"
end

-- A collector-only job (max_body 8192) with an admin listener; env: extra
-- words before the command (ulimit). Returns the process, port, admin port.
local function start_collector(dir, name, brokers, extra_shell)
  local port, admin_port = S.free_port(), S.free_port()
  local cfg = S.write_config(dir .. "/" .. name .. ".lua", {
    kafka = { brokers = brokers },
    collector = { listen = "127.0.0.1:" .. port, topic = S.unique("edge"),
      allowed_origins = { ORIGIN }, max_body = 8192 },
    admin = "127.0.0.1:" .. admin_port,
  })
  local p = S.spawn(dir, name, string.format("sh -c %s", S.q((extra_shell or "") .. "exec "
    .. S.q(S.BIN) .. " run -c " .. S.q(cfg))))
  local ok = S.wait_for(function() return S.http(admin_port, "GET", "/health") == 200 end, 15)
  if not ok then
    local err = p:stderr()
    p:stop(2)
    error("sluice run did not answer /health; stderr:\n" .. err)
  end
  return p, port, admin_port
end

local function has_cors(r)
  return r.headers and r.headers["access-control-allow-origin"] == ORIGIN
    and r.headers["access-control-allow-credentials"] == "true"
end

describe("every answer of the collector is its own: counted, with CORS", function()
  local dir, broker, sluice, port, admin_port

  lazy_setup(function()
    dir = S.mktemp()
    local brokers
    brokers, broker = S.kafka(dir, "broker")
    sluice, port, admin_port = start_collector(dir, "sluice", brokers)
  end)

  lazy_teardown(function() stop_all(sluice, broker, dir) end)

  local origin = "Origin: " .. ORIGIN
  local json = "Content-Type: application/json"

  it("TRACE, CONNECT and an unknown method get 405 with CORS, counted", function()
    local before = count(S.metrics(admin_port), "method_not_allowed")
    for _, m in ipairs({ "TRACE", "CONNECT", "PROPFIND" }) do
      local r = raw(port, { head = head(m, TP2, { origin }) })
      assert.are.equal(405, r.status, m)
      assert.is_true(has_cors(r), "CORS headers on the 405 to " .. m)
      assert.are.equal("GET, HEAD, POST, OPTIONS", r.headers.allow)
    end
    assert.are.equal(before + 3, count(S.metrics(admin_port), "method_not_allowed"))
  end)

  it("a declared length above max_body gets 413 at once, with no body sent", function()
    local before = count(S.metrics(admin_port), "too_large")
    local r = raw(port, { head = head("POST", TP2, { origin, json, "Content-Length: 100000" }) })
    assert.are.equal(413, r.status, "413 before any body byte")
    assert.is_true(r.ms < 1000, "at once, not after a timeout: " .. r.ms .. " ms")
    assert.is_true(has_cors(r))
    assert.is_true(r.closed, "the connection is closed: the body is not read")
    assert.are.equal(before + 1, count(S.metrics(admin_port), "too_large"))
  end)

  it("a chunked body above max_body gets 413 with CORS; a small chunked body is taken", function()
    local before = count(S.metrics(admin_port), "too_large")
    local chunk = string.rep("a", 4096)
    local big = string.rep(string.format("%x\r\n%s\r\n", #chunk, chunk), 10) .. "0\r\n\r\n"
    local r = raw(port, { head = head("POST", TP2, { origin, json, "Transfer-Encoding: chunked" }),
      body = big })
    assert.are.equal(413, r.status)
    assert.is_true(has_cors(r))
    assert.are.equal(before + 1, count(S.metrics(admin_port), "too_large"))
    local body = view_body(400, '"x":1')
    local half = math.floor(#body / 2)
    local small = string.format("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", half, body:sub(1, half),
      #body - half, body:sub(half + 1))
    r = raw(port, { head = head("POST", TP2, { origin, json, "Transfer-Encoding: chunked" }),
      body = small })
    assert.are.equal(200, r.status, "a chunked tracker body is decoded and taken")
  end)

  it("a 100 KB header gets 431 with CORS, counted", function()
    local before = count(S.metrics(admin_port), "header_too_large")
    local r = raw(port, { head = head("POST", TP2, { origin, json, "X-Big: " .. string.rep("b", 100000),
      "Content-Length: 2" }), body = "{}" })
    assert.are.equal(431, r.status)
    assert.is_true(has_cors(r))
    assert.are.equal(before + 1, count(S.metrics(admin_port), "header_too_large"))
  end)

  it("Expect: 100-continue gets 100 at once, then the answer; too large gets 413 at once", function()
    local body = view_body(401, '"x":1')
    local r = raw(port, { head = head("POST", TP2, { origin, json, "Expect: 100-continue",
      "Content-Length: " .. #body }), body = body, expect = true })
    assert.are.equal(100, r.interim, "a 100 Continue")
    assert.is_true(r.interim_ms < 1000, "100 Continue at once: " .. tostring(r.interim_ms) .. " ms")
    assert.are.equal(200, r.status)
    r = raw(port, { head = head("POST", TP2, { origin, json, "Expect: 100-continue",
      "Content-Length: 1000000" }), expect = true })
    assert.is_nil(r.interim)
    assert.are.equal(413, r.status)
    assert.is_true(r.ms < 1000 and has_cors(r))
    r = raw(port, { head = head("POST", TP2, { origin, json, "Expect: something-else",
      "Content-Length: 2" }), body = "{}" })
    assert.are.equal(417, r.status)
    assert.is_true(has_cors(r))
    assert.are.equal(1, count(S.metrics(admin_port), "expectation_failed"))
  end)

  it("a request line that is no HTTP gets 400, counted", function()
    local before = count(S.metrics(admin_port), "bad_request")
    local r = raw(port, { head = "GARBAGE\r\n\r\n" })
    assert.are.equal(400, r.status)
    assert.are.equal(before + 1, count(S.metrics(admin_port), "bad_request"))
  end)
end)

describe("descriptors and slow clients", function()
  local dir, broker, brokers

  lazy_setup(function()
    dir = S.mktemp()
    brokers, broker = S.kafka(dir, "broker")
  end)

  lazy_teardown(function() stop_all(nil, broker, dir) end)

  it("with ulimit -n 256, 300 idle connections: no spin, no log flood, /health and POSTs answered", function()
    local sluice, port, admin_port = start_collector(dir, "fd", brokers, "ulimit -n 256; ")
    local log0 = #sluice:stderr()
    local cpu0 = cpu_s(sluice.pid)
    local bg = S.spawn(dir, "idle", string.format("%s idle %d 300 6", CLIENT, port))
    S.sleep(2)
    local t0 = S.now_ms()
    local health = S.http(admin_port, "GET", "/health")
    local health_ms = S.now_ms() - t0
    local post = S.http(port, "POST", TP2, { headers = post_headers(), body = view_body(500, '"x":1') })
    bg:wait(20)
    local cpu = cpu_s(sluice.pid) - cpu0
    local res = cjson.decode(bg:stdout())
    local metrics = S.metrics(admin_port)
    local log = sluice:stderr():sub(log0 + 1)
    local _, nlines = log:gsub("\n", "")
    stop_all(sluice)
    print(string.format("# 300 idle connections under ulimit -n 256: %s; sluice CPU %.2f s in ~8 s, "
      .. "/health in %d ms, %d log lines", bg:stdout():gsub("\n", ""), cpu, health_ms, nlines))
    assert.are.equal(300, res.connected, "every connection accepted or answered")
    assert.are.equal(200, health, "/health answers while the collector is full")
    assert.is_true(health_ms < 1000, "/health at once: " .. health_ms .. " ms")
    assert.are.equal(200, post, "a tracker still gets through (an idle connection makes room)")
    assert.is_true(cpu < 1.5, "no spinning: " .. cpu .. " CPU s")
    assert.is_true(nlines < 20, "no log flood: " .. nlines .. " lines")
    local limit = S.metric(metrics, 'sluice_collector_connections{state="limit"}')
    assert.is_true(limit < 256, "the limit is below the descriptor limit: " .. tostring(limit))
    assert.is_true(S.metric(metrics, 'sluice_collector_connections{state="open"}') <= limit)
    assert.is_true(S.metric(metrics, 'sluice_collector_connections_total{event="evicted_idle"}') > 0,
      "idle connections were closed to make room, counted")
  end)

  it("closes 500 connections sending a byte a second once the head deadline (10 s) passed", function()
    local sluice, port, admin_port = start_collector(dir, "slow", brokers)
    local res = client(string.format("slowloris %d 500 14", port))
    local timeouts = count(S.metrics(admin_port), "timeout")
    stop_all(sluice)
    print(string.format("# slowloris, 500 connections at 1 byte/s: %d closed by the server, first at %s s, "
      .. "last at %s s", res.closed, tostring(res.first_close_s), tostring(res.last_close_s)))
    assert.are.equal(0, res.open, "every slow connection closed")
    assert.is_true(res.first_close_s >= 9, "not before the bound")
    assert.is_true(res.last_close_s < 13, "all within the bound and a margin")
    assert.are.equal(500, timeouts, "each answered 408 and counted as timeout")
  end)
end)

describe("admin listener bounds", function()
  local dir, broker, sluice, admin_port

  lazy_setup(function()
    dir = S.mktemp()
    local brokers, port
    brokers, broker = S.kafka(dir, "broker")
    sluice, port, admin_port = start_collector(dir, "sluice", brokers)
    assert(port)
  end)

  lazy_teardown(function() stop_all(sluice, broker, dir) end)

  local function rss_kb()
    local status = S.read("/proc/" .. sluice.pid .. "/status") or ""
    return tonumber(status:match("VmRSS:%s*(%d+)"))
  end

  it("refuses a POST to /metrics at once, before its body", function()
    local r = raw(admin_port, { head = head("POST", "/metrics", { "Content-Length: 300000000" }) })
    assert.are.equal(405, r.status)
    assert.is_true(r.ms < 1000, "at once: " .. r.ms .. " ms")
    assert.are.equal("GET, HEAD", r.headers.allow)
    r = raw(admin_port, { head = head("PUT", "/health", {}) })
    assert.are.equal(405, r.status)
  end)

  it("keeps memory bounded: a 64 MB POST body and a 64 MB header line", function()
    local rss0 = rss_kb()
    local body = client(string.format("big %d body 64 /metrics", admin_port))
    local hdr = client(string.format("big %d header 64 /metrics", admin_port))
    S.sleep(0.5)
    local grown = rss_kb() - rss0
    print(string.format("# admin: 64 MB POST -> %s after %d MB sent, 64 MB header -> %s after %d MB sent; "
      .. "RSS %+d KB", tostring(body.status), body.sent_mb, tostring(hdr.status), hdr.sent_mb, grown))
    assert.are.equal(405, body.status)
    assert.are.equal(431, hdr.status)
    -- The sanitizer's allocator keeps what it freed (make asan: a 16 MB
    -- quarantine, size classes not given back): a looser bound, still far
    -- below the 128 MB sent.
    local bound = os.getenv("SLUICE_TEST_ASAN") and 32768 or 8192
    assert.is_true(grown < bound, "RSS grew by " .. grown .. " KB (bound " .. bound .. " KB)")
  end)

  it("still serves GET and HEAD", function()
    assert.are.equal(200, S.http(admin_port, "GET", "/health"))
    assert.are.equal(200, raw(admin_port, { head = head("HEAD", "/health", {}) }).status)
    assert.is_truthy(S.metrics(admin_port):find("sluice_collector_requests_total", 1, true))
    assert.are.equal(404, S.http(admin_port, "GET", "/nope"))
  end)
end)
