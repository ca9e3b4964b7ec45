-- window_spec.lua -- the window step of the recommendations job through
-- `sluice run`, as Kafka sees it.
--
-- 1. Emission semantics: a visitor's views give growing lists, oldest first;
--    an event the tracker re-sent (real captures) is emitted once and counted
--    as a duplicate; an out-of-order view is placed by its time; a view older
--    than the window is dropped and counted; the window gauges on /metrics.
-- 2. kill -9 mid-stream, restart on the same group: the restarted worker
--    rebuilds window state from Kafka, so every window it emits (re-emissions
--    of the records after the last commit included) equals the window that
--    an uninterrupted run emits for the same event.
-- 3. Two workers in one group, started and stopped mid-stream (two
--    rebalances): the windows emitted for every event equal those of the
--    uninterrupted run.
--
-- The uninterrupted run is `sluice test` over the same input in order (one
-- process, every key in one window: windows are per key, and one key lives
-- in one partition). Workers run spec/integration/fixtures/window-job.lua
-- with names and ports from the environment; in embedded mode a
-- `sluice broker --partitions 4` process per file stands in for Kafka.

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local CONFIG = "spec/integration/fixtures/window-job.lua"
local q = H.q

local dir, brokers, broker

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

lazy_teardown(function()
  if broker then broker:stop() end
  -- WINDOW_SPEC_KEEP=1 keeps the logs and inputs for a look after a failure.
  if os.getenv("WINDOW_SPEC_KEEP") == "1" then print("# kept " .. dir) else H.rmrf(dir) end
end)

-- Topics and group of one job.
local function job(prefix)
  return {
    input = H.unique(prefix .. "-in"), output = H.unique(prefix .. "-out"),
    dead_letter = H.unique(prefix .. "-dlq"), group = H.unique(prefix .. "-g"),
  }
end

-- Starts a worker of job j (window-job.lua) with its own admin port and
-- state folder; waits until it has partitions and answers /health.
local function start_worker(j, name, opts)
  opts = opts or {}
  H.create_topic(brokers, j.input)
  local port = H.free_port()
  local env = string.format("env KAFKA_BROKERS=%s SLUICE_GROUP=%s WINDOW_INPUT=%s WINDOW_OUTPUT=%s "
    .. "WINDOW_DEAD_LETTER=%s ADMIN_LISTEN=127.0.0.1:%d SLUICE_STATE_DIR=%s ",
    q(brokers), q(j.group), q(j.input), q(j.output), q(j.dead_letter), port,
    q(dir .. "/state-" .. name))
  local p = H.start_sluice(dir, name, CONFIG, { env = env, admin_port = port,
    timeout = opts.timeout or 60 })
  p.admin_port = port
  return p
end

-- aggregatedProducts as one comparable string.
local function canon(agg)
  if type(agg) ~= "table" then return "no aggregatedProducts: " .. tostring(agg) end
  local s, t = {}, {}
  for i, v in ipairs(type(agg.slugs) == "table" and agg.slugs or {}) do s[i] = tostring(v) end
  for i, v in ipairs(type(agg.viewTimestamps) == "table" and agg.viewTimestamps or {}) do
    t[i] = type(v) == "number" and string.format("%d", v) or tostring(v)
  end
  return "slugs=" .. table.concat(s, ",") .. " viewTimestamps=" .. table.concat(t, ",")
end

-- The emissions on a sink topic: eventId -> list of canon() strings, in the
-- order they were produced (one key, so one partition), and their count.
local function emissions(topic)
  local by, n = {}, 0
  for _, r in ipairs(H.records(brokers, topic)) do
    local v = r.json
    if v and v.eventId then
      by[v.eventId] = by[v.eventId] or {}
      table.insert(by[v.eventId], canon(v.aggregatedProducts))
      n = n + 1
    end
  end
  return by, n
end

