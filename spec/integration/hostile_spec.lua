-- hostile_spec.lua -- what a hostile client or an unlucky operator can do to
-- `sluice run`, and what must hold then (issue 13):
--
-- - one visitor's clock a year ahead ages nobody else's window: the event is
--   filtered as future_time, the other visitors of its partition keep their
--   whole windows and their duplicates;
-- - a dead letter always fits: an 800 KB record full of quotes whose rule
--   raises is dead-lettered whole (raw, metadata in a header) and replayed;
--   a dead-letter topic that refuses records stops nothing: the record stays
--   uncommitted and its dead letter is retried;
-- - a rule module whose top-level code loops forever fails to load within
--   rules.watchdog, at start and on SIGHUP (the old rules keep running and
--   the process keeps answering);
-- - a rule deployed by SIGHUP that hangs on a new record and on a record
--   the restart replays to rebuild windows: one restart, the restore record
--   skipped and counted, the new record dead-lettered exactly once;
-- - the log tells the truth about a restart: "window state restored" once
--   the restore is over (not when the next record comes), "stopped" when
--   the process ends (it does: a delay seen with `kill -0` is the process
--   waiting as a zombie for a parent that reaps it late; here the shell
--   around it reaps at once);
-- - an idle worker stays in its group (max.poll.interval.ms shortened here,
--   so that the idle period is seconds, not five minutes).
--
-- In embedded mode a `sluice broker` process per test stands in for Kafka.

local H = dofile("spec/integration/helpers.lua")
local q = H.q

local dir, brokers, broker

