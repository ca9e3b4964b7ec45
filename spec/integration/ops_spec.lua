-- ops_spec.lua -- the operator's view of a running job.
--
-- - /metrics counts each step's records in and out, filtered by reason,
--   errors and dead letters (the kafka sink too), exactly as many as sent;
--   end-to-end latency is a histogram of the records that reached the sink.
-- - /healthz, /readyz and /status; a secret the config reads from the
--   environment appears in none of /status, /metrics or the log.
-- - `sluice counts` prints the same numbers as a table.
-- - Every metric examples/grafana/sluice.json queries is served by a running
--   job; sluice_http_* (present only once an http step exists) are checked
--   against the list core/httpc.h documents.
-- - A rule that raises on every record gives a bounded log with
--   "suppressed N" counts instead of one traceback per record.
-- - /readyz answers 503 while the broker is away and 200 once it is back
--   (real Kafka: scripts/kafka.sh kill-broker / restart-broker; with the
--   embedded broker, whose address cannot come back, only the 503).

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local SECRET = "s3cr3t-" .. tostring(os.time()) .. "-do-not-leak"
local dir, brokers, broker

local function names(prefix) return H.job_names(prefix, brokers, dir) end

-- A config whose extract params include a secret read from the environment.
local function write_config(name, cfg)
  cfg.pipeline[1].params.token = "@SECRET@"
  local path = H.write_config(dir .. "/" .. name .. ".lua", cfg)
  local text = H.read(path):gsub('"@SECRET@"', 'os.getenv("SPEC_SECRET")')
  H.write(path, text)
  return path
end

local function metric(port, sample) return H.metric(H.metrics(port), sample) or 0 end

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

lazy_teardown(function()
  if broker then broker:stop() end
  H.rmrf(dir)
end)

