-- collector_spec.lua -- the collector as a tracker and a Kafka reader see it.
--
-- Drives the built binary over HTTP with curl and reads what it produced with
-- kcat. Replays the real tracker captures of spec/fixtures/snowplow/ (POST
-- single, POST batched, GET), checks CORS, every refusal, and a broker outage.
-- SLUICE_BIN names the binary (default ./sluice); SLUICE_TEST_KAFKA is
-- "embedded" (default: a `sluice broker` process is started) or the address
-- of a real Kafka broker. The outage always uses a private `sluice broker`,
-- stopped with SIGSTOP and resumed with SIGCONT.

local cjson = require "cjson"
local S = dofile("spec/integration/helpers.lua")

local BIN = S.BIN
local FIX = S.FIX
local ORIGIN = "http://127.0.0.1:8080"
local TP2 = "/com.snowplowanalytics.snowplow/tp2"
local UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
  .. "HeadlessChrome/156.0.0.0 Safari/537.36"

-- ==================== Processes, files, HTTP, Kafka (helpers.lua) ====================

local q, read, write, sleep, now_ms, free_port = S.q, S.read, S.write, S.sleep, S.now_ms, S.free_port
local wait_records = S.wait_records

local H = {} -- the last response's headers, lower-case names

-- http(dir, port, method, path, {headers = {"Name: value"}, body = s}) -> code, body
local function http(_, port, method, path, opts)
  local code, body, headers = S.http(port, method, path, opts)
  for k in pairs(H) do H[k] = nil end
  for k, v in pairs(headers) do H[k] = v end
  return code, body
end

local function start_sluice(dir, name, brokers, topic, port, extra)
  write(dir .. "/" .. name .. ".lua", string.format([[
return {
  kafka = {
    brokers = %q,
    properties = { ["socket.timeout.ms"] = "3000", ["reconnect.backoff.max.ms"] = "500" },
  },
  collector = {
    listen = "127.0.0.1:%d",
    topic = %q,
    allowed_origins = { %q },
    max_body = 8192,
    ip = "keep",
  },
  %s
}
]], brokers, port, topic, ORIGIN, extra or ""))
  local proc = S.spawn(dir, name, string.format("%s run -c %s", q(BIN), q(dir .. "/" .. name .. ".lua")))
  for _ = 1, 100 do
    if http(dir, port, "GET", "/health") == 200 then return proc end
    sleep(0.1)
  end
  proc:stop(2)
  error("sluice run did not answer /health; stderr: " .. (read(dir .. "/" .. name .. ".err") or ""))
end

local function fixture(name) return assert(read(FIX .. name), "fixture missing: " .. name) end

local function tracker_post_headers(origin)
  return { "Origin: " .. (origin or ORIGIN), "Content-Type: application/json; charset=UTF-8",
    "User-Agent: " .. UA }
end

local function cors_ok()
  return H["access-control-allow-origin"] == ORIGIN
    and H["access-control-allow-credentials"] == "true" and H["vary"] == "Origin"
end

-- ==================== Specs ====================

