-- pipeline_spec.lua -- records through `sluice run`, as Kafka sees them.
--
-- Produces into the input topic with kcat and reads the sink and dead-letter
-- topics back: the real tracker captures through extract, filter counts on
-- /metrics, dead letters and `sluice replay`, an endless rule (budget or
-- watchdog), and JSON values kept as they came (null, [], ms integers).
-- Every describe runs its own worker on its own topics; in embedded mode a
-- `sluice broker` process per file stands in for Kafka (replay needs a
-- reachable address).

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local FIXRULES = "spec/integration/fixtures/rules"

local dir, brokers, broker

local function names(prefix) return H.job_names(prefix, brokers, dir) end

local function by_offset(recs)
  table.sort(recs, function(a, b)
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  return recs
end

-- The sink records of the given eids (eventId variable), by eid.
local function by_eid(recs)
  local out = {}
  for _, r in ipairs(recs) do
    if r.json and r.json.eventId then
      out[r.json.eventId] = out[r.json.eventId] or {}
      table.insert(out[r.json.eventId], r)
    end
  end
  return out
end

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

lazy_teardown(function()
  if broker then broker:stop() end
  H.rmrf(dir)
end)

describe("pipeline: tracker records through extract to the sink topic", function()
  local n, worker

  lazy_setup(function()
    n = names("pipe")
    worker = H.start_sluice(dir, "extract", H.pipeline_config(n), { admin_port = n.admin_port })
  end)

  lazy_teardown(function() if worker then worker:stop() end end)

  it("turns each product page view of the captured POSTs into one keyed record", function()
    local recs = H.tracker_records("post-pageviews.requests.jsonl")
    assert.are.equal(5, #recs, "the capture has 5 POSTs")
    H.produce(brokers, n.input, recs)
    -- 4 product pages; the first POST is /collections/all
    local out = by_offset(H.wait_records(brokers, n.output, 4))
    assert.are.equal(4, #out, "4 product page views on the sink, got " .. #out)
    local expected = {}
    for _, r in ipairs(recs) do
      local ev = r.events[1]
      local slug = ev.url:match("/products/([^/?#]+)")
      if slug then expected[#expected + 1] = { duid = ev.duid, slug = slug, dtm = ev.dtm, eid = ev.eid } end
    end
    for i, e in ipairs(expected) do
      local r = out[i]
      assert.are.equal(e.duid, r.key, "sink key is the visitor's duid")
      assert.are.equal(e.duid, r.json.userId, "userId is the duid")
      assert.are.equal(e.slug, r.json.product.slug, "product.slug of view " .. i)
      assert.are.equal(tonumber(e.dtm), r.json.product.viewTimestamp, "viewTimestamp = dtm")
      assert.is_truthy(r.value:find('"viewTimestamp":' .. e.dtm, 1, true),
        "viewTimestamp written as an integer, got " .. r.value)
      assert.are.equal(e.eid, r.json.eventId)
    end
  end)

  it("turns a batched POST into several records, in the tracker's order", function()
    local recs = H.tracker_records("batch-bufferSize3.requests.jsonl")
    local views = {}
    for _, r in ipairs(recs) do
      for _, ev in ipairs(r.events) do
        if ev.e == "pv" and ev.url:find("/products/", 1, true) then views[#views + 1] = ev end
      end
    end
    assert.is_true(#views >= 3, "the capture has a batch of product views")
    H.produce(brokers, n.input, recs)
    local want = {}
    for _, ev in ipairs(views) do want[ev.eid] = true end
    local got
    H.wait_for(function()
      got = {}
      for _, r in ipairs(by_offset(H.records(brokers, n.output))) do
        if r.json and want[r.json.eventId] then got[#got + 1] = r end
      end
      return #got >= #views
    end, 20, 0.3)
    assert.are.equal(#views, #got, "one sink record per product view of the batches")
    -- same visitor -> same partition; offsets follow the tracker's order
    for i, ev in ipairs(views) do
      assert.are.equal(ev.eid, got[i].json.eventId, "record " .. i .. " in tracker order")
      assert.are.equal(ev.duid, got[i].key)
      assert.are.equal(tonumber(ev.dtm), got[i].json.product.viewTimestamp)
    end
  end)

  it("counts filtered records by step and reason on /metrics", function()
    local before = H.metrics(n.admin_port)
    local base = H.metric(before, 'sluice_filtered_total{step="extract",reason="wrong_app_id"}') or 0
    local pv = cjson.decode(H.page_view(9001).value)
    pv.message.data[1].aid = "another-app"
    H.produce(brokers, n.input, { { key = "k", value = cjson.encode(pv) } })
    H.produce(brokers, n.input, { H.page_view(9002) })
    H.wait_for(function()
      return by_eid(H.records(brokers, n.output))[H.page_view(9002).eid]
    end, 20, 0.3)
    local got = H.wait_for(function()
      local v = H.metric(H.metrics(n.admin_port),
        'sluice_filtered_total{step="extract",reason="wrong_app_id"}')
      return v and v > base and v
    end, 5)
    assert.are.equal(base + 1, got,
      'sluice_filtered_total{step="extract",reason="wrong_app_id"} up by 1')
    local text = H.metrics(n.admin_port)
    assert.is_true((H.metric(text, 'sluice_filtered_total{step="extract",reason="not_a_product_url"}') or 0) >= 1,
      "the /collections/all view counted as not_a_product_url:\n" .. text)
  end)
end)

describe("pipeline: a rule that raises", function()
  local n, worker, rules, cfg

  lazy_setup(function()
    n = names("dlq")
    rules = dir .. "/dlq-rules"
    os.execute(string.format("mkdir -p %s && cp -r %s/itest %s/", H.q(rules), FIXRULES, H.q(rules)))
    cfg = H.pipeline_config(n)
    cfg.rules.path = { rules, "lua" }
    table.insert(cfg.pipeline, 1, { lua = "itest.guard" })
    worker = H.start_sluice(dir, "dlq", cfg, { admin_port = n.admin_port })
    cfg.path = worker.config
  end)

  lazy_teardown(function() if worker then worker:stop() end end)

  local boom

  it("sends the record to the dead-letter topic and goes on with the next ones", function()
    local ok1, ok2 = H.page_view(1), H.page_view(3)
    boom = H.page_view(2, { slug = "boom-bag" })
    H.produce(brokers, n.input, { ok1, boom, ok2 })
    local dl = H.wait_records(brokers, n.dead_letter, 1)
    assert.are.equal(1, #dl, "one dead letter")
    local d = dl[1].json
    assert.is_table(d, "dead letter is JSON: " .. dl[1].value)
    assert.are.equal("guard", d.step, "dead letter names the step")
    assert.are.equal(boom.value, d.value, "dead letter carries the original value byte for byte")
    assert.are.equal(n.input, d.source.topic)
    assert.are.equal(boom.key, d.source.key)
    assert.is_number(d.source.partition)
    assert.is_number(d.source.offset)
    assert.is_number(d.source.timestamp)
    assert.matches("guard: cannot handle", d.error, 1, true)
    assert.matches("guard.lua:%d+", d.error, "error has file:line")
    assert.matches("traceback", d.error, 1, true)
    assert.matches("explode", d.error, 1, true) -- the function that raised, from the traceback
    assert.matches("^%x+$", d.rulesVersion)
    assert.are.equal(16, #d.rulesVersion, "rulesVersion: 16 hex digits")
    assert.is_truthy(worker:stderr():find("rules version " .. d.rulesVersion, 1, true),
      "rulesVersion is the version the worker logged")
    assert.is_number(d.at)
    local out = by_eid(H.wait_records(brokers, n.output, 2))
    assert.is_truthy(out[ok1.eid], "the record before the error reached the sink")
    assert.is_truthy(out[ok2.eid], "the record after the error reached the sink")
    assert.is_nil(out[boom.eid], "the failing record is not on the sink")
    assert.are.equal(1, H.metric(H.metrics(n.admin_port), "sluice_dead_letters_total"))
  end)

  it("replay puts the dead letter back after the fix, and the worker processes it", function()
    assert.is_truthy(boom, "the previous test produced the dead letter")
    -- fix the rule: no more raise
    local path = rules .. "/itest/guard.lua"
    local src = H.read(path)
    H.write(path, (src:gsub('if type%(url%) == "string" and url:find%("boom", 1, true%) then explode%(url%) end', "")))
    local from = #worker:stderr() + 1
    worker:signal("HUP")
    assert.is_truthy(worker:wait_log("rules reloaded: version (%x+)", 10, from),
      "the worker reloaded the fixed rule:\n" .. worker:stderr():sub(from))
    local rc, out, err = H.run(string.format("%s replay -c %s", H.q(H.BIN), H.q(worker.config)))
    assert.are.equal(0, rc, "sluice replay exits 0 once caught up; stderr:\n" .. err .. out)
    local got = H.wait_for(function()
      return by_eid(H.records(brokers, n.output))[boom.eid]
    end, 20, 0.3)
    assert.is_truthy(got, "the replayed record reached the sink")
    assert.are.equal(1, #got)
    assert.are.equal(boom.key, got[1].key)
    -- the replayed value is the original, back in the source topic
    local copies = 0
    for _, r in ipairs(H.records(brokers, n.input)) do
      if r.value == boom.value then copies = copies + 1 end
    end
    assert.are.equal(2, copies, "the source topic holds the original and the replayed copy")
    assert.are.equal(1, #H.records(brokers, n.dead_letter), "no new dead letter")
    -- a second replay finds nothing new to do
    rc = H.run(string.format("%s replay -c %s", H.q(H.BIN), H.q(worker.config)))
    assert.are.equal(0, rc)
    H.sleep(1.5)
    assert.are.equal(1, #by_eid(H.records(brokers, n.output))[boom.eid],
      "a second replay does not replay the same dead letter again")
  end)
end)

describe("pipeline: one record that makes more sink records than the producer's queue holds", function()
  local n, worker
  local FAN, QUEUE = 3000, 200

  lazy_setup(function()
    n = names("fan")
    local cfg = H.pipeline_config(n)
    cfg.rules.path = { FIXRULES, "lua" }
    cfg.kafka.producer = { ["queue.buffering.max.messages"] = tostring(QUEUE) }
    cfg.pipeline = { { lua = "itest.fan", params = { n = FAN } },
      { name = "out", kafka = { topic = n.output, key = "userId", fields = { "n" } } } }
    worker = H.start_sluice(dir, "fan", cfg, { admin_port = n.admin_port })
  end)

  lazy_teardown(function() if worker then worker:stop() end end)

  it("writes them all, each once, and finishes both records: what the full queue refused waits", function()
    H.produce(brokers, n.input, { H.page_view(1), H.page_view(2) })
    local done = H.wait_for(function()
      return (H.metric(H.metrics(n.admin_port), "sluice_records_done_total") or 0) >= 2
    end, 60)
    assert.is_truthy(done, "both records done; stderr:\n" .. worker:stderr())
    local seen, dups = {}, 0
    for _, r in ipairs(H.records(brokers, n.output)) do
      local i = r.json and r.json.n
      if seen[i] then dups = dups + 1 end
      if i then seen[i] = (seen[i] or 0) + 1 end
    end
    local missing = 0
    for i = 1, FAN do if seen[i] ~= 2 then missing = missing + 1 end end
    assert.are.equal(0, missing, "every n written once per input record")
    local m = H.metrics(n.admin_port)
    assert.is_true((H.metric(m, "sluice_kafka_producer_parked_total") or 0) > 0,
      "records waited for room in the queue")
    assert.are.equal(0, H.metric(m, "sluice_dead_letters_total") or 0)
    assert.is_true(worker:alive(), "the worker is still running")
    assert.is_nil(worker:stderr():find("Queue full", 1, true), worker:stderr())
  end)
end)

describe("pipeline: a rule that never returns", function()
  local n, cfg, worker, worker2

  lazy_teardown(function()
    if worker then worker:stop() end
    if worker2 then worker2:stop() end
  end)

  it("is stopped by the budget or the watchdog (exit 70), and the record is dead-lettered", function()
    n = names("spin")
    cfg = H.pipeline_config(n)
    cfg.rules.path = { FIXRULES, "lua" }
    cfg.rules.budget = "200ms"
    cfg.rules.watchdog = "2s"
    table.insert(cfg.pipeline, 1, { lua = "itest.spin" })
    worker = H.start_sluice(dir, "spin", cfg, { admin_port = n.admin_port })
    local ok1, spin, ok2 = H.page_view(11), H.page_view(12, { slug = "spin-top" }), H.page_view(13)
    H.produce(brokers, n.input, { ok1, spin, ok2 })
    -- Either the budget interrupts the step (dead letter, the worker lives)
    -- or the watchdog ends the process with status 70.
    local outcome = H.wait_for(function()
      if not worker:alive() then return "exit" end
      if #H.records(brokers, n.dead_letter) > 0 then return "budget" end
    end, 20, 0.2)
    assert.is_truthy(outcome, "neither a dead letter nor an exit within 20 s; stderr:\n" .. worker:stderr())
    if outcome == "exit" then
      assert.are.equal(70, worker:status(), "the watchdog exits 70; stderr:\n" .. worker:stderr())
      assert.are.equal(0, #H.records(brokers, n.dead_letter), "nothing dead-lettered before restart")
      worker2 = H.start_sluice(dir, "spin2", cfg, { admin_port = n.admin_port })
      assert.is_truthy(worker2:stderr():find("watchdog", 1, true),
        "the restart says the previous run was stopped by the watchdog:\n" .. worker2:stderr())
    else
      assert.is_true(worker:alive(), "the worker goes on after a budget stop")
    end
    local dl = H.wait_records(brokers, n.dead_letter, 1)
    assert.are.equal(1, #dl, "exactly one dead letter (" .. outcome .. ")")
    local d = dl[1].json
    assert.are.equal("spin", d.step)
    assert.are.equal(spin.value, d.value)
    assert.is_string(d.error)
    print("# endless loop outcome: " .. outcome .. "; error: " .. d.error:gsub("\n.*", ""))
    local out = by_eid(H.wait_records(brokers, n.output, 2))
    assert.is_truthy(out[ok1.eid], "the record before the loop reached the sink")
    assert.is_truthy(out[ok2.eid], "the stream went on after the loop")
    assert.is_nil(out[spin.eid], "the looping record is not on the sink")
    -- and it keeps going
    local later = H.page_view(14)
    H.produce(brokers, n.input, { later })
    assert.is_truthy(H.wait_for(function() return by_eid(H.records(brokers, n.output))[later.eid] end, 20, 0.3),
      "a later record reaches the sink")
    assert.are.equal(1, #H.records(brokers, n.dead_letter), "the loop is dead-lettered once")
  end)
end)

describe("pipeline: JSON values pass through unchanged", function()
  local n, worker

  lazy_teardown(function() if worker then worker:stop() end end)

  it("keeps null, [], {}, ms timestamps and big integers as they came", function()
    n = names("json")
    local cfg = H.pipeline_config(n)
    cfg.rules.path = { FIXRULES, "lua" }
    cfg.pipeline = {
      { lua = "itest.copy" },
      { name = "sink", kafka = { topic = n.output, key = "userId", fields = { "copied" } } },
    }
    worker = H.start_sluice(dir, "json", cfg, { admin_port = n.admin_port })
    local payload = '{"a":null,"b":[],"c":{},"ts":1795667677389,"big":9007199254740991,'
      .. '"neg":-42,"f":1.5,"list":[1,null,[],{"x":null}],"s":"Sneaker \\u2013 \\"NU\\"",'
      .. '"t":true}'
    H.produce(brokers, n.input, { { key = "k1", value = '{"id":"k1","payload":' .. payload .. '}' } })
    local out = H.wait_records(brokers, n.output, 1)
    assert.are.equal(1, #out, "one record on the sink")
    local v = out[1].value
    assert.are.equal("k1", out[1].key)
    local got = v:match('^{"copied":(.*)}$')
    assert.is_truthy(got, "sink value is {copied = ...}: " .. v)
    for _, piece in ipairs({ '"a":null', '"b":[]', '"c":{}', '"ts":1795667677389',
      '"big":9007199254740991', '"neg":-42', '"f":1.5', '"list":[1,null,[],{"x":null}]',
      '"t":true' }) do
      assert.is_truthy(got:find(piece, 1, true), "expected " .. piece .. " in " .. got)
    end
    local s = cjson.decode(got).s
    assert.are.equal("Sneaker \226\128\147 \"NU\"", s, "string with UTF-8 and quotes round-trips")
  end)
end)
