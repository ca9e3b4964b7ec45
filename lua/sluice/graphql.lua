--- GraphQL over HTTP for rules: the request body, and the answer's data,
-- errors and query cost (Shopify's `extensions.cost`).
--
-- A GraphQL server answers 200 for most failures: a query it cannot run,
-- variables of the wrong shape and cost throttling all come back as a
-- top-level `errors` list. result() turns them into failures (see
-- sluice.response): errors whose extensions.code is THROTTLED (Shopify's
-- cost limit) or INTERNAL_SERVER_ERROR are retryable, any other is not.
--
-- Values from the outside (ids, handles) belong in `variables`, never in
-- the query text: body() takes the query as a constant and the variables as
-- a table, so a value can never change what the query does.

local sluice = require "sluice"
local collections = require "sluice.collections"
local response = require "sluice.response"

local type, ipairs, next, tostring, format, concat, ceil, max =
  type, ipairs, next, tostring, string.format, table.concat, math.ceil, math.max

local M = {}

--- body(query, variables, operation_name) -> the request body table
-- {query, variables[, operationName]}; the core sends it as JSON.
function M.body(query, variables, operation_name)
  if type(query) ~= "string" or query == "" then error("graphql.body: query must be a non-empty string", 2) end
  if type(variables) ~= "table" then error("graphql.body: variables must be a table", 2) end
  return { query = query, variables = variables, operationName = operation_name }
end

local function number_or_nil(v) return type(v) == "number" and v or nil end

--- cost(doc) -> {requestedQueryCost, actualQueryCost, throttleStatus =
-- {maximumAvailable, currentlyAvailable, restoreRate}} from a decoded
-- answer's extensions.cost (numbers only; absent ones are nil), or nil when
-- the answer has none.
function M.cost(doc)
  local ext = type(doc) == "table" and doc.extensions
  local c = type(ext) == "table" and ext.cost
  if type(c) ~= "table" then return nil end
  local out = {
    requestedQueryCost = number_or_nil(c.requestedQueryCost),
    actualQueryCost = number_or_nil(c.actualQueryCost),
  }
  local t = c.throttleStatus
  if type(t) == "table" then
    out.throttleStatus = {
      maximumAvailable = number_or_nil(t.maximumAvailable),
      currentlyAvailable = number_or_nil(t.currentlyAvailable),
      restoreRate = number_or_nil(t.restoreRate),
    }
  end
  return out
end

--- wait_ms(cost) -> milliseconds until the bucket holds the query's
-- requested cost again ((requested - available) / restoreRate), at least 0;
-- nil when cost lacks a number for it.
function M.wait_ms(cost)
  local t = cost and cost.throttleStatus
  if not t then return nil end
  local need, have, rate = cost.requestedQueryCost, t.currentlyAvailable, t.restoreRate
  if not (need and have and rate) or rate <= 0 then return nil end
  return max(0, ceil((need - have) / rate * 1000))
end

local retryable_codes = { THROTTLED = "throttled", INTERNAL_SERVER_ERROR = "internal_error" }

-- "message (CODE)" of one error object.
local function error_line(e)
  if type(e) ~= "table" then return tostring(e) end
  local msg = type(e.message) == "string" and e.message or "(no message)"
  local code = type(e.extensions) == "table" and e.extensions.code
  if type(code) == "string" then return format("%s (%s)", msg, code) end
  return msg
end

--- result(status, headers, body, who) -> data, cost
-- The `data` object of a GraphQL answer and its cost (or nil). Raises a
-- failure (sluice.response) on a status other than 2xx, a body that is not
-- a JSON object, a top-level `errors` list (reason "throttled" or
-- "internal_error", retryable, when every error has that code; else
-- "graphql_errors") or a missing `data`. A THROTTLED failure's
-- retry_after_ms is wait_ms(cost). Failures carry the cost.
function M.result(status, headers, body, who)
  response.check_status(status, headers, body, who)
  local doc = response.json(body, who, status)
  if not collections.is_object(doc) then
    response.fail({ reason = "bad_response", status = status,
      message = format("%s: expected a JSON object, got %s", who, response.snippet(body)) })
  end
  local cost = M.cost(doc)
  local errors = doc.errors
  if errors == sluice.null or (type(errors) == "table" and next(errors) == nil) then errors = nil end
  if errors ~= nil then
    local lines, reason = {}, nil
    if type(errors) == "table" then
      for i, e in ipairs(errors) do
        lines[i] = error_line(e)
        local code = type(e) == "table" and type(e.extensions) == "table" and e.extensions.code
        local r = retryable_codes[code] or "graphql_errors"
        if reason == nil or reason == r then reason = r else reason = "graphql_errors" end
      end
    else
      lines[1] = tostring(errors)
    end
    reason = reason or "graphql_errors"
    local retryable = reason ~= "graphql_errors"
    response.fail({
      reason = reason, retryable = retryable, status = status, cost = cost,
      retry_after_ms = reason == "throttled" and (M.wait_ms(cost) or response.retry_after_ms(headers)) or nil,
      message = format("%s: GraphQL errors%s: %s", who, retryable and " (retryable)" or "",
        response.snippet(concat(lines, "; "))),
    })
  end
  if not collections.is_object(doc.data) then
    response.fail({ reason = "bad_response", status = status, cost = cost,
      message = format("%s: the answer has neither data nor errors: %s", who, response.snippet(body)) })
  end
  return doc.data, cost
end

return M