describe("collector", function()
  local dir, broker, brokers, sluice, port, admin_port, topic
  local seen, nseen = {}, 0 -- "partition:offset" of the records already checked

  -- The records that appeared since the last call (at least n of them, if
  -- they come in time), in receive order.
  local function new_records(n)
    local recs = wait_records(brokers, topic, nseen + n)
    local fresh = {}
    for _, r in ipairs(recs) do
      local id = r.partition .. ":" .. r.offset
      if not seen[id] then
        seen[id] = true
        nseen = nseen + 1
        fresh[#fresh + 1] = r
      end
    end
    table.sort(fresh, function(a, b) return a.ts < b.ts end)
    return fresh
  end

  local function sorted_eids(recs)
    local out = {}
    for _, r in ipairs(recs) do
      for _, ev in ipairs(r.json.message.data) do out[#out + 1] = ev.eid end
    end
    table.sort(out)
    return out
  end

  lazy_setup(function()
    dir = S.mktemp()
    brokers, broker = S.kafka(dir, "broker")
    topic = "collector-spec-" .. os.time() .. "-" .. math.random(1e6)
    port, admin_port = free_port(), free_port()
    sluice = start_sluice(dir, "sluice", brokers, topic, port,
      string.format("admin = %q,", "127.0.0.1:" .. admin_port))
  end)

  lazy_teardown(function()
    if sluice then sluice:stop() end
    if broker then broker:stop() end
    S.rmrf(dir)
  end)

  it("takes the captured single POST and produces it after the broker ack", function()
    local body = fixture("tp2-post-product.body.raw")
    local t0 = now_ms()
    local code, text = http(dir, port, "POST", TP2, { headers = tracker_post_headers(), body = body })
    local t1 = now_ms()
    assert.are.equal(200, code)
    assert.are.equal("ok\n", text)
    assert.is_true(cors_ok(), "echoed origin, credentials true, Vary: Origin")
    local recs = new_records(1)
    assert.are.equal(1, #recs)
    local r = recs[1]
    assert.are.equal("4f1195b8-6b68-4cd6-a7eb-925bd120e8ad", r.key)
    assert.are.equal('{"message":' .. body .. ',"collector":', r.value:sub(1, #body + 24),
      "the message is the body byte for byte")
    local col = r.json.collector
    assert.are.equal(r.ts, col.receivedAt, "record timestamp = receive time")
    assert.is_true(r.ts >= t0 and r.ts <= t1, "receive time within the request")
    assert.are.equal(ORIGIN, col.origin)
    assert.are.equal(UA, col.userAgent)
    assert.are.equal("127.0.0.1", col.ip)
  end)

  it("takes the captured batch of 3 as one record keyed by the first duid", function()
    local body = fixture("tp2-post-batch3.body.raw")
    local code = http(dir, port, "POST", TP2, { headers = tracker_post_headers(), body = body })
    assert.are.equal(200, code)
    local r = new_records(1)[1]
    local events = cjson.decode(body).data
    assert.are.equal(3, #r.json.message.data)
    assert.are.equal(events[1].duid, r.key)
    assert.are.equal(events[3].eid, r.json.message.data[3].eid)
  end)

  it("takes the captured GET and answers with a GIF", function()
    local qs = fixture("get-i-product.querystring.txt")
    local code, gif = http(dir, port, "GET", "/i?" .. qs,
      { headers = { "Origin: " .. ORIGIN, "User-Agent: " .. UA } })
    assert.are.equal(200, code)
    assert.are.equal("image/gif", H["content-type"])
    assert.are.equal("GIF89a", gif:sub(1, 6))
    assert.is_true(cors_ok())
    local r = new_records(1)[1]
    local m = r.json.message
    assert.are.equal("iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4", m.schema)
    assert.are.equal(1, #m.data)
    local e = m.data[1]
    assert.are.equal("Classic Leather Sneaker \226\128\147 NU Demo Store", e.page)
    assert.are.equal("http://127.0.0.1:8080/products/classic-leather-sneaker", e.url)
    assert.are.equal("1795667685709", e.stm)
    assert.are.equal(qs:match("cx=([^&]*)"), e.cx)
    assert.are.equal("36a64dd0-0746-4b4c-93e4-b284312026b5", r.key)
  end)

  -- Replays a *.requests.jsonl capture with the browser's own headers.
  local function replay(name)
    local eids = {}
    for line in fixture(name):gmatch("[^\n]+") do
      local req = cjson.decode(line)
      local headers = {}
      for i = 1, #req.rawHeaders, 2 do
        local k = req.rawHeaders[i]:lower()
        if k ~= "host" and k ~= "content-length" and k ~= "connection" then
          headers[#headers + 1] = req.rawHeaders[i] .. ": " .. req.rawHeaders[i + 1]
        end
      end
      local code = http(dir, port, req.method, req.url, {
        headers = headers, body = req.method == "POST" and req.body or nil })
      assert.are.equal(200, code, req.method .. " " .. req.url:sub(1, 40))
      assert.is_true(cors_ok(), "CORS headers on " .. req.method)
      if req.method == "OPTIONS" then
        assert.matches("Content-Type", H["access-control-allow-headers"], 1, true)
        assert.matches("POST", H["access-control-allow-methods"], 1, true)
      elseif req.method == "POST" then
        for _, ev in ipairs(cjson.decode(req.body).data) do eids[#eids + 1] = ev.eid end
      else
        eids[#eids + 1] = req.query:match("eid=([^&]+)")
      end
    end
    return eids
  end

  it("replays the POST page-view run: preflight and 5 POSTs, all produced", function()
    local eids = replay("post-pageviews.requests.jsonl")
    local recs = new_records(5)
    assert.are.equal(5, #recs)
    table.sort(eids)
    assert.are.same(eids, sorted_eids(recs))
  end)

  it("replays the GET run: 5 GETs, all produced", function()
    local eids = replay("get-pageviews.requests.jsonl")
    local recs = new_records(5)
    assert.are.equal(5, #recs)
    table.sort(eids)
    assert.are.same(eids, sorted_eids(recs))
  end)

  describe("CORS", function()
    it("answers a preflight from an allowed origin", function()
      local code = http(dir, port, "OPTIONS", TP2, { headers = { "Origin: " .. ORIGIN,
        "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: content-type" } })
      assert.are.equal(200, code)
      assert.is_true(cors_ok())
      assert.are.equal("Content-Type, SP-Anonymous", H["access-control-allow-headers"])
      assert.are.equal("POST, GET, OPTIONS", H["access-control-allow-methods"])
      assert.is_truthy(tonumber(H["access-control-max-age"]))
    end)

    it("refuses another origin with 403 and produces nothing", function()
      local code = http(dir, port, "POST", TP2, {
        headers = tracker_post_headers("https://evil.example"),
        body = fixture("tp2-post-product.body.raw") })
      assert.are.equal(403, code)
      assert.is_nil(H["access-control-allow-origin"])
      code = http(dir, port, "OPTIONS", TP2, { headers = { "Origin: https://evil.example" } })
      assert.are.equal(403, code)
      assert.are.equal(0, #new_records(0))
    end)

    it("accepts a request without Origin and sends no CORS headers", function()
      local code = http(dir, port, "POST", TP2, { headers = { "Content-Type: application/json" },
        body = fixture("tp2-post-product.body.raw") })
      assert.are.equal(200, code)
      assert.is_nil(H["access-control-allow-origin"])
      local r = new_records(1)[1]
      assert.is_nil(r.json.collector.origin)
    end)
  end)

  describe("refuses bad input, with CORS headers and nothing produced", function()
    local body = fixture("tp2-post-product.body.raw")
    local cases = {
      { "a body over max_body", 413, "POST", TP2, tracker_post_headers(), body:rep(11) },
      { "text/plain", 415, "POST", TP2, { "Origin: " .. ORIGIN, "Content-Type: text/plain" }, body },
      { "no Content-Type", 415, "POST", TP2, { "Origin: " .. ORIGIN, "Content-Type:" }, body },
      { "truncated JSON", 400, "POST", TP2, tracker_post_headers(), body:sub(1, -2) },
      { "JSON that is no payload_data", 400, "POST", TP2, tracker_post_headers(),
        '{"schema":"iglu:com.acme/x/jsonschema/1-0-0","data":[{}]}' },
      { "an empty data list", 400, "POST", TP2, tracker_post_headers(),
        '{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[]}' },
      { "a broken escape in a GET", 400, "GET", "/i?e=pv&page=%E2%80", { "Origin: " .. ORIGIN } },
      { "a bad escape in a GET", 400, "GET", "/i?e=%zz", { "Origin: " .. ORIGIN } },
      { "an unknown path", 404, "GET", "/nope", { "Origin: " .. ORIGIN } },
      { "GET on the POST path", 404, "GET", TP2, { "Origin: " .. ORIGIN } },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " -> " .. c[2], function()
        local code = http(dir, port, c[3], c[4], { headers = c[5], body = c[6] })
        assert.are.equal(c[2], code)
        assert.is_true(cors_ok(), "CORS headers on a " .. c[2])
        sleep(0.2)
        assert.are.equal(0, #new_records(0), "nothing produced")
      end)
    end

    it("counts each refusal by reason on /metrics", function()
      local code, text = http(dir, admin_port, "GET", "/metrics")
      assert.are.equal(200, code)
      for reason, n in pairs({ too_large = 1, bad_content_type = 2, bad_json = 1,
        bad_payload = 2, bad_query = 2, forbidden_origin = 2, not_found = 2 }) do
        local got = text:match('sluice_collector_requests_total{result="' .. reason .. '"} (%d+)')
        assert.are.equal(n, tonumber(got), reason)
      end
    end)
  end)
end)

describe("collector with the broker gone", function()
  local dir, broker, brokers, sluice, port
  local topic = "http.shopify-events"

  lazy_setup(function()
    dir = S.mktemp()
    broker, brokers = S.start_broker(dir, "outage-broker")
    port = free_port()
    sluice = start_sluice(dir, "outage-sluice", brokers, topic, port)
  end)

  lazy_teardown(function()
    if broker then broker:signal("CONT") end
    if sluice then sluice:stop() end
    if broker then broker:stop() end
    S.rmrf(dir)
  end)

  local function post()
    return http(dir, port, "POST", TP2, { headers = tracker_post_headers(),
      body = fixture("tp2-post-product.body.raw") })
  end

  it("answers 503 while the broker is away and 200 once it is back", function()
    assert.are.equal(200, post())
    broker:signal("STOP")
    local code
    for _ = 1, 30 do
      code = post()
      if code == 503 then break end
      sleep(0.5)
    end
    assert.are.equal(503, code, "503 so that the tracker retries")
    assert.is_true(cors_ok(), "the 503 carries CORS headers")
    local t0 = now_ms()
    assert.are.equal(503, post())
    assert.is_true(now_ms() - t0 < 1000, "once the broker is known down, 503 at once")
    broker:signal("CONT")
    for _ = 1, 40 do
      code = post()
      if code == 200 then break end
      sleep(0.5)
    end
    assert.are.equal(200, code, "200 again once the broker is back")
    local recs = wait_records(brokers, topic, 2)
    assert.is_true(#recs >= 2, "the acknowledged records are in the topic")
  end)
end)