describe("ops: counts, probes, status and the dashboard of a running job", function()
  local n, worker
  local GOOD, WRONG_APP, NOT_PRODUCT = 7, 3, 2

  lazy_setup(function()
    n = names("ops")
    local cfg = H.pipeline_config(n)
    table.insert(cfg.pipeline, 2, { name = "window", window = {
      key = "userId", time = "product.viewTimestamp", length = "5m",
      aggregate = { slugs = { "list", "product.slug" } }, as = "aggregatedProducts" } })
    local path = write_config("ops", cfg)
    -- real Kafka creates no topic for a consumer; start_sluice does it only for a table
    if cfg.kafka.brokers ~= "embedded" then H.create_topic(cfg.kafka.brokers, cfg.kafka.input) end
    worker = H.start_sluice(dir, "ops", path, { admin_port = n.admin_port,
      env = "env SPEC_SECRET=" .. H.q(SECRET) .. " " })
    local recs, now = {}, H.now_ms()
    for i = 1, GOOD do recs[#recs + 1] = H.page_view(7000 + i, { dtm = now }) end
    for i = 1, WRONG_APP do
      local pv = cjson.decode(H.page_view(7100 + i).value)
      pv.message.data[1].aid = "another-app"
      recs[#recs + 1] = { key = "k", value = cjson.encode(pv) }
    end
    for i = 1, NOT_PRODUCT do
      local pv = cjson.decode(H.page_view(7200 + i).value)
      pv.message.data[1].url = H.STORE_URL .. "/collections/all"
      recs[#recs + 1] = { key = "k", value = cjson.encode(pv) }
    end
    H.produce(brokers, n.input, recs)
    local total = GOOD + WRONG_APP + NOT_PRODUCT
    local done = H.wait_for(function()
      return metric(n.admin_port, "sluice_records_done_total") >= total
    end, 30, 0.3)
    assert(done, "the job finished the " .. total .. " records sent; stderr:\n" .. worker:stderr())
  end)

  lazy_teardown(function() if worker then worker:stop() end end)

  it("counts each step's records in, out and filtered by reason as sent", function()
    local text = H.metrics(n.admin_port)
    local function m(s) return H.metric(text, s) end
    local total = GOOD + WRONG_APP + NOT_PRODUCT
    assert.are.equal(total, m('sluice_step_in_total{step="extract"}'), "extract in")
    assert.are.equal(GOOD, m('sluice_step_out_total{step="extract"}'), "extract out")
    assert.are.equal(WRONG_APP, m('sluice_filtered_total{step="extract",reason="wrong_app_id"}'))
    assert.are.equal(NOT_PRODUCT, m('sluice_filtered_total{step="extract",reason="not_a_product_url"}'))
    assert.are.equal(GOOD, m('sluice_step_in_total{step="window"}'), "window in")
    assert.are.equal(GOOD, m('sluice_step_out_total{step="window"}'), "window out")
    assert.are.equal(GOOD, m('sluice_step_in_total{step="debug"}'), "the kafka sink counts in")
    assert.are.equal(GOOD, m('sluice_step_out_total{step="debug"}'), "and out once acknowledged")
    assert.are.equal(0, m('sluice_step_errors_total{step="extract"}'), "no errors, the series at 0")
    assert.are.equal(0, m('sluice_step_dead_letters_total{step="debug"}'), "no dead letters, at 0")
    assert.are.equal(GOOD, m("sluice_end_to_end_seconds_count"),
      "one latency observation per record that reached the sink")
    assert.are.equal(GOOD, m('sluice_end_to_end_seconds_bucket{le="+Inf"}'))
    assert.is_truthy(text:find("# TYPE sluice_end_to_end_seconds histogram", 1, true))
    assert.is_truthy(text:find('sluice_consumer_lag{topic="' .. n.input .. '",partition="', 1, true),
      "consumer lag per partition:\n" .. text)
    assert.is_truthy(H.metric(text, "sluice_assigned_partitions") > 0)
  end)

  it("answers /healthz, /readyz and /status without the secret", function()
    assert.are.equal(200, (H.http(n.admin_port, "GET", "/healthz")))
    assert.are.equal(200, (H.http(n.admin_port, "GET", "/health")))
    local code, body = H.http(n.admin_port, "GET", "/readyz")
    assert.are.equal(200, code, body)
    local scode, sbody, headers = H.http(n.admin_port, "GET", "/status")
    assert.are.equal(200, scode)
    assert.are.equal("application/json", headers["content-type"])
    local st = cjson.decode(sbody)
    assert.is_string(st.version)
    assert.are.equal(dir .. "/ops.lua", st.config)
    assert.is_true(st.ready)
    assert.are.equal(16, #st.rules.version)
    assert.is_truthy(st.rules.loaded_at:match("^%d%d%d%d%-%d%d%-%d%dT"))
    assert.are.equal(0, st.rules.reloads)
    assert.are.equal(cjson.null, st.rules.last_reload_error)
    assert.is_true(#st.partitions > 0, "assigned partitions listed: " .. sbody)
    for _, p in ipairs(st.partitions) do
      assert.are.equal(n.input, p.topic)
      assert.is_number(p.lag)
    end
    assert.is_falsy(sbody:find(SECRET, 1, true), "the secret is not in /status")
    assert.is_falsy(H.metrics(n.admin_port):find(SECRET, 1, true), "nor in /metrics")
    assert.is_falsy(worker:stderr():find(SECRET, 1, true), "nor in the log")
  end)

  it("prints the counts of the running instance with `sluice counts`", function()
    local rc, out, err = H.run(string.format("%s counts --admin 127.0.0.1:%d", H.q(H.BIN), n.admin_port))
    assert.are.equal(0, rc, err)
    local rows = {}
    for line in out:gmatch("[^\n]+") do rows[#rows + 1] = line end
    assert.is_truthy(rows[1]:match("^STEP%s+IN%s+OUT%s+FILTERED%s+ERRORS%s+DEAD LETTERS$"), out)
    local total = GOOD + WRONG_APP + NOT_PRODUCT
    assert.is_truthy(out:find(string.format("\nextract%%s+%d%%s+%d%%s+%d%%s+0%%s+0\n", total, GOOD,
      WRONG_APP + NOT_PRODUCT)), out)
    assert.is_truthy(out:find("\n  wrong_app_id%s+" .. WRONG_APP .. "\n"), out)
    assert.is_truthy(out:find("\n  not_a_product_url%s+" .. NOT_PRODUCT .. "\n"), out)
    assert.is_truthy(out:find(string.format("\nwindow%%s+%d%%s+%d%%s+0%%s+0%%s+0\n", GOOD, GOOD)), out)
    assert.is_truthy(out:find(string.format("\ndebug%%s+%d%%s+%d%%s+0%%s+0%%s+0\n", GOOD, GOOD)), out)
    assert.is_truthy(out:find("extract", 1, true) < out:find("window", 1, true) and
      out:find("window", 1, true) < out:find("\ndebug", 1, true), "steps in pipeline order")
    local brc, _, berr = H.run(string.format("%s counts --admin 127.0.0.1:%d", H.q(H.BIN), H.free_port()))
    assert.are.equal(1, brc)
    assert.is_truthy(berr:find("sluice counts: http://127.0.0.1:", 1, true), berr)
  end)

  it("serves every metric the Grafana dashboard queries", function()
    local dash = cjson.decode(H.read("examples/grafana/sluice.json"))
    local text = H.metrics(n.admin_port)
    local httpc = H.read("core/httpc.h")
    local queried, checked = {}, 0
    for _, p in ipairs(dash.panels) do
      for _, t in ipairs(p.targets) do
        for name in t.expr:gmatch("sluice_[%w_]+") do queried[name] = true end
      end
    end
    for name in pairs(queried) do
      checked = checked + 1
      if name:match("^sluice_http_") then
        assert.is_truthy(httpc:find(name, 1, true) or httpc:find(name:gsub("_bucket$", ""), 1, true),
          name .. " is documented in core/httpc.h")
      else
        assert.is_truthy(text:find("\n" .. name .. "[{ ]") or text:find("^" .. name .. "[{ ]"),
          name .. " is in /metrics of a running job")
      end
    end
    assert.is_true(checked >= 15, "the dashboard queries the metrics (" .. checked .. ")")
  end)
end)

describe("ops: a flood of failing records", function()
  local n, worker

  lazy_setup(function()
    n = names("flood")
    local rules = dir .. "/flood-rules"
    os.execute("mkdir -p " .. H.q(rules .. "/flood"))
    H.write(rules .. "/flood/boom.lua",
      "local M = {}\nfunction M.boom(ctx)\n  error('boom at offset ' .. ctx.kafka.offset)\nend\nreturn M\n")
    local cfg = H.pipeline_config(n)
    cfg.rules.path = { rules, "lua" }
    table.insert(cfg.pipeline, 1, { lua = "flood.boom" })
    worker = H.start_sluice(dir, "flood", cfg, { admin_port = n.admin_port })
  end)

  lazy_teardown(function() if worker then worker:stop() end end)

  it("shows a failed reload's error and count in /status", function()
    local path = dir .. "/flood-rules/flood/boom.lua"
    local good = H.read(path)
    H.write(path, "local M = {\n")
    worker:signal("HUP")
    local st = H.wait_for(function()
      local _, body = H.http(n.admin_port, "GET", "/status")
      local s = cjson.decode(body)
      return s.rules.reload_errors == 1 and s
    end, 10, 0.2)
    H.write(path, good)
    assert.is_truthy(st, "the failed reload is counted")
    assert.is_truthy(st.rules.last_reload_error:find("boom.lua:2:", 1, true), st.rules.last_reload_error)
    assert.are.equal(0, st.rules.reloads)
    assert.are.equal(1, metric(n.admin_port, 'sluice_reloads_total{result="error"}'))
  end)

  it("logs a bounded number of lines and counts what it suppressed", function()
    local N = 400
    local recs = {}
    for i = 1, N do recs[i] = H.page_view(8000 + i) end
    H.produce(brokers, n.input, recs)
    local ok = H.wait_for(function()
      return metric(n.admin_port, 'sluice_step_dead_letters_total{step="boom"}') >= N
    end, 40, 0.3)
    assert.is_truthy(ok, "every record dead-lettered")
    assert.are.equal(N, metric(n.admin_port, 'sluice_step_errors_total{step="boom"}'))
    worker:stop()
    local log = worker:stderr()
    worker = nil
    local printed, suppressed = 0, 0
    for _ in log:gmatch("pipeline: step boom failed on") do printed = printed + 1 end
    for k in log:gmatch("suppressed (%d+) similar messages") do suppressed = suppressed + tonumber(k) end
    assert.is_true(printed <= 30, printed .. " lines of failures printed, not one per record")
    assert.is_true(printed >= 1)
    assert.are.equal(N, printed + suppressed, "every failure printed or counted as suppressed:\n" .. log)
    assert.is_true(#log < 60000, "the log stays small: " .. #log .. " bytes")
  end)
end)

describe("ops: /readyz follows the broker", function()
  local n, worker

  lazy_setup(function()
    n = names("ready")
    local cfg = H.pipeline_config(n)
    cfg.kafka.brokers = brokers
    worker = H.start_sluice(dir, "ready", cfg, { admin_port = n.admin_port })
  end)

  lazy_teardown(function() if worker then worker:stop(2) end end)

  it("answers 503 while the broker is away and 200 once it is back", function()
    assert.are.equal(200, (H.http(n.admin_port, "GET", "/readyz")))
    local restarted
    if H.embedded then
      broker:stop()
      broker = nil
    else
      local rc, out, err = H.kafka_sh("kill-broker 1")
      assert(rc == 0, "kafka.sh kill-broker 1: " .. out .. err)
      restarted = false
      -- The specs after this one need the broker, whatever fails here.
      finally(function() if restarted == false then H.kafka_sh("restart-broker 1") end end)
    end
    -- The 503's own body and /status while the broker is still away: once
    -- it is back, sluice may reconnect before a later request.
    local body, status
    local down = H.wait_for(function()
      local code, b = H.http(n.admin_port, "GET", "/readyz")
      if code ~= 503 then return false end
      body = b
      status = select(2, H.http(n.admin_port, "GET", "/status"))
      return code
    end, 30, 0.5)
    assert.are.equal(503, down, "/readyz 503 with the broker away")
    assert.is_truthy(body:find("no Kafka broker reachable", 1, true), body)
    assert.is_false(cjson.decode(status).broker_up)
    if H.embedded then return end -- the embedded broker's address cannot come back
    local rc, out, err = H.kafka_sh("restart-broker 1")
    restarted = true
    assert(rc == 0, "kafka.sh restart-broker 1: " .. out .. err)
    local up = H.wait_for(function() return H.http(n.admin_port, "GET", "/readyz") == 200 end, 60, 0.5)
    assert.is_truthy(up, "/readyz 200 once the broker is back")
  end)
end)

describe("ops: busted follows SLUICE_RULES", function()
  it("loads the rule modules from SLUICE_RULES before lua/", function()
    local rules = dir .. "/other-rules"
    os.execute("mkdir -p " .. H.q(rules .. "/recommendations"))
    H.write(rules .. "/recommendations/extract.lua",
      "return { extract = function() return nil, 'from_sluice_rules' end }\n")
    local rc, out = H.run("SLUICE_RULES=" .. H.q(rules) .. " busted -o TAP spec/recommendations/extract_spec.lua")
    assert.are_not.equal(0, rc, "the specs ran against the other rules and failed")
    assert.is_truthy(out:find("from_sluice_rules", 1, true), out:sub(1, 2000))
    local rc2 = H.run("busted -o TAP spec/recommendations/extract_spec.lua")
    assert.are.equal(0, rc2, "the shipped rules pass without SLUICE_RULES")
  end)
end)
