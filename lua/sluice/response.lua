--- Helpers for the response functions of HTTP steps (the model, Shopify):
--
--   f(ctx, status, headers, body) -> value | nil, reason | raises
--
-- status is the HTTP status (a number), headers a table of header name ->
-- value (names in any case: header() looks them up case-insensitively),
-- body the response body as a string (an already decoded table is accepted
-- too, so specs and a core that decodes first both work).
--
-- Failures are raised as failure objects, so that the core can tell a
-- failure worth retrying from one that goes to the dead-letter topic:
--
--   { message        = "shopify: THROTTLED: ...",  -- what the dead letter says
--     reason         = "throttled",                -- short, stable: a metric label
--     retryable      = true | false,               -- true: retry after a wait,
--                                                  -- false: dead-letter now
--     retry_after_ms = 1200 | nil,                 -- the wait the server asked for
--     status         = 200,                        -- the HTTP status
--     cost           = { ... } | nil }             -- GraphQL cost (sluice.graphql)
--
-- A failure object has a __tostring giving its message. For the step author:
-- the traceback handler of the pcall around a response function must hand a
-- table error back unchanged (is_failure(err)) instead of turning it into
-- "(error object is a table value)"; any other error (a string raised by a
-- bug in the rule) is not retryable and is dead-lettered with its traceback.

local sluice = require "sluice"

local type, pairs, tostring, tonumber, error, setmetatable, getmetatable =
  type, pairs, tostring, tonumber, error, setmetatable, getmetatable
local lower, sub, format, gsub, find = string.lower, string.sub, string.format, string.gsub, string.find
local floor = math.floor

local M = {}

M.SNIPPET = 200 -- bytes of a body quoted in a failure message

local failure_mt = { __tostring = function(e) return e.message end }

--- fail(t) raises t as a failure object (see the top of this file).
-- t.message and t.reason are required; t.retryable defaults to false.
function M.fail(t)
  if type(t.message) ~= "string" or type(t.reason) ~= "string" then
    error("fail: message and reason must be strings", 2)
  end
  t.retryable = t.retryable == true
  error(setmetatable(t, failure_mt), 0)
end

--- is_failure(v) -> boolean: v was raised by fail().
function M.is_failure(v)
  return type(v) == "table" and getmetatable(v) == failure_mt
end

--- header(headers, name) -> the value of header name (any case), or nil.
function M.header(headers, name)
  if type(headers) ~= "table" then return nil end
  local v = headers[name]
  if v ~= nil then return v end
  local want = lower(name)
  for k, val in pairs(headers) do
    if type(k) == "string" and lower(k) == want then return val end
  end
  return nil
end

--- snippet(body) -> at most SNIPPET bytes of body, control characters
-- replaced, "..." when cut: for failure messages.
function M.snippet(body)
  if type(body) == "table" then
    body = sluice.json_encode(body) or "(a table)"
  end
  body = tostring(body)
  local cut = #body > M.SNIPPET
  local s = gsub(sub(body, 1, M.SNIPPET), "[%z\1-\31\127]", " ")
  return cut and s .. "..." or s
end

--- retry_after_ms(headers) -> the wait a Retry-After header asks for, in
-- milliseconds (delay-seconds, decimals allowed), or nil when absent or an
-- HTTP date (the core's backoff then applies).
function M.retry_after_ms(headers)
  local v = M.header(headers, "Retry-After")
  if v == nil then return nil end
  v = tostring(v)
  if not find(v, "^%s*%d+%.?%d*%s*$") then return nil end
  return floor(tonumber(v) * 1000 + 0.5)
end

--- json(body, who) -> the decoded body (a string is decoded; a table is
-- taken as already decoded). A body that is not JSON raises a failure
-- "bad_response" naming who ("model", "shopify").
function M.json(body, who, status)
  if type(body) == "table" then return body end
  if type(body) ~= "string" then
    M.fail({ reason = "bad_response", status = status,
      message = format("%s: expected a JSON body, got %s", who, type(body)) })
  end
  local doc, err = sluice.json_decode(body)
  if doc == nil then
    M.fail({ reason = "bad_response", status = status,
      message = format("%s: the answer is not JSON (%s): %s", who, err, M.snippet(body)) })
  end
  return doc
end

-- What an error body says: MLflow's error_code and message, Shopify's
-- errors string, or the first bytes of the body.
local function error_text(body)
  local doc = type(body) == "table" and body or (type(body) == "string" and sluice.json_decode(body))
  if type(doc) == "table" then
    local code, msg = doc.error_code, doc.message
    if type(code) == "string" and type(msg) == "string" then return code .. ": " .. M.snippet(msg) end
    if type(msg) == "string" then return M.snippet(msg) end
    if type(doc.errors) == "string" then return M.snippet(doc.errors) end
  end
  return M.snippet(body or "")
end

--- check_status(status, headers, body, who)
-- Returns nothing for a 2xx status. Raises a failure otherwise: 429 and 5xx
-- are retryable (with the Retry-After wait when given), any other status is
-- not. The reason is "http_<status>".
function M.check_status(status, headers, body, who)
  if type(status) ~= "number" then
    error(format("%s: status must be a number, got %s", who, type(status)), 2)
  end
  if status >= 200 and status <= 299 then return end
  M.fail({
    reason = format("http_%d", status), status = status,
    retryable = status == 429 or (status >= 500 and status <= 599),
    retry_after_ms = M.retry_after_ms(headers),
    message = format("%s: HTTP %d: %s", who, status, error_text(body)),
  })
end

return M
