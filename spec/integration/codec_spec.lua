-- codec_spec.lua -- one JSON codec: the core and busted's encoder write the
-- same bytes, and the collector reads a tracker payload as the pipeline does.
--
-- `require "sluice"` here is lua/sluice/init.lua, the encoder a busted spec
-- of a rule uses; the core's is reached through the built binary: a rule's
-- sluice.json_encode under `sluice test`, the kafka step's records and the
-- collector's records under `sluice run`. Where they used to disagree (key
-- order; a repeated query name or duid: first in C, last in Lua and in
-- Snowplow's enrich) each has its check.

local sluice = require "sluice"
local snowplow = require "sluice.snowplow"
local H = dofile("spec/integration/helpers.lua")

local TP2 = "/com.snowplowanalytics.snowplow/tp2"

local dir

lazy_setup(function() dir = H.mktemp() end)
lazy_teardown(function() H.rmrf(dir) end)

describe("codec: the core's sluice.json_encode", function()
  it("writes the bytes busted's encoder writes for the same values", function()
    os.execute("mkdir -p " .. H.q(dir .. "/rules/itest"))
    H.write(dir .. "/rules/itest/enc.lua", [[
local sluice = require "sluice"
local M = {}
function M.enc(ctx)
  ctx.text = assert(sluice.json_encode(ctx.input.v))
  return ctx
end
return M
]])
    H.write(dir .. "/enc.lua", string.format(
      'return { rules = { path = %q }, pipeline = { { lua = "itest.enc" } } }', dir .. "/rules"))
    local values = {
      '{"zeta":1,"alpha":2,"mid":{"y":1,"b":2,"k":3},"beta":"x","gamma":3,"delta":4}',
      '{"ab":1,"a":2,"B":3,"\\u00e9":4,"A":5,"_":6,"a b":7,"":8}',
      '[0.1,1e300,9007199254740992,-0,1795667685709,0.30000000000000004,1e-7,-2.5e-5,123456.789]',
      '{"s":"tab\\t nl\\n q\\" bs\\\\ ctl\\u0001 bell\\u0007 del\\u007f sl/ \\u2028 \\ud83d\\ude00"}',
      '{"empty":[],"obj":{},"nested":[[],[{}],{"a":[null,true,false]}],"n":null}',
      '{"seed":{"userId":"u","product":{"slug":"s","viewTimestamp":1795667685709,"eventId":"e"},'
        .. '"aggregatedProducts":{"slugs":["a","b"],"viewTimestamps":[1,2]}}}',
    }
    local lines = {}
    for i, v in ipairs(values) do lines[i] = '{"v":' .. v .. '}' end
    H.write(dir .. "/values.jsonl", table.concat(lines, "\n") .. "\n")
    local rc, out, err = H.run(H.q(H.BIN) .. " test -c " .. H.q(dir .. "/enc.lua")
      .. " -i " .. H.q(dir .. "/values.jsonl"))
    assert.are.equal(0, rc, err)
    local n = 0
    for line in out:gmatch("[^\n]+") do
      local t = assert(sluice.json_decode(line))
      n = n + 1
      local want = assert(sluice.json_encode(assert(sluice.json_decode(lines[t.record])).v))
      assert.are.equal(want, t.ctx.text, "record " .. t.record)
    end
    assert.are.equal(#values, n, "one trace line per value")
  end)
end)

describe("codec: collector and sink records under sluice run", function()
  local n, worker, port

  lazy_setup(function()
    local brokers, broker = H.kafka(dir, "broker")
    n = H.job_names("codec", brokers, dir)
    n.broker = broker
    port = H.free_port()
    local cfg = H.pipeline_config(n)
    cfg.collector = { listen = "127.0.0.1:" .. port, topic = n.input,
      allowed_origins = { H.STORE_URL }, ip = "keep" }
    worker = H.start_sluice(dir, "codec", cfg, { admin_port = n.admin_port })
  end)

  lazy_teardown(function()
    if worker then worker:stop() end
    if n and n.broker then n.broker:stop() end
  end)

  -- The message of a collector record: its value without the envelope.
  local function message(value)
    return value:match('^{"message":(.*),"collector":{')
  end

  it("writes a GET's payload as payload_from_query encodes it, the last of a repeated name kept", function()
    local qs = H.read(H.FIX .. "get-i-product.querystring.txt"):gsub("%s+$", "")
      .. "&duid=22222222-2222-4222-8222-000000000001&page=Second+title"
    local code = H.http(port, "GET", "/i?" .. qs, { headers = { "Origin: " .. H.STORE_URL } })
    assert.are.equal(200, code)
    local recs = H.wait_records(n.brokers, n.input, 1)
    assert.are.equal(1, #recs)
    local want = assert(sluice.json_encode(assert(snowplow.payload_from_query(qs))))
    assert.are.equal(want, message(recs[1].value), "the message bytes")
    assert.are.equal("22222222-2222-4222-8222-000000000001", recs[1].key, "keyed by the last duid")
    assert.are.equal("Second title", recs[1].json.message.data[1].page)
  end)

  it("keys a POST whose event repeats duid by the duid the pipeline reads (the last)", function()
    local body = H.read(H.FIX .. "tp2-post-product.body.raw")
    local last = body:match('"duid":"([^"]+)"')
    body = body:gsub('"data":%[{', '"data":[{"duid":"33333333-3333-4333-8333-000000000001",', 1)
    local code = H.http(port, "POST", TP2, { body = body, headers = { "Origin: " .. H.STORE_URL,
      "Content-Type: application/json; charset=UTF-8" } })
    assert.are.equal(200, code)
    local recs = H.wait_records(n.brokers, n.input, 2)
    local keys = {}
    for _, r in ipairs(recs) do keys[r.key] = true end
    assert.is_true(keys[last], "a record keyed by the event's last duid " .. last)
    -- the sink's userId (extract reads ev.duid) is that key too
    local out = H.wait_records(n.brokers, n.output, 2)
    local users = {}
    for _, r in ipairs(out) do users[r.key] = true end
    assert.is_true(users[last], "the pipeline's userId is " .. last)
  end)

  it("writes sink records as busted's encoder writes them: fields and keys in byte order", function()
    local out = H.wait_records(n.brokers, n.output, 2)
    assert.is_true(#out >= 2)
    for _, r in ipairs(out) do
      local v = assert(sluice.json_decode(r.value))
      assert.are.equal(assert(sluice.json_encode(v)), r.value, "the sink record's bytes")
      assert.are.equal('{"eventId":', r.value:sub(1, 11), "fields in byte order")
    end
  end)
end)
