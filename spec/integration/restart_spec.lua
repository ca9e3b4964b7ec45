-- restart_spec.lua -- a worker stopped mid-stream, then started again.
--
-- kill -9 loses nothing (at least once: every record reaches the sink, some
-- maybe twice); SIGTERM finishes what is in flight, commits, exits 0 within
-- shutdown_timeout, and the next run repeats nothing. The broker outlives the
-- worker: a `sluice broker` process in embedded mode, or the real Kafka.

local H = dofile("spec/integration/helpers.lua")

local dir, brokers, broker

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

lazy_teardown(function()
  if broker then broker:stop() end
  H.rmrf(dir)
end)

-- count page views with ids from base+1 on.
local function views(base, count) return H.page_views(base + 1, count) end

local function job(prefix)
  local n = {
    brokers = brokers, input = H.unique(prefix .. "-in"), output = H.unique(prefix .. "-out"),
    dead_letter = H.unique(prefix .. "-dlq"), group = H.unique(prefix .. "-g"),
    admin_port = H.free_port(), state_dir = dir .. "/" .. H.unique("state"),
    shutdown_timeout = "5s",
  }
  return n, H.pipeline_config(n)
end

-- eventId -> number of sink records.
local function counts(n)
  local c, total = {}, 0
  for _, r in ipairs(H.records(brokers, n.output)) do
    local eid = r.json and r.json.eventId
    if eid then c[eid] = (c[eid] or 0) + 1; total = total + 1 end
  end
  return c, total
end

-- Waits until every record of list is on the sink; returns counts, total.
local function wait_all(n, list, timeout)
  local c, total
  H.wait_for(function()
    c, total = counts(n)
    for _, v in ipairs(list) do if not c[v.eid] then return false end end
    return true
  end, timeout or 60, 0.5)
  return c, total
end

local function missing(c, list)
  local m = {}
  for _, v in ipairs(list) do if not c[v.eid] then m[#m + 1] = v.eid end end
  return #m, m[1]
end

describe("restart", function()
  local procs = {}
  after_each(function()
    for _, p in ipairs(procs) do p:stop(2) end
    procs = {}
  end)

  it("after kill -9 mid-stream, a restarted worker delivers every record at least once", function()
    local n, cfg = job("kill9")
    local w1 = H.start_sluice(dir, "kill9-1", cfg, { admin_port = n.admin_port })
    procs[#procs + 1] = w1
    local input = views(200000, 2000)
    local producer = H.produce_slowly(dir, "kill9-producer", brokers, n.input, input, 100, 0.1)
    procs[#procs + 1] = producer
    local seen = H.wait_for(function()
      local _, total = counts(n)
      return total >= 300 and total
    end, 30, 0.1)
    assert.is_truthy(seen, "output appeared before the kill")
    w1:signal("KILL")
    assert.are.equal(137, w1:wait(5), "kill -9 ended the worker")
    local _, at_kill = counts(n)
    print(string.format("# killed with %d of %d records on the sink, producer %s", at_kill, #input,
      producer:alive() and "still producing" or "done"))
    assert.is_true(at_kill < #input, "the kill happened mid-stream")
    local w2 = H.start_sluice(dir, "kill9-2", cfg, { admin_port = n.admin_port, timeout = 60 })
    procs[#procs + 1] = w2
    assert.are.equal(0, producer:wait(60), "kcat produced every record: " .. producer:stderr())
    local c, total = wait_all(n, input, 60)
    local nmiss, example = missing(c, input)
    assert.are.equal(0, nmiss, "every record reaches the sink after the restart; missing e.g. "
      .. tostring(example) .. "\nstderr of the restart:\n" .. w2:stderr())
    print(string.format("# %d sink records for %d inputs (%d duplicates)", total, #input, total - #input))
    assert.are.equal(0, #H.records(brokers, n.dead_letter), "no dead letter")
  end)

  it("on SIGTERM exits 0 within shutdown_timeout, and a restart repeats nothing", function()
    local n, cfg = job("term")
    local w1 = H.start_sluice(dir, "term-1", cfg, { admin_port = n.admin_port })
    procs[#procs + 1] = w1
    local input = views(300000, 4000)
    local producer = H.produce_slowly(dir, "term-producer", brokers, n.input, input, 100, 0.1)
    procs[#procs + 1] = producer
    assert.is_truthy(H.wait_for(function()
      local _, total = counts(n)
      return total >= 200
    end, 30, 0.1), "output appeared before SIGTERM")
    local t0 = H.now_ms()
    w1:signal("TERM")
    local rc = w1:wait(8)
    local took = H.now_ms() - t0
    assert.are.equal(0, rc, "SIGTERM: exit 0 within shutdown_timeout (5 s) + 3 s; stderr:\n" .. w1:stderr())
    assert.is_true(took <= 5000 + 1000, "stopped within shutdown_timeout, took " .. took .. " ms")
    assert.matches("stopped %(exit 0%)", w1:stderr())
    local _, at_stop = counts(n)
    print(string.format("# stopped in %d ms with %d of %d records on the sink, producer %s", took,
      at_stop, #input, producer:alive() and "still producing" or "done"))
    assert.is_true(at_stop < #input, "the stop happened mid-stream")
    local w2 = H.start_sluice(dir, "term-2", cfg, { admin_port = n.admin_port })
    procs[#procs + 1] = w2
    assert.are.equal(0, producer:wait(60), "kcat produced every record: " .. producer:stderr())
    local c = wait_all(n, input, 60)
    local nmiss, example = missing(c, input)
    assert.are.equal(0, nmiss, "every record reaches the sink after the restart; missing e.g. "
      .. tostring(example))
    H.sleep(1)
    local total
    c, total = counts(n)
    local dups = {}
    for eid, k in pairs(c) do if k > 1 then dups[#dups + 1] = eid end end
    assert.are.equal(0, #dups, string.format(
      "after a clean SIGTERM nothing is delivered twice: %d records on the sink twice (e.g. %s), %d at stop",
      #dups, tostring(dups[1]), at_stop))
    assert.are.equal(#input, total)
  end)
end)
