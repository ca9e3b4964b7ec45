-- reload_spec.lua -- SIGHUP while records flow through `sluice run`.
--
-- The worker runs extract (the shipped rules, copied to a temporary rules
-- folder) then itest.tag, which sets the variable `tag`, then a kafka step
-- that writes userId, eventId and tag. The specs rewrite tag.lua in that
-- folder and send SIGHUP: later records carry the new tag, none is lost or
-- written twice, and a rule that does not compile leaves the old one in
-- place with file:line in the log.

local H = dofile("spec/integration/helpers.lua")

local dir, brokers, broker, worker, rules, n, cfgpath
local next_id = 100000

-- n new page views with fresh ids.
local function views(count)
  next_id = next_id + count
  return H.page_views(next_id - count + 1, count)
end

-- Rewrites itest/tag.lua to set tag = value (or to src when given), in one
-- rename, as an editor saving the file.
local function set_rule(value, src)
  src = src or string.format([[
local M = {}
function M.tag(ctx)
  ctx.tag = %q
  return ctx
end
return M
]], value)
  H.save(rules .. "/itest/tag.lua", src)
end

-- Sink records by eventId: {eid = {record, ...}}.
local function sink()
  local out = {}
  for _, r in ipairs(H.records(brokers, n.output)) do
    local eid = r.json and r.json.eventId
    if eid then
      out[eid] = out[eid] or {}
      table.insert(out[eid], r)
    end
  end
  return out
end

-- Waits until every view of `list` is on the sink; returns the sink.
local function wait_all(list, timeout)
  local s
  H.wait_for(function()
    s = sink()
    for _, v in ipairs(list) do if not s[v.eid] then return false end end
    return true
  end, timeout or 30, 0.3)
  return s
end

local function missing(s, list)
  local m = {}
  for _, v in ipairs(list) do if not s[v.eid] then m[#m + 1] = v.eid end end
  return #m .. " missing" .. (#m > 0 and (", e.g. " .. m[1]) or "")
end

local function hup_and_wait(pattern)
  local from = #worker:stderr() + 1
  worker:signal("HUP")
  return worker:wait_log(pattern, 10, from), from
end

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
  rules = H.copy_rules(dir)
  os.execute("cp -r spec/integration/fixtures/rules/itest " .. H.q(rules .. "/"))
  n = {
    brokers = brokers, input = H.unique("reload-in"), output = H.unique("reload-out"),
    dead_letter = H.unique("reload-dlq"), group = H.unique("reload-g"),
    admin_port = H.free_port(), rules = rules, state_dir = dir .. "/state",
    fields = { "userId", "eventId", "tag" },
  }
  local cfg = H.pipeline_config(n)
  table.insert(cfg.pipeline, 2, { lua = "itest.tag" })
  worker = H.start_sluice(dir, "worker", cfg, { admin_port = n.admin_port })
  cfgpath = worker.config
end)

lazy_teardown(function() H.stop_all(worker, broker, dir) end)

