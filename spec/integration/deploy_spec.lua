-- deploy_spec.lua -- deploys that cannot silently break the stream.
--
-- The worker runs extract (the shipped rules, copied to a temporary folder),
-- deploy.tag (sets `tag` from its params and the rule's own suffix) and a
-- kafka step writing userId, eventId and tag. Before a SIGHUP swaps the
-- rules in, they run over the config's rules.canary file and the last input
-- records; a rule that raises or filters far more is refused, the old rules
-- keep running and nothing is dead-lettered. SIGHUP also reads the config
-- again: a params change takes effect, a brokers change is refused naming
-- the key. `sluice check --against` runs the same comparison offline, and
-- `sluice test --emit-spec` writes a busted spec that passes.

local H = dofile("spec/integration/helpers.lua")

local dir, brokers, broker, worker, rules, n, cfg, canary
local next_id = 300000
local CANARY_LINES = 6

local function views(count)
  next_id = next_id + count
  return H.page_views(next_id - count + 1, count)
end

-- The deploy.tag rule: tag = params.tag .. body (a Lua expression of ctx
-- and params), or src as a whole; saved in one rename, as an editor does.
local function set_rule(suffix, src)
  src = src or string.format([[
local M = {}
function M.tag(ctx, params)
  ctx.tag = params.tag .. %s
  return ctx
end
return M
]], suffix)
  H.save(rules .. "/deploy/tag.lua", src)
end

-- Rewrites the worker's config (atomically).
local function write_config(c)
  H.write_config(worker.config .. ".new", c)
  assert(os.rename(worker.config .. ".new", worker.config))
end

-- The sink records of job names (default n) by eventId.
local function sink(names)
  local out = {}
  for _, r in ipairs(H.records(brokers, (names or n).output)) do
    local eid = r.json and r.json.eventId
    if eid then out[eid] = r.json end
  end
  return out
end

-- Produces count views to the job of names (default n, run by w, default
-- worker) and waits until all reached its sink; returns them and the sink.
local function deliver(count, names, w)
  names, w = names or n, w or worker
  local list = views(count)
  H.produce(brokers, names.input, list)
  local s
  local ok = H.wait_for(function()
    s = sink(names)
    for _, v in ipairs(list) do if not s[v.eid] then return false end end
    return true
  end, 30, 0.3)
  assert.is_truthy(ok, "every record reaches the sink; stderr:\n" .. w:stderr())
  return list, s
end

-- Produces count views and waits until all reached the sink; returns the
-- tags they carry ({tag = count}).
local function send(count)
  local list, s = deliver(count)
  local tags = {}
  for _, v in ipairs(list) do
    local t = s[v.eid].tag
    tags[t] = (tags[t] or 0) + 1
  end
  return tags
end

local function hup(pattern)
  local from = #worker:stderr() + 1
  worker:signal("HUP")
  local got = worker:wait_log(pattern, 15, from)
  return got, worker:stderr():sub(from)
end

local function reloads(result)
  return H.metric(H.metrics(n.admin_port), 'sluice_reloads_total{result="' .. result .. '"}')
end

local function dead_letters() return #H.records(brokers, n.dead_letter) end

lazy_setup(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
  rules = H.copy_rules(dir)
  os.execute("mkdir -p " .. H.q(rules .. "/deploy"))
  n = H.job_names("deploy", brokers, dir)
  n.rules = rules
  n.fields = { "userId", "eventId", "tag" }
  canary = dir .. "/canary.jsonl"
  local lines = {}
  for _, v in ipairs(views(CANARY_LINES)) do lines[#lines + 1] = v.value end
  H.write(canary, table.concat(lines, "\n") .. "\n")
  set_rule('"-v1"')
  cfg = H.pipeline_config(n)
  table.insert(cfg.pipeline, 2, { lua = "deploy.tag", params = { tag = "p1" } })
  cfg.rules.canary = canary
  cfg.rules.canary_last = 50
  worker = H.start_sluice(dir, "worker", cfg, { admin_port = n.admin_port })
end)

lazy_teardown(function() H.stop_all(worker, broker, dir) end)

describe("deploy", function()
  it("the stream runs with the first rules", function()
    assert.are.same({ ["p1-v1"] = 20 }, send(20))
    assert.are.equal(0, reloads("refused"), "sluice_reloads_total{result=refused} exists at 0")
  end)

  it("a rule that fails on every record is refused: old rules go on, nothing dead-lettered", function()
    set_rule("helpr(ctx.userId)")      -- a misspelled helper: raises on every record
    local got, log = hup("reload refused: ([^\n]*)")
    assert.is_truthy(got, "the log says the reload was refused:\n" .. log)
    -- the canary file's 6 lines and the 20 records seen so far
    assert.matches("raise on 26 of 26 sample record%(s%) that the old rules handled", got)
    assert.matches("step tag: 26", got, 1, false)
    assert.matches("first: [^ ]*deploy/tag%.lua:3: .*helpr", got)
    assert.matches("%(record [^)]*canary%.jsonl:1%)", got)
    assert.is_nil(log:find("rules reloaded", 1, true), "no swap")
    assert.are.equal(1, reloads("refused"), "counted as refused")
    assert.are.equal(0, reloads("ok"))
    assert.are.same({ ["p1-v1"] = 20 }, send(20), "the old rules keep running")
    assert.are.equal(0, dead_letters(), "nothing dead-lettered")
    local _, status = H.http(n.admin_port, "GET", "/status")
    assert.matches('"reloads_refused":1', status)
    assert.matches('"last_reload_error":"refused: the new rules raise', status)
  end)

  it("a rule that filters every record is refused", function()
    set_rule(nil, "local M = {}\nfunction M.tag() return nil, 'not_today' end\nreturn M\n")
    local got, log = hup("reload refused: ([^\n]*)")
    assert.is_truthy(got, "the log says the reload was refused:\n" .. log)
    -- 6 canary lines + the last 40 records (canary_last 50 keeps them all)
    assert.matches("filter 46 of 46 sample record%(s%) that the old rules passed, more than the 5 allowed", got)
    assert.matches("step tag: 46 with reason not_today", got, 1, false)
    assert.are.equal(2, reloads("refused"))
    assert.are.same({ ["p1-v1"] = 10 }, send(10), "the old rules keep running")
    assert.are.equal(0, dead_letters(), "nothing dead-lettered")
  end)

  it("a good deploy goes through", function()
    set_rule('"-v2"')
    local got, log = hup("rules reloaded: version (%x+)")
    assert.is_truthy(got, "the rules were swapped:\n" .. log)
    -- 6 canary lines and the last 50 records (of 50 seen: canary_last is 50)
    assert.matches("canary: 56 sample record%(s%) %(6 from the canary file%): the new rules pass 56", log)
    assert.are.equal(1, reloads("ok"))
    assert.are.same({ ["p1-v2"] = 10 }, send(10), "records use the new rules")
  end)

  it("a params change takes effect on SIGHUP", function()
    cfg.pipeline[2].params.tag = "p2"
    write_config(cfg)
    local got, log = hup("rules reloaded: version (%x+)")
    assert.is_truthy(got, "the reload went through:\n" .. log)
    assert.are.equal(2, reloads("ok"))
    assert.are.same({ ["p2-v2"] = 10 }, send(10), "records use the new params")
  end)

  it("a brokers change is refused naming the key; config and rules stay", function()
    local changed = H.lua(cfg)
    cfg.kafka.brokers = "127.0.0.1:1"
    cfg.pipeline[2].params.tag = "p3"
    write_config(cfg)
    local got, log = hup("(reload refused: [^\n]*)")
    assert.is_truthy(got, "the reload was refused:\n" .. log)
    assert.matches("reload refused: kafka.brokers changed %(needs a restart%)", got)
    assert.is_nil(got:find("127.0.0.1:1", 1, true), "the log names the key, not its value")
    assert.are.equal(3, reloads("refused"))
    assert.are.same({ ["p2-v2"] = 10 }, send(10), "the old params stay with the old config")
    -- a step added is refused too
    cfg = assert(loadstring("return " .. changed))()
    cfg.pipeline[#cfg.pipeline + 1] = { lua = "deploy.tag", name = "again", params = { tag = "x" } }
    write_config(cfg)
    got = hup("(reload refused: [^\n]*)")
    assert.matches("reload refused: pipeline%[4%] added %(needs a restart%)", got)
    assert.are.equal(0, dead_letters(), "nothing dead-lettered over the whole run")
    assert.is_true(worker:alive())
  end)
end)

describe("deploy past a window step", function()
  -- extract, the window, deploy.late (reads the window's lists), a sink:
  -- records stop at the window, and deploy.late runs on contexts sampled as
  -- they left it.
  local w, wn, wcfg
  local LATE_OK = [[
local M = {}
function M.late(ctx)
  ctx.views = #ctx.aggregatedProducts.slugs
  return ctx
end
return M
]]

  local function late_rule(src) H.save(rules .. "/deploy/late.lua", src) end

  local function wsend(count) deliver(count, wn, w) end

  local function whup(pattern)
    local from = #w:stderr() + 1
    w:signal("HUP")
    return w:wait_log(pattern, 15, from), w:stderr():sub(from)
  end

  lazy_setup(function()
    late_rule(LATE_OK)
    wn = H.job_names("deploy-w", brokers, dir)
    wn.rules = rules
    wn.fields = { "userId", "eventId", "views" }
    wcfg = H.pipeline_config(wn)
    table.insert(wcfg.pipeline, 2, { name = "window", window = { key = "userId",
      time = "product.viewTimestamp", length = "5m",
      aggregate = { slugs = { "list", "product.slug" } }, as = "aggregatedProducts" } })
    table.insert(wcfg.pipeline, 3, { lua = "deploy.late" })
    wcfg.rules.canary_last = 50
    w = H.start_sluice(dir, "worker-w", wcfg, { admin_port = wn.admin_port })
  end)

  lazy_teardown(function() if w then w:stop() end end)

  it("refuses a rule after the window that raises on what the window made", function()
    wsend(20)
    late_rule(LATE_OK:gsub("#ctx%.aggregatedProducts%.slugs", "#ctx.aggregatedProducts.slug"))
    local got, log = whup("reload refused: ([^\n]*)")
    assert.is_truthy(got, "the log says the reload was refused:\n" .. log)
    assert.matches("raise on 20 of 40 sample record%(s%) that the old rules handled", got)
    assert.matches("step late: 20", got, 1, true)
    assert.matches("first: [^ ]*deploy/late%.lua:3: ", got)
    assert.matches("%(record [^)]* after step window%)", got)
    assert.is_nil(log:find("rules reloaded", 1, true), "no swap")
    wsend(5)
    assert.are.equal(0, #H.records(brokers, wn.dead_letter), "nothing dead-lettered")
  end)

  it("lets a good one in, saying the contexts sampled after the window ran it", function()
    late_rule(LATE_OK:gsub("ctx%.views = ", "ctx.views = 0 + "))
    local got, log = whup("canary: ([^\n]*)")
    assert.is_truthy(got, "the canary ran:\n" .. log)
    assert.matches("stopped at step window %(window%), which the canary does not run; %d+ "
      .. "context%(s%) sampled after such steps ran the 1 lua step%(s%) after it", got)
    assert.is_nil(got:find("not checked", 1, true), got)
    assert.truthy(w:wait_log("rules reloaded", 15))
  end)
end)

describe("sluice check --against", function()
  local cdir, events, config

  local function check(args)
    return H.run(string.format("%s check -c %s --against %s %s", H.q(H.BIN), H.q(config),
      H.q(events), args or ""))
  end

  local function set_extract(from, to)
    local path = cdir .. "/rules/recommendations/extract.lua"
    local src = H.read("lua/recommendations/extract.lua")
    local i, j = src:find(from, 1, true)
    assert(i, "extract.lua has " .. from)
    H.write(path, src:sub(1, i - 1) .. to .. src:sub(j + 1))
  end

  lazy_setup(function()
    cdir = H.mktemp()
    H.copy_rules(cdir)
    local lines = {}
    for i = 1, 30 do lines[i] = H.page_view(400000 + i).value end
    lines[#lines + 1] = '{"not":"a tracker record"}'
    events = cdir .. "/events.jsonl"
    H.write(events, table.concat(lines, "\n") .. "\n")
    config = H.write_config(cdir .. "/job.lua", H.pipeline_config({
      brokers = "embedded", input = "in", output = "out", rules = cdir .. "/rules" }))
  end)

  lazy_teardown(function() H.rmrf(cdir) end)

  it("exits 0 with the counts when the rules handle every line", function()
    local rc, out, err = check("--baseline lua")
    assert.are.equal(0, rc, out .. err)
    assert.matches("the new rules pass 30, filter 1, raise on 0; 0 newly filtered %(5 allowed%)", out)
  end)

  it("exits 1 naming step, count and the first error's file:line when the rules raise", function()
    set_extract("snowplow.product_slug(", "snowplow.product_slg(")
    local rc, out, err = check()
    assert.are.equal(1, rc, out .. err)
    assert.matches("refused: the new rules raise on 30 of 31 sample record%(s%) %(step extract: 30%); "
      .. "first: [^\n]*recommendations/extract%.lua:%d+: attempt to call field 'product_slg'", err)
    assert.matches("events%.jsonl:1%)", err)
    rc, out, err = check("--baseline lua")
    assert.are.equal(1, rc, out .. err)
    assert.matches("that the old rules handled", err)
  end)

  it("exits 1 when the rules filter far more than the baseline, 0 within the slack", function()
    set_extract('if not snowplow.text(duid) then return nil, "bad_duid" end',
      'if true then return nil, "bad_duid" end')
    local rc, out, err = check("--baseline lua")
    assert.are.equal(1, rc, out .. err)
    assert.matches("filter 30 of 31 sample record%(s%) that the old rules passed, more than the 5 "
      .. "allowed by rules.canary_filter_slack 5 and rules.canary_filter_slack_pct 10%% "
      .. "%(step extract: 30 with reason bad_duid%)", err)
    -- without a baseline, filtering is the rules' business
    rc, out = check()
    assert.are.equal(0, rc, out)
    assert.matches("the new rules pass 0, filter 31, raise on 0", out)
    -- filtering 3 more than the baseline is within the slack
    set_extract('if not snowplow.text(eid) then return nil, "bad_eid" end',
      'if eid:match("40000[123]$") then return nil, "bad_eid" end')
    rc, out, err = check("--baseline lua")
    assert.are.equal(0, rc, out .. err)
    assert.matches("3 newly filtered %(5 allowed%)", out)
  end)

  it("exits 1 when the file cannot be read", function()
    local rc, out, err = H.run(string.format("%s check -c %s --against %s", H.q(H.BIN), H.q(config),
      H.q(cdir .. "/missing.jsonl")))
    assert.are.equal(1, rc, out .. err)
    assert.matches("missing%.jsonl: No such file", err)
  end)
end)

describe("sluice test --emit-spec", function()
  local gdir

  -- A job of extract, a rule that splits some contexts, a window and a rule
  -- that tags, filters, raises or returns a table that is not a context.
  local function job(tag_src)
    os.execute("mkdir -p " .. H.q(gdir .. "/rules/gen"))
    H.write(gdir .. "/rules/gen/split.lua", [[
local M = {}
function M.split(ctx)
  if not ctx.product.slug:match("1$") then return ctx end
  local other = {}
  for k, v in pairs(ctx) do other[k] = v end
  other.copy = true
  return { ctx, other }
end
return M
]])
    H.write(gdir .. "/rules/gen/tag.lua", tag_src)
    return H.write_config(gdir .. "/job.lua", {
      kafka = { brokers = "embedded", input = "in" },
      rules = { path = { gdir .. "/rules", "lua" } },
      pipeline = {
        { lua = "recommendations.extract", params = { store_url = H.STORE_URL, app_id = H.APP_ID } },
        { lua = "gen.split", name = "split" },
        { name = "window", window = { key = "userId", length = "5m", as = "agg",
          aggregate = { slugs = { "list", "product.slug" } } } },
        { lua = "gen.tag", name = "tag", params = { tag = "t" } },
        { name = "out", kafka = { topic = "out", key = "userId", fields = { "userId", "tag" } } },
      },
    })
  end

  local TAG = [[
local M = {}
function M.tag(ctx, params)
  local slug = ctx.product.slug
  if slug:match("7$") then return nil, "seven" end
  if slug:match("9$") then error("nine is not allowed") end
  if slug:match("5$") then return ctx.product end
  ctx.tag = params.tag .. "-" .. #ctx.agg.slugs
  return ctx
end
return M
]]

  lazy_setup(function()
    gdir = H.mktemp()
    local lines = {}
    for i = 1, 20 do lines[i] = H.page_view(500000 + i, { duid = "11111111-1111-4111-8111-000000000001" }).value end
    lines[#lines + 1] = "not json"
    H.write(gdir .. "/events.jsonl", table.concat(lines, "\n") .. "\n")
  end)

  lazy_teardown(function() H.rmrf(gdir) end)

  local function emit()
    return H.run(string.format("%s test -c %s -i %s --emit-spec --allow-errors", H.q(H.BIN),
      H.q(job(TAG)), H.q(gdir .. "/events.jsonl")))
  end

  local function busted(spec)
    H.write(gdir .. "/gen_spec.lua", spec)
    return H.run(string.format("SLUICE_RULES=%s busted -o TAP %s", H.q(gdir .. "/rules"),
      H.q(gdir .. "/gen_spec.lua")))
  end

  it("writes a spec with a case per record and lua step, the same bytes each run, that passes", function()
    local rc, spec, err = emit()
    assert.are.equal(0, rc, err)
    local _, again = emit()
    assert.are.equal(spec, again, "the spec is deterministic")
    assert.matches('describe%("record 1 %(line 1%)"', spec)
    assert.matches('it%("extract: next"', spec)
    assert.matches('it%("split: list"', spec)
    assert.matches('it%("tag: next %(context 1%.2%)"', spec)
    assert.matches('it%("tag: filtered"', spec)
    assert.matches('it%("tag: error"', spec)
    assert.matches('it%("extract: filtered"', spec, 1, false)   -- the line that is not JSON
    local brc, out = busted(spec)
    assert.are.equal(0, brc, "the emitted spec passes under busted:\n" .. out)
    local oks = select(2, ("\n" .. out):gsub("\nok ", ""))
    -- extract on 21 lines, split on the 20 page views, tag on their 22
    -- contexts (the views of products 1 and 11 are split in two)
    assert.are.equal(63, oks, "a case per record and lua step")
    assert.is_nil(out:find("not ok", 1, true))
  end)

  it("the spec fails once the rule behaves otherwise", function()
    local _, spec = emit()
    job((TAG:gsub('params%.tag %.%. "%-"', 'params.tag .. "+"')))
    local brc, out = busted(spec)
    assert.are.equal(1, brc, "a changed rule fails the spec:\n" .. out)
    assert.matches("not ok %d+ .* tag: next", out)
    job(TAG)
  end)
end)