-- The uninterrupted run: `sluice test` over lines (key<TAB>value, in order);
-- eventId -> canon() of the window it emits, and the number of emissions.
local function reference(lines, name)
  local values = {}
  for i, l in ipairs(lines) do values[i] = l:match("^[^\t]*\t(.*)$") end
  local file = dir .. "/" .. name .. ".jsonl"
  H.write(file, table.concat(values, "\n") .. "\n")
  local rc, out, err = H.run(string.format("%s test -c %s -i %s", q(H.BIN), q(CONFIG), q(file)))
  assert(rc == 0, "sluice test failed: " .. err)
  local ref, n = {}, 0
  for line in out:gmatch("[^\n]+") do
    local ok, l = pcall(cjson.decode, line)
    if ok and type(l) == "table" and l.produce then
      local v = l.produce.value
      if type(v) == "string" then v = cjson.decode(v) end
      assert(not ref[v.eventId], "the reference emits " .. tostring(v.eventId) .. " twice")
      ref[v.eventId] = canon(v.aggregatedProducts)
      n = n + 1
    end
  end
  assert(n > 0, "the reference run emitted nothing")
  return ref, n
end

-- Compares every emission of the sink with the reference: returns a report
-- {missing, extra, wrong (emissions that differ), reemitted (events emitted
-- more than once), lastwrong (events whose last emission differs), example}.
local function compare(ref, got)
  local rep = { missing = 0, extra = 0, wrong = 0, reemitted = 0, lastwrong = 0 }
  for eid, want in pairs(ref) do
    local list = got[eid]
    if not list then
      rep.missing = rep.missing + 1
      rep.example = rep.example or ("missing " .. eid)
    else
      if #list > 1 then rep.reemitted = rep.reemitted + 1 end
      for i, c in ipairs(list) do
        if c ~= want then
          rep.wrong = rep.wrong + 1
          rep.example = rep.example or string.format("event %s, emission %d of %d:\n  got  %s\n  want %s",
            eid, i, #list, c:sub(1, 1200), want:sub(1, 1200))
        end
      end
      if list[#list] ~= want then rep.lastwrong = rep.lastwrong + 1 end
    end
  end
  for eid in pairs(got) do
    if not ref[eid] then
      rep.extra = rep.extra + 1
      rep.example = rep.example or ("not in the reference: " .. eid)
    end
  end
  return rep
end

-- Waits until every event of ref is on the sink (up to timeout seconds), then
-- until the sink is quiet for 2 s; returns emissions(topic).
local function wait_all(ref, topic, timeout)
  H.wait_for(function()
    local got = emissions(topic)
    for eid in pairs(ref) do if not got[eid] then return false end end
    return true
  end, timeout or 60, 0.5)
  H.settle(brokers, topic, 2, 20)
  return emissions(topic)
end

-- Collector records of scripts/gen-events.lua: "key<TAB>value" lines.
local function gen_events(n, visitors)
  local rc, out, err = H.run(string.format("KEYED=1 luajit scripts/gen-events.lua %d 10 %d", n, visitors))
  assert(rc == 0, "gen-events failed: " .. err)
  local lines = {}
  for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
  assert(#lines == n, "gen-events wrote " .. #lines .. " lines")
  return lines
end

local function as_recs(lines, from, to)
  local recs = {}
  for i = from, to do
    local k, v = lines[i]:match("^([^\t]*)\t(.*)$")
    recs[#recs + 1] = { key = k, value = v }
  end
  return recs
end

-- The restore lines of a worker's log: list of {partition, mode, from, until}.
local function restores(p)
  local out = {}
  for part, from, mode, untl in p:stderr():gmatch("/(%d+): restoring window state from offset "
      .. "(%d+) %(([%a ]+)%) up to the committed (%d+)") do
    out[#out + 1] = { partition = tonumber(part), mode = mode, from = tonumber(from),
      ["until"] = tonumber(untl) }
  end
  return out
end

-- The eventIds of the page views in the input records of partition `part`
-- at offsets [from, to).
local function input_eids(topic, part, from, to, into)
  into = into or {}
  for _, r in ipairs(H.records(brokers, topic)) do
    if r.partition == part and r.offset >= from and r.offset < to and r.json then
      local data = type(r.json.message) == "table" and r.json.message.data or {}
      for _, ev in ipairs(data) do if ev.eid then into[ev.eid] = true end end
    end
  end
  return into
end

local EXPECTED_MODE = H.embedded and "earliest" or "by time"

local function check_restores(p, what)
  local list = restores(p)
  assert.is_true(#list > 0, what .. " restored window state; stderr:\n" .. p:stderr())
  for _, r in ipairs(list) do
    assert.are.equal(EXPECTED_MODE, r.mode, what .. ": restore start found " .. EXPECTED_MODE)
    assert.is_true(r.from < r["until"], what .. ": restore range is not empty")
  end
  assert.is_truthy(H.wait_for(function()
    local _, n = p:stderr():gsub("window state restored", "")
    return n >= #list
  end, 30), what .. ": every restore ended (\"window state restored\"); stderr:\n" .. p:stderr())
  return list
end

local function summary(rep)
  return string.format("missing %d, extra %d, differing emissions %d, differing last emissions %d, "
    .. "re-emitted events %d%s", rep.missing, rep.extra, rep.wrong, rep.lastwrong, rep.reemitted,
    rep.example and ("; e.g. " .. rep.example) or "")
end

describe("window", function()
  local procs = {}
  after_each(function()
    for _, p in ipairs(procs) do p:stop(2) end
    procs = {}
  end)

  it("emits each view with its visitor's window, oldest first; drops duplicates and views "
    .. "older than the window", function()
    local j = job("wsem")
    local w = start_worker(j, "sem")
    procs[#procs + 1] = w

    -- A visitor whose views come in order, then one out of order, two older
    -- than the window (by more than its length, and by exactly its length),
    -- one just inside it, and one that pushes the oldest out.
    local U = "22222222-2222-4222-8222-000000000001"
    local T = 1795667600000
    local function view(id, dtm, slug)
      return H.page_view(id, { duid = U, dtm = dtm, slug = slug })
    end
    local seq = {
      view(910001, T, "a"),
      view(910002, T + 60000, "b"),
      view(910003, T + 120000, "c"),
      view(910004, T + 30000, "d"),            -- out of order: between a and b
      view(910005, T + 120000 - 360000, "e"),  -- 6 minutes before the newest: too old
      view(910006, T + 120000 - 300000, "f"),  -- exactly 5 minutes before: has left
      view(910007, T + 120000 - 299999, "g"),  -- 1 ms inside: the oldest
      view(910008, T + 300001, "h"),           -- g and a leave (t <= T + 1)
    }
    H.produce(brokers, j.input, seq)
    local function eid(id) return string.format("00000000-0000-4000-8000-%012d", id) end
    local function win(slugs, ts)
      local t = {}
      for i, d in ipairs(ts) do t[i] = T + d end
      return canon({ slugs = slugs, viewTimestamps = t })
    end
    local want = {
      { eid(910001), win({ "a" }, { 0 }) },
      { eid(910002), win({ "a", "b" }, { 0, 60000 }) },
      { eid(910003), win({ "a", "b", "c" }, { 0, 60000, 120000 }) },
      { eid(910004), win({ "a", "d", "b", "c" }, { 0, 30000, 60000, 120000 }) },
      { eid(910007), win({ "g", "a", "d", "b", "c" }, { -179999, 0, 30000, 60000, 120000 }) },
      { eid(910008), win({ "d", "b", "c", "h" }, { 30000, 60000, 120000, 300001 }) },
    }

    -- The real tracker's batched POSTs: 6 POSTs carry 9 product page views,
    -- 5 distinct (a view re-sent with the same eid and a new stm).
    local tracker = H.tracker_records("batch-bufferSize3.requests.jsonl")
    local tviews, seen, dups = {}, {}, 0
    for _, r in ipairs(tracker) do
      for _, ev in ipairs(r.events) do
        local slug = ev.url:match("/products/([^/?#]+)")
        if slug then
          if seen[ev.eid] then dups = dups + 1
          else
            seen[ev.eid] = true
            tviews[#tviews + 1] = { eid = ev.eid, slug = slug, dtm = tonumber(ev.dtm), duid = ev.duid }
          end
        end
      end
    end
    assert.are.equal(5, #tviews, "the capture has 5 distinct product views")
    assert.are.equal(4, dups, "the capture re-sends 4 product views")
    H.produce(brokers, j.input, tracker)
    local twant, slugs, ts = {}, {}, {}
    for i, v in ipairs(tviews) do
      slugs[i], ts[i] = v.slug, v.dtm
      twant[i] = { v.eid, canon({ slugs = { unpack(slugs) }, viewTimestamps = { unpack(ts) } }) }
    end

    H.wait_records(brokers, j.output, #want + #twant, 30)
    H.sleep(1.5) -- nothing more may come
    local recs = H.records(brokers, j.output)
    local byuser = {}
    for _, r in ipairs(recs) do
      local v = r.json or {}
      assert.are.equal(r.key, v.userId, "the sink record is keyed by userId")
      byuser[v.userId] = byuser[v.userId] or {}
      table.insert(byuser[v.userId], { v.eventId, canon(v.aggregatedProducts) })
    end
    assert.are.same(want, byuser[U], "the synthetic visitor's windows")
    assert.are.same(twant, byuser[tviews[1].duid], "the tracker visitor's windows, each view once")
    assert.are.equal(#want + #twant, #recs, "no other sink record")

    -- The gauges follow within a second or so (a timer updates them).
    local text
    H.wait_for(function()
      text = H.metrics(w.admin_port)
      return H.metric(text, 'sluice_window_keys{step="window"}') == 2
        and H.metric(text, 'sluice_window_entries{step="window"}') == 4 + 5
    end, 10, 0.2)
    assert.are.equal(dups, H.metric(text, 'sluice_filtered_total{step="window",reason="duplicate"}'),
      "re-sent views counted as duplicates")
    assert.are.equal(2, H.metric(text, 'sluice_filtered_total{step="window",reason="too_old"}'),
      "views older than the window counted as too_old")
    assert.are.equal(2, H.metric(text, 'sluice_window_keys{step="window"}'), "two visitors held")
    assert.are.equal(4 + 5, H.metric(text, 'sluice_window_entries{step="window"}'),
      "4 + 5 entries held")
    assert.is_true((H.metric(text, 'sluice_window_bytes{step="window"}') or 0) > 0, "window bytes")
    assert.are.equal(0, #H.records(brokers, j.dead_letter), "no dead letter")
  end)

  it("after kill -9 mid-stream, the restarted worker rebuilds the windows: every window "
    .. "emitted equals the uninterrupted run's", function()
    local t0 = H.now_ms()
    local j = job("wkill")
    -- 40 visitors with about 53 views each: the last windows reach max_entries (50).
    local lines = gen_events(1600, 40)
    local ref, nref = reference(lines, "kill-ref")
    local w1 = start_worker(j, "kill-1")
    procs[#procs + 1] = w1
    -- The first part takes about 8 s to produce: the worker commits (every
    -- second) a few times, then dies with records done but not committed.
    local producer = H.produce_slowly(dir, "kill-producer", brokers, j.input, as_recs(lines, 1, 1000), 20, 0.15)
    procs[#procs + 1] = producer
    local seen = H.wait_for(function()
      local _, n = emissions(j.output)
      return n >= 200 and n
    end, 60, 0.2)
    assert.is_truthy(seen, "output appeared before the kill")
    H.sleep(2.5)
    w1:signal("KILL")
    assert.are.equal(137, w1:wait(5), "kill -9 ended the worker")
    local _, at_kill = emissions(j.output)
    print(string.format("# killed with %d of %d emissions on the sink, producer %s", at_kill, nref,
      producer:alive() and "still producing" or "done"))
    assert.are.equal(0, producer:wait(60), "kcat produced the first part: " .. producer:stderr())

    local w2 = start_worker(j, "kill-2", { timeout = 60 })
    procs[#procs + 1] = w2
    local rs = check_restores(w2, "the restarted worker")
    H.produce(brokers, j.input, as_recs(lines, 1001, #lines))
    local got, n = wait_all(ref, j.output, 90)
    local rep = compare(ref, got)
    print(string.format("# %d emissions for %d events (%d re-emitted); %d partition(s) restored (%s); %.1f s",
      n, nref, rep.reemitted, #rs, rs[1].mode, (H.now_ms() - t0) / 1000))
    assert.are.equal(0, rep.missing + rep.extra + rep.wrong,
      "every window emitted equals the uninterrupted run's: " .. summary(rep)
      .. "\nstderr of the restart:\n" .. w2:stderr():sub(1, 4000))
    local text = H.metrics(w2.admin_port)
    assert.is_true((H.metric(text, "sluice_restored_records_total") or 0) > 0,
      "sluice_restored_records_total counts the replayed records")
    -- The records up to the committed offsets rebuilt the windows and were
    -- not emitted again; the restarted worker replayed exactly those.
    local committed, replayed = {}, 0
    for _, r in ipairs(rs) do
      input_eids(j.input, r.partition, 0, r["until"], committed)
      replayed = replayed + (r["until"] - r.from)
    end
    local ncommitted, twice = 0, {}
    for eid in pairs(committed) do
      if ref[eid] then
        ncommitted = ncommitted + 1
        if #got[eid] > 1 then twice[#twice + 1] = eid end
      end
    end
    assert.is_true(ncommitted > 0, "the killed worker had committed some views before the kill")
    assert.are.equal(0, #twice, string.format("%d of the %d views below the committed offsets were "
      .. "emitted again after the restart (e.g. %s)", #twice, ncommitted, tostring(twice[1])))
    assert.are.equal(replayed, H.metric(text, "sluice_restored_records_total"),
      "sluice_restored_records_total counts the records from the restore start to the committed offset")
    assert.are.equal(0, #H.records(brokers, j.dead_letter), "no dead letter")
  end)

  it("with two workers joining and leaving one group mid-stream, every window emitted "
    .. "equals the uninterrupted run's", function()
    local t0 = H.now_ms()
    local j = job("wreb")
    local lines = gen_events(2400, 120)
    local ref, nref = reference(lines, "reb-ref")
    local a = start_worker(j, "reb-a")
    procs[#procs + 1] = a
    -- About 24 s of input: both rebalances happen while it flows.
    local producer = H.produce_slowly(dir, "reb-producer", brokers, j.input, as_recs(lines, 1, #lines), 40, 0.4)
    procs[#procs + 1] = producer
    assert.is_truthy(H.wait_for(function()
      local _, n = emissions(j.output)
      return n >= 400
    end, 60, 0.2), "worker A emitted before B joined")
    local b = start_worker(j, "reb-b")
    procs[#procs + 1] = b
    local _, at_join = emissions(j.output)
    -- B's start waits for its partitions while A goes on: on a loaded machine
    -- A may be far along by then, so half of what is left is enough.
    local want = at_join + math.min(600, math.floor((nref - at_join) / 2))
    local last
    assert.is_truthy(H.wait_for(function()
      _, last = emissions(j.output)
      return last >= want
    end, 60, 0.2), string.format("the workers emitted after B joined: %d at the join, %d of %d "
      .. "wanted within 60 s", at_join, last or 0, want))
    local _, at_stop = emissions(j.output)
    a:signal("TERM")
    assert.are.equal(0, a:wait(10), "worker A stopped cleanly on SIGTERM; stderr:\n" .. a:stderr())
    local mid = producer:alive()
    print(string.format("# B joined at %d, A stopped at %d of %d emissions, producer %s", at_join,
      at_stop, nref, mid and "still producing" or "done"))
    assert.is_true(mid, "A stopped while the input still flowed")
    assert.are.equal(0, producer:wait(60), "kcat produced every record: " .. producer:stderr())
    local got, n = wait_all(ref, j.output, 90)
    local rep = compare(ref, got)
    local rs = check_restores(b, "worker B")
    local ra = restores(a)
    print(string.format("# %d emissions for %d events (%d re-emitted); restores: A %d, B %d (%s); %.1f s",
      n, nref, rep.reemitted, #ra, #rs, rs[1].mode, (H.now_ms() - t0) / 1000))
    assert.are.equal(0, rep.missing + rep.extra + rep.wrong,
      "every window emitted equals the uninterrupted run's: " .. summary(rep)
      .. "\nstderr of B:\n" .. b:stderr():sub(1, 4000))
    assert.is_true((H.metric(H.metrics(b.admin_port), "sluice_restored_records_total") or 0) > 0,
      "B replayed records to rebuild the windows it took over")
    assert.are.equal(0, #H.records(brokers, j.dead_letter), "no dead letter")
  end)
end)