describe("reload", function()
  local all = {}       -- every view produced so far
  local version        -- the rules version now in use

  it("SIGHUP mid-stream changes the output from then on, losing and repeating nothing", function()
    version = worker:stderr():match("rules version (%x+)")
    assert.is_truthy(version, "the worker logs its rules version")
    -- a producer in the background while the rule changes
    local first = views(3000)
    local producer = H.produce_slowly(dir, "producer", brokers, n.input, first)
    H.wait_for(function() return next(sink()) ~= nil end, 20, 0.05)
    local before = sink()      -- records written before the reload: old tag for sure
    set_rule("v2")
    local new, from = hup_and_wait("rules reloaded: version (%x+) %(was (%x+)%)")
    assert.is_truthy(new, "the worker logs the reload:\n" .. worker:stderr():sub(from))
    local was = worker:stderr():sub(from):match("%(was (%x+)%)")
    assert.are.equal(version, was, "the log names the version replaced")
    assert.are_not.equal(version, new, "the version changed with the rule")
    version = new
    assert.are.equal(0, producer:wait(60), "kcat produced the first batch: " .. producer:stderr())
    local second = views(400)
    H.produce(brokers, n.input, second)
    for _, v in ipairs(first) do all[#all + 1] = v end
    for _, v in ipairs(second) do all[#all + 1] = v end
    wait_all(all)
    H.sleep(1)
    local s = sink()
    local dups, v1, v2 = 0, 0, 0
    for _, v in ipairs(all) do
      assert.is_truthy(s[v.eid], "every record reaches the sink: " .. missing(s, all))
      if #s[v.eid] > 1 then dups = dups + 1 end
    end
    assert.are.equal(0, dups, "no record is written twice by a reload")
    for _, v in ipairs(first) do
      local tag = s[v.eid][1].json.tag
      if before[v.eid] then
        assert.are.equal("v1", tag, "a record written before SIGHUP had the old rule")
      end
      if tag == "v1" then v1 = v1 + 1 elseif tag == "v2" then v2 = v2 + 1 end
    end
    assert.are.equal(#first, v1 + v2, "records of the first batch carry v1 or v2")
    for _, v in ipairs(second) do
      assert.are.equal("v2", s[v.eid][1].json.tag, "records produced after the reload use the new rule")
    end
    -- per visitor, in sink order: once v2, never v1 again
    local per_key = {}
    local recs = H.records(brokers, n.output)
    for _, r in ipairs(recs) do
      local tag = r.json and r.json.tag
      local k = r.key
      if per_key[k] == "v2" and tag == "v1" then
        error("visitor " .. k .. " got a v1 record after a v2 record (partition "
          .. r.partition .. " offset " .. r.offset .. ")")
      end
      per_key[k] = tag
    end
    print(string.format("# first batch: %d with v1, %d with v2 (%d on the sink before SIGHUP)",
      v1, v2, (function() local c = 0 for _ in pairs(before) do c = c + 1 end return c end)()))
  end)

  it("a rule that does not compile keeps the old one, logs file:line and counts the failure", function()
    set_rule(nil, "local M = {}\nfunction M.tag(ctx)\n  ctx.tag = 'v3'\n  return ctx\nend end\nreturn M\n")
    local failed, from = hup_and_wait("reload failed, keeping rules version (%x+): ([^\n]*)")
    assert.is_truthy(failed, "the log says the reload failed:\n" .. worker:stderr():sub(from))
    -- the message may go on over the next lines, up to the next log line
    local line = worker:stderr():sub(from):match("reload failed.-\n%d%d%d%d%-")
      or worker:stderr():sub(from):match("reload failed.*")
    assert.are.equal(version, failed, "the log names the version kept")
    assert.matches("tag%.lua:5:", line, "the log names file:line of the error")
    assert.is_true(worker:alive())
    local text = H.metrics(n.admin_port)
    assert.are.equal(1, H.metric(text, 'sluice_reloads_total{result="error"}'),
      "the failed reload is counted")
    local more = views(50)
    H.produce(brokers, n.input, more)
    local s = wait_all(more)
    for _, v in ipairs(more) do
      assert.is_truthy(s[v.eid], "the stream goes on: " .. missing(s, more))
      assert.are.equal(1, #s[v.eid])
      assert.are.equal("v2", s[v.eid][1].json.tag, "the old rule stays in use")
    end
    for _, v in ipairs(more) do all[#all + 1] = v end
  end)

  it("a burst of SIGHUPs does not lose the last change", function()
    local from = #worker:stderr() + 1
    for i, tag in ipairs({ "v4", "v5", "v6", "v7" }) do
      set_rule(tag)
      worker:signal("HUP")
      if i < 4 then H.sleep(0.05) end
    end
    -- the last reload that reports names the version `sluice check` computes
    local rc, out, err = H.run(string.format("%s check -c %s", H.q(H.BIN), H.q(cfgpath)))
    assert.are.equal(0, rc, "sluice check on the final rules: " .. out .. err)
    local want = (out .. err):match("(%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x)")
    assert.is_truthy(want, "sluice check prints the rules version: " .. out .. err)
    local got = H.wait_for(function()
      local last
      for v in worker:stderr():sub(from):gmatch("rules reloaded: version (%x+)") do last = v end
      return last == want and last
    end, 10)
    assert.are.equal(want, got, "the last reload logged is the final rule's version:\n"
      .. worker:stderr():sub(from))
    assert.is_nil(worker:stderr():sub(from):find("reload failed", 1, true), "no reload failed")
    local more = views(50)
    H.produce(brokers, n.input, more)
    local s = wait_all(more)
    for _, v in ipairs(more) do
      assert.is_truthy(s[v.eid], "records after the burst reach the sink: " .. missing(s, more))
      assert.are.equal("v7", s[v.eid][1].json.tag, "records after the burst use the last change")
    end
    for _, v in ipairs(more) do all[#all + 1] = v end
    -- nothing lost or repeated over the whole run
    s = sink()
    local dups = 0
    for _, v in ipairs(all) do
      assert.is_truthy(s[v.eid], "over the whole run: " .. missing(s, all))
      if #s[v.eid] ~= 1 then dups = dups + 1 end
    end
    assert.are.equal(0, dups, "over the whole run, no record written twice")
    assert.are.equal(0, #H.records(brokers, n.dead_letter), "no dead letter")
  end)
end)
