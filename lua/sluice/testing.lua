--- sluice.testing: run a rule in a busted spec exactly as the core runs a
-- lua step, so specs test the rule and not a copy of the core's contract.
--
--   local T = require "sluice.testing"
--   local out = T.run_step(require("recommendations.extract").extract,
--                          '{"message": ...}', { app_id = "shop" })
--   assert.are.equal("next", out.status)
--   assert.are.equal("sneaker", out.ctx.product.slug)
--
-- What the core does (core/pipeline.c make_ctx, core/rules.c sl_rules_call):
--   ctx.input   the record's value decoded as JSON (sluice's mapping: null is
--               sluice.null, arrays carry sluice.array_mt, big integers stay
--               exact); a value that is not JSON is the raw string; a
--               tombstone (no value) is sluice.null.
--   ctx.kafka   {topic, partition, offset, timestamp, key} (key sluice.null
--               when the record has none).
--   params      the step's `params` from the config, through JSON ({} when
--               absent), so only what JSON can carry reaches the rule.
--   returns     a table whose [1] is nil      -> "next", that table is ctx;
--                                                one without a kafka table
--                                                "is not a context": an error
--               a table whose [1] is not nil  -> "many", each item a context
--                                                (else an error)
--               nil, reason                   -> "filtered", the reason with
--                                                characters outside
--                                                [A-Za-z0-9_.-] made `_`
--                                                ("filtered" when empty)
--               anything else, or a raise     -> "error" (dead-lettered)
--
-- Uses sluice (the core's module, or lua/sluice/init.lua outside the core).

local sluice = require "sluice"

local M = {}

local type, tostring, xpcall, traceback = type, tostring, xpcall, debug.traceback

-- What JSON gives for v: the value the core would see after a round trip.
local function through_json(v, what)
  local text, err = sluice.json_encode(v)
  if not text then error(what .. " cannot be carried as JSON: " .. tostring(err), 3) end
  return (sluice.json_decode(text))
end

-- The core's ctx.input for a record value: a string is decoded when it is
-- JSON and kept raw otherwise; nil is a tombstone; a table is taken as the
-- already decoded value (passed through JSON, as the core would decode it).
local function decode_input(input)
  if input == nil or input == sluice.null then return sluice.null end
  if type(input) == "string" then
    local v = sluice.json_decode(input)
    if v == nil then return input end
    return v
  end
  return through_json(input, "input")
end

-- The reason as it becomes a metric label (rules.c sanitize_reason).
local function sanitize(reason)
  if type(reason) == "number" then reason = tostring(reason) end
  if type(reason) ~= "string" then return "filtered" end
  reason = reason:sub(1, 63):gsub("[^%w_%.%-]", "_")
  if reason == "" then return "filtered" end
  return reason
end

--- ctx(input, kafka) -> the context table the core builds for one record:
-- input decoded as the core decodes it, kafka metadata with defaults
-- (topic "test", partition 0, offset 0, timestamp now, no key).
function M.ctx(input, kafka)
  kafka = kafka or {}
  local key = kafka.key
  if key == nil then key = sluice.null end
  return {
    input = decode_input(input),
    kafka = {
      topic = kafka.topic or "test", partition = kafka.partition or 0,
      offset = kafka.offset or 0, timestamp = kafka.timestamp or sluice.now(), key = key,
    },
  }
end

--- run_step(fn, input, params, opts) -> out
-- Runs fn(ctx, params) as the core's lua step does. input is a record value
-- (a JSON string, a table already decoded, or nil for a tombstone) or, with
-- opts.ctx = true, a context table used as it is. opts.kafka sets the Kafka
-- metadata, opts.step the step name in error texts (default "step") and
-- opts.fn_name its "module.fn" (as the core names it there).
-- out.status   "next" | "filtered" | "many" | "error"
-- out.ctx      the context going on ("next")
-- out.contexts the contexts going on: {} filtered or error, {ctx}, or the list
-- out.reason   the filter reason as counted ("filtered")
-- out.error    the error with its traceback, as the dead letter carries it
-- A short rendering of a wrong return value, as the core shows it: JSON
-- (keys sorted) or tostring, cut at 120 bytes.
local SHOW = 120
local function show(v)
  local text
  if type(v) == "table" or type(v) == "string" then
    text = sluice.json_encode(v) or "(not encodable)"
  else
    text = tostring(v)
  end
  if #text > SHOW then text = text:sub(1, SHOW) .. "..." end
  return text
end

-- The core's error for a wrong return value v of fn (rules.c bad_return):
-- the function's file:line, the step, what v is; item names a list item.
local function bad_return(fn, step, fn_name, v, item)
  local info = debug.getinfo(fn, "S")
  local at = (info and info.linedefined and info.linedefined > 0)
    and (info.short_src .. ":" .. info.linedefined .. ": ") or ""
  local what
  if type(v) == "table" then
    what = "a table that is not a context (it has no kafka table: return ctx, or a table built "
      .. "from it): "
  else
    what = "a " .. type(v) .. ": "
  end
  local name = fn_name and (" (" .. fn_name .. ")") or ""
  local list = item and ("a list whose item " .. item .. " is ") or ""
  return string.format("%sstep %s%s must return a context, nil and a reason, or a list of "
    .. "contexts; it returned %s%s%s", at, step, name, list, what, show(v))
end

-- A context carries its record's kafka table (rules.c is_context). The core
-- builds every context with one; a spec that passes a context without it
-- (opts.ctx) gets tables back unchecked.
local function context_check(ctx)
  if type(ctx) ~= "table" or type(ctx.kafka) ~= "table" then
    return function(t) return type(t) == "table" end
  end
  return function(t) return type(t) == "table" and type(t.kafka) == "table" end
end

function M.run_step(fn, input, params, opts)
  opts = opts or {}
  assert(type(fn) == "function", "run_step: fn must be the step's function")
  local step = opts.step or "step"
  local ctx = opts.ctx and input or M.ctx(input, opts.kafka)
  local is_context = context_check(ctx)
  local p = through_json(params == nil and {} or params, "params")
  local ok, r1, r2 = xpcall(function() return fn(ctx, p) end,
    function(m) return traceback(tostring(m), 2) end)
  if not ok then
    return { status = "error", error = r1, contexts = {} }
  end
  if type(r1) == "table" then
    if r1[1] == nil then
      if not is_context(r1) then
        return { status = "error", contexts = {}, error = bad_return(fn, step, opts.fn_name, r1) }
      end
      return { status = "next", ctx = r1, contexts = { r1 } }
    end
    local list = {}
    for i = 1, #r1 do
      if not is_context(r1[i]) then
        return { status = "error", contexts = {}, error = bad_return(fn, step, opts.fn_name, r1[i], i) }
      end
      list[i] = r1[i]
    end
    return { status = "many", contexts = list }
  elseif r1 == nil then
    return { status = "filtered", reason = sanitize(r2), contexts = {} }
  end
  return { status = "error", contexts = {}, error = bad_return(fn, step, opts.fn_name, r1) }
end

return M
