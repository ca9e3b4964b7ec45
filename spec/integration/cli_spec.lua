-- cli_spec.lua -- the commands that need no broker: check, test, --help.
--
-- `sluice check` and `sluice test` on the configs of
-- spec/integration/fixtures/ (a good one, a rule that does not compile, a
-- window length that is no duration, a misspelt key, a missing module), and
-- every command's --help.

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local FIX = "spec/integration/fixtures/"

local dir

-- Runs sluice with args; BROKEN_RULES names the folder of the broken rule
-- (see fixtures/broken-rule.lua).
local function sluice(args)
  return H.run("BROKEN_RULES=" .. H.q(dir .. "/rules-broken") .. " " .. H.q(H.BIN) .. " " .. args)
end

lazy_setup(function()
  dir = H.mktemp()
  os.execute("mkdir -p " .. H.q(dir .. "/rules-broken/itest"))
  H.write(dir .. "/rules-broken/itest/broken.lua", assert(H.read(FIX .. "itest-broken.lua.txt")))
end)
lazy_teardown(function() H.rmrf(dir) end)

describe("sluice check", function()
  it("exits 0 on a good config and prints the step count and rules version", function()
    local rc, out, err = sluice("check -c " .. FIX .. "good.lua")
    assert.are.equal(0, rc, "exit 0 on a good config; output:\n" .. out .. err)
    local text = out .. err
    assert.matches("3 step", text, 1, true)
    assert.matches("rules version %x+", text)
    assert.are.equal(16, #text:match("rules version (%x+)"), "version: 16 hex digits")
  end)

  it("gives the same version for the same rules and another for changed rules", function()
    local _, a = sluice("check -c " .. FIX .. "good.lua")
    local _, b = sluice("check -c " .. FIX .. "good.lua")
    assert.are.equal(a:match("rules version (%x+)"), b:match("rules version (%x+)"))
    local rules = dir .. "/rules"
    os.execute("cp -r " .. FIX .. "rules " .. H.q(rules))
    local cfg = H.read(FIX .. "good.lua"):gsub('"spec/integration/fixtures/rules"', string.format("%q", rules))
    H.write(dir .. "/good.lua", cfg)
    local _, c = sluice("check -c " .. H.q(dir .. "/good.lua"))
    assert.is_truthy(c:match("rules version (%x+)"))
    H.write(rules .. "/itest/guard.lua", H.read(rules .. "/itest/guard.lua") .. "\n-- changed\n")
    local _, d = sluice("check -c " .. H.q(dir .. "/good.lua"))
    assert.are_not.equal(c:match("rules version (%x+)"), d:match("rules version (%x+)"),
      "a changed rule file changes the version")
  end)

  it("exits 1 on a rule that does not compile, naming file:line", function()
    local rc, out, err = sluice("check -c " .. FIX .. "broken-rule.lua")
    assert.are.equal(1, rc, "exit 1 on a broken rule")
    assert.matches("rules%-broken/itest/broken%.lua:8:", out .. err, "file:line of the syntax error")
    assert.matches("'then' expected", out .. err, 1, true)
  end)

  it("leads the error of a rule that does not compile or fails to load with file:line:", function()
    local _, out, err = sluice("check -c " .. FIX .. "broken-rule.lua")
    assert.matches("^%S*rules%-broken/itest/broken%.lua:8: [^\n]*'then' expected"
      .. "[^\n]*%(step [^\n]*module itest%.broken%)", out .. err)
    assert.is_nil((out .. err):match("^step "), "not led by the step name")
    os.execute("mkdir -p " .. H.q(dir .. "/rules-top/itest"))
    H.write(dir .. "/rules-top/itest/top.lua", "local M = {}\nlocal y\ny.z = 1\nreturn M\n")
    H.write(dir .. "/top.lua", string.format('return { rules = { path = %q }, pipeline = { { lua = "itest.top" } } }',
      dir .. "/rules-top"))
    local rc, o2, e2 = sluice("check -c " .. H.q(dir .. "/top.lua"))
    assert.are.equal(1, rc)
    assert.matches("^%S*rules%-top/itest/top%.lua:3: attempt to index", o2 .. e2)
  end)

  it("exits 1 on a config value of the wrong kind, naming the key path", function()
    local rc, out, err = sluice("check -c " .. FIX .. "bad-window.lua")
    assert.are.equal(1, rc)
    assert.matches("pipeline[2].window.length", out .. err, 1, true)
    assert.matches("five minutes", out .. err, 1, true)
  end)

  it("exits 1 on an unknown config key, naming it", function()
    local rc, out, err = sluice("check -c " .. FIX .. "unknown-key.lua")
    assert.are.equal(1, rc)
    assert.matches("rules.budgett", out .. err, 1, true)
    assert.matches("unknown key", out .. err, 1, true)
  end)

  it("exits 1 on a rule module that does not exist, naming it", function()
    local rc, out, err = sluice("check -c " .. FIX .. "missing-module.lua")
    assert.are.equal(1, rc)
    assert.matches("recommendations.nothere", out .. err, 1, true)
  end)

  it("exits 1 on a config that is no valid Lua, with file:line", function()
    H.write(dir .. "/syntax.lua", "return {\n  kafka = { brokers = \"embedded\" }\n  pipeline = {},\n}\n")
    local rc, out, err = sluice("check -c " .. H.q(dir .. "/syntax.lua"))
    assert.are.equal(1, rc)
    assert.matches("syntax%.lua:3:", out .. err)
  end)

  it("exits non-zero on a missing config file, naming it", function()
    local rc, out, err = sluice("check -c " .. H.q(dir .. "/none.lua"))
    assert.are_not.equal(0, rc)
    assert.matches("none.lua", out .. err, 1, true)
  end)

  it("exits 2 with usage without -c", function()
    local rc, out, err = sluice("check")
    assert.are.equal(2, rc)
    assert.matches("usage: sluice check", out .. err, 1, true)
  end)
end)

describe("sluice test", function()
  local function trace(out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do
      local ok, v = pcall(cjson.decode, line)
      assert.is_true(ok, "every line is JSON: " .. line)
      lines[#lines + 1] = v
    end
    return lines
  end

  it("traces the captured tracker records through each step", function()
    local recs = H.tracker_records("post-pageviews.requests.jsonl")
    local values = {}
    for i, r in ipairs(recs) do values[i] = r.value end
    H.write(dir .. "/in.jsonl", table.concat(values, "\n") .. "\n")
    local rc, out, err = sluice("test -c " .. FIX .. "good.lua -i " .. H.q(dir .. "/in.jsonl"))
    assert.are.equal(0, rc, "exit 0; stderr:\n" .. err)
    local lines = trace(out)
    local produced, filtered = {}, {}
    for _, l in ipairs(lines) do
      assert.is_number(l.record)
      assert.is_string(l.step)
      assert.is_nil(l.ctx and l.ctx.kafka and l.ctx.kafka.timestamp, "no wall-clock field in the trace")
      if l.produce then produced[#produced + 1] = l end
      if l.filtered then filtered[#filtered + 1] = l end
      if l.ctx and not l.filtered then assert.is_nil(l.ctx.input, "ctx is traced without input") end
    end
    assert.are.equal(1, #filtered, "the /collections/all view is filtered")
    assert.are.equal(1, filtered[1].record)
    assert.are.equal("extract", filtered[1].step)
    assert.are.equal("not_a_product_url", filtered[1].filtered)
    assert.are.same(cjson.decode(values[1]), filtered[1].ctx.input, "the filtered line shows the context it dropped")
    assert.are.equal(4, #produced, "4 product views produced")
    for i, p in ipairs(produced) do
      local ev = recs[i + 1].events[1]
      assert.are.equal(i + 1, p.record)
      assert.are.equal("debug", p.step)
      assert.are.equal("cli-out", p.produce.topic)
      assert.are.equal(ev.duid, p.produce.key)
      assert.are.equal(ev.duid, p.produce.value.userId)
      assert.are.equal(ev.url:match("/products/([^/?#]+)"), p.produce.value.product.slug)
      assert.are.equal(tonumber(ev.dtm), p.produce.value.product.viewTimestamp)
    end
  end)

  it("shows the dead letter of a rule that raises, goes on with the next record and exits 1", function()
    local boom, ok = H.page_view(5, { slug = "boom-bag" }), H.page_view(6)
    H.write(dir .. "/boom.jsonl", boom.value .. "\n" .. ok.value .. "\n")
    local rc, out, err = sluice("test -c " .. FIX .. "good.lua -i " .. H.q(dir .. "/boom.jsonl"))
    assert.are.equal(1, rc, "exit 1 when a record was dead-lettered; stderr: " .. err)
    assert.matches("1 of 2 record(s) dead-lettered (step guard: 1)", err, 1, true)
    assert.matches("first: line 1, step guard: [^\n]*guard%.lua:6: guard: cannot handle", err)
    assert.matches('^{"error":"[^"]*guard%.lua:6: guard: cannot handle[^"]*","record":1,"step":"guard",', out)
    assert.is_nil(out:match("^[^\n]*stack traceback[^\n]*\"record\""), "the line's error has no traceback")
    local rc2, out2 = sluice("test --allow-errors -c " .. FIX .. "good.lua -i " .. H.q(dir .. "/boom.jsonl"))
    assert.are.equal(0, rc2, "--allow-errors exits 0")
    assert.are.equal(out, out2, "the same trace")
    local lines = trace(out)
    local d = lines[1]
    assert.matches("^%S+guard%.lua:6: guard: cannot handle", d.error)
    assert.are.equal(1, d.record)
    assert.are.equal("guard", d.step)
    assert.is_table(d.dead_letter, "record 1 is dead-lettered: " .. out)
    assert.are.equal("guard", d.dead_letter.step)
    assert.are.equal(boom.value, d.dead_letter.value, "the original value")
    assert.matches("guard%.lua:6: guard: cannot handle", d.dead_letter.error)
    assert.matches("stack traceback", d.dead_letter.error, 1, true)
    assert.matches("^%x+$", d.dead_letter.rulesVersion)
    local last = lines[#lines]
    assert.are.equal(2, last.record, "record 2 is still processed")
    assert.are.equal("debug", last.step)
    assert.are.equal(ok.key, last.produce.key)
  end)

  it("reads stdin with -i -", function()
    local rc, out = H.run(string.format("printf '%%s\\n' %s | %s test -c %sgood.lua -i -",
      H.q(H.page_view(7).value), H.q(H.BIN), FIX))
    assert.are.equal(0, rc)
    local lines = trace(out)
    assert.are.equal("debug", lines[#lines].step)
  end)

  it("--summary counts what the window bounded: entries beyond max_entries, keys beyond max_keys", function()
    -- 6 views of visitor a, then one each of b and c: with max_entries 3 and
    -- max_keys 2, a loses 3 entries and then the whole key.
    local lines = {}
    local a = "aaaaaaaa-1111-4111-8111-000000000001"
    for i = 1, 6 do lines[#lines + 1] = H.page_view(100 + i, { duid = a }).value end
    lines[#lines + 1] = H.page_view(200, { duid = "bbbbbbbb-1111-4111-8111-000000000002" }).value
    lines[#lines + 1] = H.page_view(300, { duid = "cccccccc-1111-4111-8111-000000000003" }).value
    H.write(dir .. "/bounds.jsonl", table.concat(lines, "\n") .. "\n")
    H.write(dir .. "/bounds.lua", [[
return { rules = { path = "lua" }, pipeline = {
  { lua = "recommendations.extract",
    params = { store_url = "http://127.0.0.1:8080", app_id = "shopify-nu-recommendations" } },
  { name = "window", window = { key = "userId", time = "product.viewTimestamp", length = "5m",
    dedupe = "eventId", aggregate = { slugs = { "list", "product.slug" } }, as = "w",
    max_entries = 3, max_keys = 2 } } } }
]])
    local rc, out, err = sluice("test -s -c " .. H.q(dir .. "/bounds.lua")
      .. " -i " .. H.q(dir .. "/bounds.jsonl"))
    assert.are.equal(0, rc, err)
    assert.matches("8 record%(s%)", out)
    assert.matches('sluice_window_evicted_entries_total{step="window"} 3\n', out, 1, true)
    assert.matches('sluice_window_evicted_keys_total{step="window"} 1\n', out, 1, true)
    assert.matches('sluice_window_keys{step="window"} 2\n', out, 1, true)
    assert.matches('sluice_window_entries{step="window"} 2\n', out, 1, true)
  end)

  it("traces what the kafka and store steps would write: topic, key and value", function()
    H.write(dir .. "/sinks.lua", [[
return { pipeline = {
  { name = "out", kafka = { topic = "t.out", key = "input.userId", fields = { "input" } } },
  { name = "keep", store = { key = "input.userId", value = "input.ids" } } } }
]])
    H.write(dir .. "/sinks.jsonl", '{"userId":"U1","ids":["gid://shopify/Product/1"]}\n{"ids":[]}\n')
    local rc, out, err = sluice("test -c " .. H.q(dir .. "/sinks.lua") .. " -i " .. H.q(dir .. "/sinks.jsonl"))
    assert.are.equal(0, rc, err)
    local lines = trace(out)
    assert.are.same({ topic = "t.out", key = "U1", value = { input = { userId = "U1",
      ids = { "gid://shopify/Product/1" } } } }, lines[1].produce)
    assert.are.same({ key = "u1", value = { "gid://shopify/Product/1" } }, lines[2].store,
      "the store's key is lowercased")
    assert.are.equal(cjson.null, lines[3].produce.key, "no key: null")
    assert.are.equal("no_store_key", lines[4].filtered)
  end)

  it("exits 0 with nothing on stderr when no record is dead-lettered", function()
    H.write(dir .. "/fine.jsonl", H.page_view(9).value .. "\n" .. H.page_view(10).value .. "\n")
    local rc, out, err = sluice("test -c " .. FIX .. "good.lua -i " .. H.q(dir .. "/fine.jsonl"))
    assert.are.equal(0, rc, err)
    assert.are.equal("", err, "stderr is empty")
    assert.matches('"produce"', out, 1, true)
  end)

  it("gives a byte-identical trace on two runs, object keys sorted", function()
    local recs = H.tracker_records("post-pageviews.requests.jsonl")
    local values = {}
    for i, r in ipairs(recs) do values[i] = r.value end
    values[#values + 1] = H.page_view(5, { slug = "boom-bag" }).value
    H.write(dir .. "/golden.jsonl", table.concat(values, "\n") .. "\n")
    local cmd = "test --allow-errors -c " .. FIX .. "good.lua -i " .. H.q(dir .. "/golden.jsonl")
    local _, a = sluice(cmd)
    H.sleep(0.05)
    local _, b = sluice(cmd)
    assert.is_true(#a > 1000, "a trace: " .. a)
    assert.are.equal(a, b, "the two traces are byte-identical")
    -- every object's keys sorted, as lua/sluice/init.lua encodes
    local sluice_json = require "sluice"
    for line in a:gmatch("[^\n]+") do
      local v = cjson.decode(line)
      for _, k in ipairs({ "ctx", "produce", "dead_letter" }) do
        if type(v[k]) == "table" then
          local text = line:match('"' .. k .. '":(.*)}$')
          if k == "ctx" and v.filtered == nil or k ~= "ctx" then
            assert.are.equal(sluice_json.json_encode(v[k]), text, "sorted " .. k .. " in " .. line)
          end
        end
      end
    end
  end)

  it("reports a line that is not JSON with its line number, and prints of rules on stderr", function()
    os.execute("mkdir -p " .. H.q(dir .. "/rules-print/itest"))
    H.write(dir .. "/rules-print/itest/noisy.lua", [[
local M = {}
function M.noisy(ctx)
  print("noisy saw", type(ctx.input))
  if type(ctx.input) ~= "table" then return nil, "not_a_table" end
  return { { input = ctx.input, kafka = ctx.kafka, n = 1 }, { input = ctx.input, kafka = ctx.kafka, n = 2 } }
end
return M
]])
    H.write(dir .. "/print.lua", string.format(
      'return { rules = { path = %q }, pipeline = { { lua = "itest.noisy" } } }', dir .. "/rules-print"))
    H.write(dir .. "/mixed.jsonl", '{"a":1}\nthis is not json\n')
    local rc, out, err = sluice("test -c " .. H.q(dir .. "/print.lua") .. " -i " .. H.q(dir .. "/mixed.jsonl"))
    assert.are.equal(0, rc, err)
    assert.is_nil(out:find("noisy saw", 1, true), "print() is not in the trace")
    assert.matches("noisy%.lua:3: noisy saw\ttable", err)
    assert.matches("mixed.jsonl:2: not JSON", err, 1, true)
    local lines = trace(out)
    assert.are.equal("1.1", lines[1].record, "split contexts carry an index")
    assert.are.equal(1, lines[1].ctx.n)
    assert.are.equal("1.2", lines[2].record)
    assert.are.equal(2, lines[3].record)
    assert.are.equal(2, lines[3].line)
    assert.is_string(lines[3].not_json)
    assert.are.equal("not_a_table", lines[4].filtered)
    assert.are.equal("this is not json", lines[4].ctx.input)
  end)

  it("names the step function's file:line, the type and the value of a wrong return", function()
    os.execute("mkdir -p " .. H.q(dir .. "/rules-ret/itest"))
    H.write(dir .. "/rules-ret/itest/ret.lua", [[
local M = {}
function M.str() return "abc" end
function M.sub(ctx) ctx.product = { slug = "x" } return ctx.product end
function M.item(ctx) return { ctx, 7 } end
return M
]])
    H.write(dir .. "/one-ret.jsonl", '{"a":1}\n')
    local want = {
      str = { 2, 'it returned a string: "abc"' },
      sub = { 3, 'it returned a table that is not a context (it has no kafka table: return ctx, '
        .. 'or a table built from it): {"slug":"x"}' },
      item = { 4, "it returned a list whose item 2 is a number: 7" },
    }
    for fn, w in pairs(want) do
      H.write(dir .. "/ret.lua", string.format(
        'return { rules = { path = %q }, pipeline = { { lua = "itest.ret", fn = %q } } }',
        dir .. "/rules-ret", fn))
      local rc, out, err = sluice("test -c " .. H.q(dir .. "/ret.lua") .. " -i " .. H.q(dir .. "/one-ret.jsonl"))
      assert.are.equal(1, rc, err)
      local l = cjson.decode(out:match("[^\n]+"))
      assert.are.equal("ret", l.step, "the step that returned it is named, not the next one: " .. out)
      assert.matches("^%S*rules%-ret/itest/ret%.lua:" .. w[1] .. ": step ret %(itest%.ret%." .. fn .. "%)", l.error)
      assert.matches(w[2], l.error, 1, true)
    end
  end)

  it("exits 1 on a rule that does not compile, naming file:line, and traces nothing", function()
    H.write(dir .. "/one.jsonl", H.page_view(8).value .. "\n")
    local rc, out, err = sluice("test -c " .. FIX .. "broken-rule.lua -i " .. H.q(dir .. "/one.jsonl"))
    assert.are.equal(1, rc)
    assert.matches("broken%.lua:8:", out .. err)
    assert.are.equal("", out, "no trace lines")
  end)
end)

describe("--help", function()
  local commands = {
    run = { "-c, --config", "SIGHUP", "SIGTERM", "shutdown_timeout", "70" },
    check = { "-c, --config", "file:line", "exit" },
    test = { "-c, --config", "-i, --input", "filtered", "dead_letter", "produce", "--allow-errors",
             "Exit status" },
    broker = { "--partitions", "--topics", "--brokers", "first line" },
    replay = { "-c, --config", "--dry-run", "dead-letter" },
  }
  for cmd, words in pairs(commands) do
    it("sluice " .. cmd .. " --help exits 0 and explains the options", function()
      local rc, out, err = sluice(cmd .. " --help")
      assert.are.equal(0, rc, cmd .. " --help exits 0")
      local text = out .. err
      assert.matches("usage: sluice " .. cmd, text, 1, true)
      for _, w in ipairs(words) do
        assert.matches(w, text, 1, true, "`sluice " .. cmd .. " --help` mentions " .. w)
      end
      rc, out, err = sluice(cmd .. " -h")
      assert.are.equal(0, rc, cmd .. " -h exits 0")
      assert.are.equal(text, out .. err, "-h is --help")
    end)
  end

  it("sluice --help lists every command and exits 0", function()
    local rc, out, err = sluice("--help")
    assert.are.equal(0, rc)
    for cmd in pairs(commands) do
      assert.matches("\n  " .. cmd .. " ", out .. err, 1, true)
    end
  end)

  it("an unknown command exits 2 and names it", function()
    local rc, out, err = sluice("frobnicate")
    assert.are.equal(2, rc)
    assert.matches('unknown command "frobnicate"', out .. err, 1, true)
  end)
end)
