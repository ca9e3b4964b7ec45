--- Recommendations, the model: the MLflow scoring request for a visitor's
-- window and what its answer means (input and output of the model step).
--
-- input(ctx, params) -> the body of POST <url>/invocations, one row from
-- ctx.userId, ctx.aggregatedProducts.slugs (the viewed product handles,
-- oldest first) and ctx.aggregatedProducts.viewTimestamps (their ms times):
--
--   params.format = "dataframe_split" (default)
--     {"dataframe_split": {"columns": ["userId", "items", "timestamps"],
--                          "data": [[userId, [slug, ...], [ts, ...]]]}}
--   params.format = "dataframe_records"
--     {"dataframe_records": [{"userId": ..., "items": [...], "timestamps": [...]}]}
--   params.format = "inputs"
--     {"inputs": [{"userId": ..., "items": [...], "timestamps": [...]}]}
--     (records only: MLflow refuses the columnar form of `inputs` for this
--     signature, see spec/integration/mlflow_spec.lua)
--
--   params.timestamps = "string" (default: the seed's model takes them as
--     strings, "1795667677486", as does scripts/mlflow/model.py), "number"
--     (a signature of Array(long): MLflow refuses strings there with 400)
--     or "none" (the column is left out; it is optional in both).
--
-- output(ctx, status, headers, body) -> recommendationsModelOutput:
-- {itemIds = [...], preds = [...]} of the one row sent, from
-- {"predictions": [{"itemIds": [...], "preds": [...]}]}, a bare list of
-- that object, or {"predictions": {"itemIds": ..., "preds": ...}}. itemIds
-- must be a list of strings, preds (optional) a list of numbers as long.
-- Anything else raises a failure (sluice.response) "bad_response" that
-- quotes the start of the body; a status other than 2xx raises "http_<status>"
-- (429 and 5xx retryable).

local sluice = require "sluice"
local collections = require "sluice.collections"
local response = require "sluice.response"

local type, ipairs, error, format, floor = type, ipairs, error, string.format, math.floor

local M = {}

M.COLUMNS = { "userId", "items", "timestamps" } -- the seed model's input columns

local formats = { dataframe_split = true, dataframe_records = true, inputs = true }
local stamp_kinds = { string = true, number = true, none = true }

-- A copy of ctx.aggregatedProducts[name] as a new array, checked element by
-- element with ok(v) -> v' | nil.
local function column(agg, name, what, ok)
  local src = agg[name]
  local list = type(src) == "table" and collections.take(src, math.huge)
  if not list then
    error(format("model.input: ctx.aggregatedProducts.%s must be a list (%s), got %s", name, what,
      type(src) == "table" and "an object" or type(src)), 3)
  end
  for i, v in ipairs(list) do
    local out = ok(v)
    if out == nil then
      error(format("model.input: ctx.aggregatedProducts.%s[%d] must be %s, got %s", name, i, what,
        type(v) == "string" and format("%q", v) or type(v)), 3)
    end
    list[i] = out
  end
  return list
end

local function slug(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- An integral ms timestamp (a number, or a string of digits) as a number.
local function ms(v)
  if type(v) == "string" and v:match("^%d+$") and #v <= 16 then v = tonumber(v) end
  if type(v) ~= "number" or v ~= floor(v) or v < 0 or v > 2 ^ 53 then return nil end
  return v
end

--- input(ctx, params) -> the request body (see the top of this file).
-- Raises when params name an unknown format or when ctx lacks the window's
-- variables (a pipeline error, not bad input).
function M.input(ctx, params)
  local fmt = params and params.format or "dataframe_split"
  local stamps = params and params.timestamps or "string"
  if not formats[fmt] then
    error(format("model.input: params.format must be dataframe_split, dataframe_records or inputs, got %s",
      sluice.json_encode(fmt) or type(fmt)), 2)
  end
  if not stamp_kinds[stamps] then
    error(format("model.input: params.timestamps must be string, number or none, got %s",
      sluice.json_encode(stamps) or type(stamps)), 2)
  end
  local user = ctx.userId
  if type(user) ~= "string" or user == "" then
    error("model.input: ctx.userId must be a non-empty string, got " .. type(user), 2)
  end
  local agg = ctx.aggregatedProducts
  if not collections.is_object(agg) then
    error("model.input: ctx.aggregatedProducts must be the window's aggregate (an object), got " .. type(agg), 2)
  end
  local items = column(agg, "slugs", "a product handle", slug)
  local times
  if stamps ~= "none" then
    times = column(agg, "viewTimestamps", "an integer ms timestamp", ms)
    if #times ~= #items then
      error(format("model.input: %d slugs but %d viewTimestamps in ctx.aggregatedProducts", #items, #times), 2)
    end
    if stamps == "string" then
      for i, t in ipairs(times) do times[i] = format("%d", t) end
    end
  end
  if fmt == "dataframe_split" then
    local columns, row = { "userId", "items" }, { user, items }
    if times then columns[3], row[3] = "timestamps", times end
    return { dataframe_split = { columns = sluice.array(columns), data = sluice.array({ sluice.array(row) }) } }
  end
  local record = { userId = user, items = items, timestamps = times }
  return { [fmt] = sluice.array({ record }) }
end

-- The prediction of the one row sent, from any of the accepted shapes.
local function prediction(doc, body, status)
  local preds = doc
  if collections.is_object(doc) then
    preds = doc.predictions
    if collections.is_object(preds) and preds.itemIds ~= nil then return preds end
  end
  if not collections.is_list(preds) then
    response.fail({ reason = "bad_response", status = status,
      message = "model: expected {\"predictions\": [...]} or a list, got " .. response.snippet(body) })
  end
  local n = 0
  while preds[n + 1] ~= nil do n = n + 1 end
  if n ~= 1 then
    response.fail({ reason = "bad_response", status = status,
      message = format("model: expected 1 prediction (one row was sent), got %d: %s", n, response.snippet(body)) })
  end
  return preds[1]
end

local function check_list(p, name, kind, body, status)
  local list = p[name]
  local bad = not collections.is_list(list)
  local i = 1
  while not bad and list[i] ~= nil do
    if type(list[i]) ~= kind then bad = format("%s[%d] is a %s", name, i, type(list[i])) end
    i = i + 1
  end
  if bad then
    response.fail({ reason = "bad_response", status = status,
      message = format("model: %s must be a list of %ss (%s): %s", name, kind,
        bad == true and ("got " .. type(list)) or bad, response.snippet(body)) })
  end
  return i - 1
end

--- output(ctx, status, headers, body) -> recommendationsModelOutput (see the
-- top of this file), or raises a failure.
function M.output(_, status, headers, body)
  response.check_status(status, headers, body, "model")
  local doc = response.json(body, "model", status)
  local p = prediction(doc, body, status)
  if not collections.is_object(p) then
    response.fail({ reason = "bad_response", status = status,
      message = "model: a prediction must be an object with itemIds, got " .. response.snippet(body) })
  end
  local n = check_list(p, "itemIds", "string", body, status)
  local ids = collections.take(p.itemIds, n)
  local out = { itemIds = ids }
  if p.preds ~= nil and p.preds ~= sluice.null then
    local m = check_list(p, "preds", "number", body, status)
    if m ~= n then
      response.fail({ reason = "bad_response", status = status,
        message = format("model: %d itemIds but %d preds: %s", n, m, response.snippet(body)) })
    end
    out.preds = collections.take(p.preds, m)
  end
  return out
end

return M