before_each(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

-- Every worker a test starts, stopped after it whatever the test found.
local started = {}
local start_sluice = H.start_sluice
H.start_sluice = function(...)
  local p = start_sluice(...)
  started[#started + 1] = p
  return p
end

after_each(function()
  for _, p in ipairs(started) do p:stop(5) end
  started = {}
  if broker then broker:stop() end
  -- HOSTILE_SPEC_KEEP=1 keeps the logs for a look after a failure.
  if os.getenv("HOSTILE_SPEC_KEEP") == "1" then print("# kept " .. dir) else H.rmrf(dir) end
end)

-- Topics and group of one job.
local function job(prefix)
  return {
    brokers = brokers, input = H.unique(prefix .. "-in"), output = H.unique(prefix .. "-out"),
    dead_letter = H.unique(prefix .. "-dlq"), group = H.unique(prefix .. "-g"),
    state_dir = dir .. "/state", admin_port = H.free_port(),
  }
end

-- Produces recs ({key, value}) to one partition of topic, in order.
local function produce_to(topic, partition, recs)
  local lines = {}
  for i, r in ipairs(recs) do lines[i] = r.key .. "\t" .. r.value end
  H.write(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
  local rc, _, err = H.run(string.format("kcat -b %s -P -t %s -p %d -K '\t' <%s", q(brokers),
    q(topic), partition, q(dir .. "/in.txt")))
  assert(rc == 0, "kcat produce failed: " .. err)
end

-- Starts the recommendations window job (spec/integration/fixtures/
-- window-job.lua) of job j; with_admin: wait until /health answers.
local function start_window_job(j, name, with_admin)
  H.create_topic(brokers, j.input)
  local env = string.format("env KAFKA_BROKERS=%s SLUICE_GROUP=%s WINDOW_INPUT=%s WINDOW_OUTPUT=%s "
    .. "WINDOW_DEAD_LETTER=%s ADMIN_LISTEN=127.0.0.1:%d SLUICE_STATE_DIR=%s ",
    q(brokers), q(j.group), q(j.input), q(j.output), q(j.dead_letter), j.admin_port, q(j.state_dir))
  return H.start_sluice(dir, name, "spec/integration/fixtures/window-job.lua",
    { env = env, admin_port = with_admin and j.admin_port or nil })
end

describe("a visitor's clock", function()
  it("a year ahead is filtered as future_time and ages no other visitor's window", function()
    local j = job("skew")
    local w = start_window_job(j, "skew", true)
    local now, year = H.now_ms(), 366 * 86400 * 1000
    local A, C = "aaaaaaaa-1111-4111-8111-000000000001", "cccccccc-1111-4111-8111-000000000003"
    local function view(id, duid, dtm) return H.page_view(id, { duid = duid, dtm = dtm }) end
    -- Visitor A's three views, then B's one view a year ahead, all on partition 0.
    produce_to(j.input, 0, { view(1, A, now - 3000), view(2, A, now - 2000), view(3, A, now - 1000),
      view(4, "bbbbbbbb-1111-4111-8111-000000000002", now + year) })
    H.wait_records(brokers, j.output, 3)
    H.sleep(2.5)   -- window expiry runs every second
    -- A's 4th view, A's 3rd view re-sent (same eid), a new visitor C's two views.
    produce_to(j.input, 0, { view(5, A, now), view(3, A, now - 1000), view(6, C, now + 100),
      view(7, C, now + 200) })
    local recs = H.settle(brokers, j.output, 2, 20)

    local by = {}
    for _, r in ipairs(recs) do
      local v = r.json
      by[v.eventId] = by[v.eventId] or {}
      table.insert(by[v.eventId], #v.aggregatedProducts.slugs)
    end
    local eid = function(id) return string.format("00000000-0000-4000-8000-%012d", id) end
    assert.are.same({ 4 }, by[eid(5)], "A's 4th view is emitted once with a window of 4")
    assert.are.same({ 3 }, by[eid(3)], "A's re-sent 3rd view is filtered as a duplicate")
    assert.are.same({ 2 }, by[eid(7)], "the new visitor C gets past 1 entry")
    assert.is_nil(by[eid(4)], "the view a year ahead is not emitted")
    local m = H.metrics(j.admin_port)
    assert.are.equal(1, H.metric(m, 'sluice_filtered_total{step="window",reason="future_time"}'),
      "the future view is counted as future_time")
    assert.are.equal(1, H.metric(m, 'sluice_filtered_total{step="window",reason="duplicate"}'),
      "the re-sent view is counted as a duplicate")
    assert.are.equal(0, w:stop(10), "exit 0 on SIGTERM")
  end)
end)

-- A job whose one rule raises on records with a "big" or "boom" field.
local function boom_job(j, dead_letter)
  local rules = dir .. "/rules"
  os.execute("mkdir -p " .. q(rules))
  H.write(rules .. "/boom.lua", [[
return { boom = function(ctx)
  if type(ctx.input) == "table" and (ctx.input.big or ctx.input.boom) then error("boom") end
  return ctx
end }
]])
  local cfg = H.pipeline_config(j)
  cfg.kafka.dead_letter = dead_letter or j.dead_letter
  cfg.rules.path = rules
  cfg.shutdown_timeout = "2s"
  cfg.pipeline = { { lua = "boom" }, { name = "out", kafka = { topic = j.output, fields = { "input" } } } }
  return cfg
end

describe("a dead letter", function()
  it("of an 800 KB record full of quotes fits: sent whole and raw, replayable, nothing stops", function()
    local j = job("big")
    local w = H.start_sluice(dir, "big", boom_job(j), { admin_port = j.admin_port })
    local big = '{"big":"' .. string.rep('\\"', 400000) .. '"}'   -- 800 KB, escaped JSON twice that
    H.produce(brokers, j.input, { { key = "k", value = big }, { key = "k", value = '{"n":1}' } })
    assert.are.equal(1, #H.wait_records(brokers, j.output, 1, 20), "the record after it flowed")
    local dl = H.wait_records(brokers, j.dead_letter, 1, 10)
    assert.is_true(w:alive(), "the worker still runs; stderr:\n" .. w:stderr():sub(-2000))
    assert.are.equal(1, #dl, "one dead letter")
    assert.are.equal(#big, #dl[1].value, "the dead letter carries the whole value, raw")
    local hdr = H.sh(string.format("kcat -C -b %s -t %s -o beginning -e -q -f '%%h' 2>/dev/null",
      q(brokers), q(j.dead_letter)))
    assert.is_truthy(hdr:find('sluice.dead-letter={"source":{"topic":"' .. j.input, 1, true),
      "the header names the source: " .. hdr:sub(1, 300))
    assert.is_truthy(hdr:find('"valueBytes":' .. #big, 1, true), "and the value's size")
    assert.is_truthy(hdr:find('"error":"', 1, true) and hdr:find("boom", 1, true), "and the error")
    assert.are.equal(0, w:stop(10), "exit 0 on SIGTERM")
    local rc, out = H.run(string.format("%s replay -c %s --dry-run", q(H.BIN), q(w.config)))
    assert.are.equal(0, rc, "replay --dry-run runs")
    assert.is_truthy(out:find("-> " .. j.input .. " key=k " .. #big .. " bytes", 1, true),
      "replay puts the whole value back: " .. out)
  end)

  it("refused by its topic stops nothing: counted, logged once, retried, the record uncommitted", function()
    local j = job("dlfail")
    -- The producers see no such topic: each dead letter times out after 1 s.
    local cfg = boom_job(j)
    cfg.kafka.producer = { ["topic.blacklist"] = j.dead_letter, ["message.timeout.ms"] = "1000" }
    H.create_topic(brokers, j.output)   -- the sink must not time out while its topic is made
    local w = H.start_sluice(dir, "dlfail", cfg, { admin_port = j.admin_port })
    H.produce(brokers, j.input, { { key = "k", value = '{"boom":1}' }, { key = "k", value = '{"n":1}' } })
    assert.are.equal(1, #H.wait_records(brokers, j.output, 1, 20), "the record after it flowed")
    -- Each attempt fails after message.timeout.ms (librdkafka scans for
    -- timeouts once a second) and is retried at the next second: the second
    -- failure comes 2-5 s after the first, within the 10 s of one log line.
    local m
    local deadline = H.now_ms() + 8000
    repeat
      H.sleep(0.25)
      m = H.metrics(j.admin_port)
    until (H.metric(m, "sluice_dead_letter_failures_total") or 0) >= 2 or H.now_ms() > deadline
    assert.is_true(w:alive(), "the worker still runs; stderr:\n" .. w:stderr():sub(-2000))
    assert.are.equal(200, (H.http(j.admin_port, "GET", "/health")), "/health answers")
    assert.is_true((H.metric(m, "sluice_dead_letter_failures_total") or 0) >= 2,
      "each retry counted:\n" .. m)
    assert.are.equal(1, H.metric(m, "sluice_inflight_records"), "the record is still in flight")
    local _, lines = w:stderr():gsub("dead%-letter topic " .. j.dead_letter:gsub("%-", "%%-"), "")
    assert.are.equal(1, lines, "one log line for the failures (fewer than 10 s):\n" .. w:stderr())
    assert.are.equal(0, w:stop(10), "exit 0 on SIGTERM")
    assert.is_truthy(w:stderr():find("still in flight", 1, true), "and says the record will come again")
  end)
end)

describe("a rule module looping at load", function()
  it("fails the reload within rules.watchdog; old rules run on, /health and SIGTERM work", function()
    local j = job("loadloop")
    local cfg = boom_job(j)
    cfg.rules.watchdog = "1s"
    local w = H.start_sluice(dir, "loadloop", cfg, { admin_port = j.admin_port })
    local version = w:stderr():match("rules version (%x+)")
    H.write(dir .. "/rules/boom.lua", "local n = 0\nwhile true do n = n + 1 end\n")
    local from = #w:stderr() + 1
    local t0 = H.now_ms()
    w:signal("HUP")
    local failed = w:wait_log("reload failed, keeping rules version (%x+): ([^\n]*)", 8, from)
    assert.are.equal(version, failed, "the reload fails and keeps the old version; stderr:\n"
      .. w:stderr():sub(from))
    assert.is_true(H.now_ms() - t0 < 4000, "within about rules.watchdog")
    assert.is_truthy(w:stderr():find("module boom: loading ran past rules.watchdog (1000 ms)", from, true),
      "the log names the module: " .. w:stderr():sub(from))
    assert.are.equal(200, (H.http(j.admin_port, "GET", "/health")), "/health answers")
    H.produce(brokers, j.input, { { key = "k", value = '{"n":1}' } })
    assert.are.equal(1, #H.wait_records(brokers, j.output, 1, 10), "records flow on the old rules")
    local rc = w:stop(8)
    assert.are.equal(0, rc, "SIGTERM ends it with 0")
  end)

  it("at start is an error naming the module, not a hang", function()
    local j = job("loadloop0")
    local cfg = boom_job(j)
    cfg.rules.watchdog = "1s"
    H.write(dir .. "/rules/boom.lua", "while true do end\n")
    local t0 = H.now_ms()
    local w = H.start_sluice(dir, "loadloop0", cfg, { wait_assigned = false })
    local rc = w:wait(8)
    assert.are.equal(1, rc, "exit 1; stderr:\n" .. w:stderr())
    assert.is_true(H.now_ms() - t0 < 5000, "within about rules.watchdog")
    assert.is_truthy(w:stderr():find("module boom: loading ran past rules.watchdog", 1, true),
      "the error names the module: " .. w:stderr())
    w:stop(1)
  end)
end)

describe("a watchdog restart", function()
  it("skips a restore record the rule hangs on, dead-letters the live one once, and stays up", function()
    local j = job("wdloop")
    local rules = dir .. "/rules"
    os.execute("mkdir -p " .. q(rules))
    local rule = [[
return { spin = function(ctx)
  if type(ctx.input) == "table" and ctx.input.hang and %s then while true do end end
  ctx.user = type(ctx.input) == "table" and ctx.input.user or "nobody"
  return ctx
end }
]]
    H.write(rules .. "/spin.lua", rule:format("false"))
    local cfg = H.pipeline_config(j)
    -- canary_last = 0: the reload's canary would refuse the hanging rule
    -- (it hangs on R, which the old rule handled); here it must go in.
    cfg.rules = { path = rules, budget = "200ms", watchdog = "2s", state_dir = j.state_dir,
      canary_last = 0 }
    cfg.shutdown_timeout = "2s"
    cfg.pipeline = { { lua = "spin" },
      { name = "window", window = { key = "user", length = "5m", aggregate = { n = { "count", "user" } } } },
      { name = "out", kafka = { topic = j.output, fields = { "user", "window" } } } }
    local w = H.start_sluice(dir, "wd1", cfg, { admin_port = j.admin_port })
    -- R: a record the rule will hang on, processed and committed by the old rule.
    H.produce(brokers, j.input, { { key = "u", value = '{"user":"u","hang":"R"}' } })
    assert.are.equal(1, #H.wait_records(brokers, j.output, 1, 20), "R went through the old rule")
    H.sleep(2.5)   -- offsets are committed every second
    H.write(rules .. "/spin.lua", rule:format("true"))
    local from = #w:stderr() + 1
    w:signal("HUP")
    assert.is_truthy(w:wait_log("rules reloaded", 10, from), "the new rule is deployed")
    -- X: a new record the new rule hangs on: the watchdog ends the process.
    H.produce(brokers, j.input, { { key = "u", value = '{"user":"u","hang":"X"}' } })
    assert.are.equal(70, w:wait(15), "the watchdog exits 70; stderr:\n" .. w:stderr():sub(from))

    -- A supervisor: restart on 70, at most 4 times.
    local restarts, last = 0, nil
    for i = 1, 4 do
      restarts = i
      last = H.start_sluice(dir, "wd" .. (i + 1), cfg, { timeout = 40 })
      local rc = last:wait(12)
      if rc == nil then break end
      assert.are.equal(70, rc, "only the watchdog ends a restart; stderr:\n" .. last:stderr())
    end
    assert.are.equal(1, restarts, "one restart and it stays up; last stderr:\n" .. last:stderr())
    local dl = H.settle(brokers, j.dead_letter, 2, 10)
    assert.are.equal(1, #dl, "one dead letter")
    assert.is_truthy(dl[1].value:find('\\"hang\\":\\"X\\"', 1, false), "of X: " .. dl[1].value)
    local m = H.metrics(j.admin_port)
    assert.are.equal(1, H.metric(m, 'sluice_restore_skipped_total{reason="error"}'),
      "the restore record R is skipped and counted:\n" .. m)
    H.produce(brokers, j.input, { { key = "u", value = '{"user":"u"}' } })
    local out = H.wait_records(brokers, j.output, 2, 15)
    assert.are.equal(2, #out, "records flow after the restart")
    assert.are.equal(0, last:stop(10), "exit 0 on SIGTERM")
  end)
end)

-- The time of a log line ("2026-11-30T20:19:31.658Z ...") in ms of the day.
local function log_ms(line)
  local h, m, sec = line:match("T(%d+):(%d+):([%d.]+)Z")
  return ((tonumber(h) * 60 + tonumber(m)) * 60 + tonumber(sec)) * 1000
end

describe("the log of a restart", function()
  it("says window state restored when the restore ends and stopped when the process ends", function()
    local j = job("truelog")
    local w = start_window_job(j, "truelog1")
    local now = H.now_ms()
    local views = {}
    for i = 1, 6 do views[i] = H.page_view(i, { dtm = now - 1000 + i }) end
    H.produce(brokers, j.input, views)
    assert.are.equal(6, #H.wait_records(brokers, j.output, 6, 20), "six views flowed")
    H.sleep(2.5)   -- committed
    w:signal("TERM")
    local gone
    H.wait_for(function()
      if w:status() then gone = gone or H.sh("date -u +%H:%M:%S.%3N") return true end
    end, 15, 0.02)
    assert.are.equal(0, w:status(), "exit 0")
    local stopped = w:stderr():match("([^\n]*worker: stopped %(exit 0%))")
    assert.is_truthy(stopped, "logs stopped:\n" .. w:stderr())
    local lag = log_ms("T" .. gone:gsub("%s", "") .. "Z") - log_ms(stopped)
    print("# stop lag " .. lag .. " ms")
    assert.is_true(lag < 400, string.format("stopped is logged when the process ends, not %d ms "
      .. "before:\n%s", lag, w:stderr()))

    local w2 = start_window_job(j, "truelog2")
    local restoring = w2:wait_log("restoring window state", 10)
    assert.is_truthy(restoring, "the restart restores windows:\n" .. w2:stderr())
    assert.is_truthy(w2:wait_log("window state restored", 5),
      "and says so once done, with no new record:\n" .. w2:stderr())
    assert.are.equal(0, w2:stop(10), "exit 0")
  end)
end)

describe("an idle worker", function()
  it("stays in its group past max.poll.interval.ms and takes records after the quiet spell", function()
    local j = job("idle")
    local cfg = H.pipeline_config(j)
    -- librdkafka wants max.poll.interval.ms >= session.timeout.ms.
    cfg.kafka.consumer = { ["session.timeout.ms"] = "6000", ["heartbeat.interval.ms"] = "1000",
      ["max.poll.interval.ms"] = "7000" }
    local w = H.start_sluice(dir, "idle", cfg, { admin_port = j.admin_port })
    H.produce(brokers, j.input, { H.page_view(1) })
    assert.are.equal(1, #H.wait_records(brokers, j.output, 1), "the first record flowed")
    local mark = #w:stderr()

    H.sleep(12)   -- nothing arrives for longer than max.poll.interval.ms

    local quiet = w:stderr():sub(mark + 1)
    for _, bad in ipairs({ "maximum poll interval", "leaving group", "revoking", "assigned" }) do
      assert.is_nil(quiet:lower():find(bad, 1, true),
        "nothing about the group while idle, but the log says '" .. bad .. "':\n" .. quiet)
    end
    H.produce(brokers, j.input, { H.page_view(2) })
    local recs = H.wait_records(brokers, j.output, 2, 5)
    assert.are.equal(2, #recs, "the record after the quiet spell flowed within 5 s")
    assert.are.equal(0, w:stop(10), "exit 0 on SIGTERM")
  end)
end)
