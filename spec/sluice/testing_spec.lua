-- sluice.testing: run_step applies the core's contract for a lua step.

local sluice = require "sluice"
local T = require "sluice.testing"

describe("sluice.testing.run_step", function()
  it("decodes the input as the core does: JSON, raw string, tombstone", function()
    local seen
    local function keep(ctx) seen = ctx; return ctx end
    T.run_step(keep, '{"a":[],"b":null,"n":1795667677389}')
    assert.are.equal(sluice.array_mt, getmetatable(seen.input.a), "[] keeps its array mark")
    assert.are.equal(sluice.null, seen.input.b)
    assert.are.equal('{"a":[],"b":null,"n":1795667677389}', sluice.json_encode(seen.input))
    T.run_step(keep, "not json {")
    assert.are.equal("not json {", seen.input)
    T.run_step(keep, nil)
    assert.are.equal(sluice.null, seen.input)
    assert.are.equal(sluice.null, seen.kafka.key)
    T.run_step(keep, { x = 1 }, nil, { kafka = { topic = "t", partition = 3, offset = 9, key = "k" } })
    assert.are.same({ x = 1 }, seen.input)
    assert.are.equal("t", seen.kafka.topic)
    assert.are.equal(3, seen.kafka.partition)
    assert.are.equal(9, seen.kafka.offset)
    assert.are.equal("k", seen.kafka.key)
  end)

  it("passes params through JSON, {} when absent", function()
    local got
    T.run_step(function(ctx, p) got = p; return ctx end, "{}", { list = sluice.array(), n = 1 })
    assert.are.equal(sluice.array_mt, getmetatable(got.list))
    T.run_step(function(ctx, p) got = p; return ctx end, "{}")
    assert.are.same({}, got)
    assert.has_error(function() T.run_step(function(c) return c end, "{}", { f = print }) end)
  end)

  it("maps each return to the core's outcome", function()
    local out = T.run_step(function(ctx) ctx.v = 1; return ctx end, "{}")
    assert.are.equal("next", out.status)
    assert.are.equal(1, out.ctx.v)
    assert.are.same({ out.ctx }, out.contexts)

    out = T.run_step(function() return nil, "wrong app id!" end, "{}")
    assert.are.equal("filtered", out.status)
    assert.are.equal("wrong_app_id_", out.reason, "sanitised as the metric label")
    assert.are.same({}, out.contexts)
    assert.are.equal("filtered", T.run_step(function() return nil end, "{}").reason)

    out = T.run_step(function(ctx) return { { a = 1, kafka = ctx.kafka }, { a = 2, kafka = ctx.kafka } } end, "{}")
    assert.are.equal("many", out.status)
    assert.are.equal(2, #out.contexts)
    assert.are.equal(2, out.contexts[2].a)
  end)

  it("reports what the core dead-letters as an error", function()
    local out = T.run_step(function() error("boom") end, "{}")
    assert.are.equal("error", out.status)
    assert.is_truthy(out.error:find("boom", 1, true))
    assert.is_truthy(out.error:find("stack traceback", 1, true))
    out = T.run_step(function() return "a string" end, "{}", nil, { step = "extract" })
    assert.matches("^spec/sluice/testing_spec%.lua:%d+: step extract must return a context, nil "
      .. "and a reason, or a list of contexts; it returned a string: \"a string\"$", out.error)
    out = T.run_step(function(ctx) return { ctx, 7 } end, "{}")
    assert.matches("it returned a list whose item 2 is a number: 7$", out.error)
  end)

  it("reports a table that is not a context as the core does", function()
    local out = T.run_step(function(ctx) ctx.product = { slug = "s" }; return ctx.product end,
      "{}", nil, { step = "extract" })
    assert.are.equal("error", out.status)
    assert.matches("^spec/sluice/testing_spec%.lua:%d+: step extract must return a context, nil "
      .. "and a reason, or a list of contexts; it returned a table that is not a context %(it has "
      .. "no kafka table: return ctx, or a table built from it%): {\"slug\":\"s\"}$", out.error)
    out = T.run_step(function(ctx) return { ctx, { x = 1 } } end, "{}")
    assert.matches("it returned a list whose item 2 is a table that is not a context", out.error)
    out = T.run_step(function(ctx) return { input = ctx.input, kafka = ctx.kafka, y = 1 } end, "{}")
    assert.are.equal("next", out.status, "a new table built from ctx is a context")
  end)
end)
