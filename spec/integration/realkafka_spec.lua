-- realkafka_spec.lua -- failures of a three-broker Apache Kafka cluster.
--
-- Runs only when SLUICE_TEST_KAFKA3 is the bootstrap address of a cluster
-- started by `scripts/kafka.sh start --brokers 3` (scripts/test.sh starts one
-- and runs this file on its own); `busted --run=integration` without it
-- collects nothing here. The specs kill nodes of that cluster with
-- `scripts/kafka.sh kill-broker N` and bring them back with `restart-broker N`.
--
-- - A pipeline loses nothing when one broker of three dies mid-stream
--   (replication factor 3, the sinks produce with acks=all and idempotence).
-- - The collector answers 503 while no broker is reachable, 200 again once
--   they are back, and every request it acknowledged with 200 is in Kafka.

local BROKERS = os.getenv("SLUICE_TEST_KAFKA3")
if not BROKERS or BROKERS == "" then return end

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local TP2 = "/com.snowplowanalytics.snowplow/tp2"
local ORIGIN = H.STORE_URL

assert(#H.split_brokers(BROKERS) == 3, "SLUICE_TEST_KAFKA3 lists three brokers: " .. BROKERS)

local dir
local procs = {}
local killed = {} -- nodes a failed spec left down

lazy_setup(function() dir = H.mktemp() end)

lazy_teardown(function()
  H.rmrf(dir)
end)

after_each(function()
  for _, p in ipairs(procs) do p:stop(2) end
  procs = {}
  local down = {}
  for n in pairs(killed) do down[#down + 1] = n end
  table.sort(down)
  killed = {}
  if #down > 0 then H.restart_kafka_nodes(BROKERS, down) end
end)

local function kill(n)
  H.kill_kafka_node(n)
  killed[n] = true
end

local function restart(nodes)
  H.restart_kafka_nodes(BROKERS, nodes)
  for _, n in ipairs(nodes) do killed[n] = nil end
end

-- eventId -> number of records of topic carrying it, total.
local function counts(topic)
  local c, total = {}, 0
  for _, r in ipairs(H.records(BROKERS, topic)) do
    local eid = r.json and r.json.eventId
    if eid then c[eid] = (c[eid] or 0) + 1; total = total + 1 end
  end
  return c, total
end

describe("three Kafka brokers (" .. BROKERS .. ")", function()
  it("a broker killed mid-stream: every record reaches the sink (RF 3, acks=all)", function()
    local n = {
      brokers = BROKERS, input = H.unique("rk-in"), output = H.unique("rk-out"),
      dead_letter = H.unique("rk-dlq"), group = H.unique("rk-g"), admin_port = H.free_port(),
      state_dir = dir .. "/" .. H.unique("state"), shutdown_timeout = "5s",
    }
    for _, t in ipairs({ n.input, n.output, n.dead_letter }) do H.create_replicated_topic(BROKERS, t) end
    local cfg = H.pipeline_config(n)
    local w = H.start_sluice(dir, "rk-worker", cfg, { admin_port = n.admin_port, timeout = 60 })
    procs[#procs + 1] = w

    local input = {}
    for i = 1, 3000 do input[i] = H.page_view(700000 + i) end
    local producer = H.produce_slowly(dir, "rk-producer", BROKERS, n.input, input, 50, 0.1)
    procs[#procs + 1] = producer
    assert.is_truthy(H.wait_for(function()
      local _, total = counts(n.output)
      return total >= 500
    end, 60, 0.2), "output appeared before the kill; stderr:\n" .. w:stderr())

    kill(2)
    local _, at_kill = counts(n.output)
    print(string.format("# broker 2 killed with %d of %d records on the sink, producer %s", at_kill,
      #input, producer:alive() and "still producing" or "done"))
    assert.is_true(at_kill < #input, "the kill happened mid-stream")
    -- the stream goes on with two brokers of three for a while
    local _, degraded = counts(n.output)
    H.wait_for(function()
      _, degraded = counts(n.output)
      return degraded >= at_kill + 500
    end, 30, 0.5)
    print(string.format("# %d records on the sink with broker 2 down", degraded))
    assert.is_true(w:alive(), "the worker survives the broker's death; stderr:\n" .. w:stderr())
    restart({ 2 })

    assert.are.equal(0, producer:wait(120), "kcat produced every record: " .. producer:stderr())
    local c, total
    H.wait_for(function()
      c, total = counts(n.output)
      for _, v in ipairs(input) do if not c[v.eid] then return false end end
      return true
    end, 120, 0.5)
    local missing = {}
    for _, v in ipairs(input) do if not c[v.eid] then missing[#missing + 1] = v.eid end end
    assert.are.equal(0, #missing, string.format("every record reaches the sink; %d missing, e.g. %s; stderr:\n%s",
      #missing, tostring(missing[1]), w:stderr()))
    print(string.format("# %d sink records for %d inputs (%d duplicates)", total, #input, total - #input))
    assert.are.equal(0, #H.records(BROKERS, n.dead_letter), "no dead letter")
    assert.is_true(w:alive(), "the worker still runs")
  end)

  it("the collector answers 503 with every broker down and 200 once they are back", function()
    local topic = H.unique("rk-collector")
    H.create_replicated_topic(BROKERS, topic)
    local port = H.free_port()
    local path = H.write_config(dir .. "/rk-collector.lua", {
      kafka = { brokers = BROKERS,
        properties = { ["socket.timeout.ms"] = "3000", ["reconnect.backoff.max.ms"] = "500" } },
      collector = { listen = "127.0.0.1:" .. port, topic = topic, allowed_origins = { ORIGIN } },
    })
    local c = H.spawn(dir, "rk-collector", string.format("%s run -c %s", H.q(H.BIN), H.q(path)))
    procs[#procs + 1] = c
    assert.is_truthy(H.wait_for(function() return H.http(port, "GET", "/health") == 200 end, 15),
      "the collector answers /health; stderr:\n" .. c:stderr())

    -- the captured tracker body, with an event id of its own per request
    local body = assert(H.read(H.FIX .. "tp2-post-product.body.raw"))
    local captured_eid = cjson.decode(body).data[1].eid
    local eid_pattern = captured_eid:gsub("%p", "%%%0")
    assert.is_truthy(body:find(eid_pattern))
    local acked, seq = {}, 0
    local function post()
      seq = seq + 1
      local eid = string.format("00000000-0000-4000-9000-%012d", seq)
      local code = H.http(port, "POST", TP2, { body = (body:gsub(eid_pattern, eid)),
        headers = { "Origin: " .. ORIGIN, "Content-Type: application/json; charset=UTF-8" } })
      if code == 200 then acked[#acked + 1] = eid end
      return code
    end

    for _ = 1, 5 do assert.are.equal(200, post(), "200 with the cluster up") end
    assert.are.equal(5, #acked)

    local t0 = H.now_ms()
    for node = 1, 3 do kill(node) end
    local code
    H.wait_for(function()
      code = post()
      return code == 503
    end, 30, 0.5)
    local took = H.now_ms() - t0
    print(string.format("# 503 %d ms after the three brokers were killed (%d requests acked)", took, #acked))
    assert.are.equal(503, code, "503 while no broker is reachable, so that the tracker retries")
    local t1 = H.now_ms()
    assert.are.equal(503, post())
    assert.is_true(H.now_ms() - t1 < 1000, "once the cluster is known down, 503 at once")
    assert.is_true(c:alive(), "the collector survives the outage; stderr:\n" .. c:stderr())

    restart({ 1, 2, 3 })
    t0 = H.now_ms()
    H.wait_for(function()
      code = post()
      return code == 200
    end, 60, 0.5)
    print(string.format("# 200 again %d ms after the cluster was back", H.now_ms() - t0))
    assert.are.equal(200, code, "200 again once the brokers are back; stderr:\n" .. c:stderr())
    for _ = 1, 5 do assert.are.equal(200, post()) end

    -- every request acknowledged with 200 is in the topic
    local found
    H.wait_for(function()
      found = {}
      for _, r in ipairs(H.records(BROKERS, topic)) do
        local data = r.json and r.json.message and r.json.message.data
        if data then found[data[1].eid] = true end
      end
      for _, eid in ipairs(acked) do if not found[eid] then return false end end
      return true
    end, 30, 0.5)
    local missing = {}
    for _, eid in ipairs(acked) do if not found[eid] then missing[#missing + 1] = eid end end
    assert.are.equal(0, #missing, string.format("%d of %d acknowledged records missing from Kafka, e.g. %s",
      #missing, #acked, tostring(missing[1])))
  end)
end)
