--- Recommendations, the Shopify write: the body of the metaobjectUpsert
-- mutation for an `http` step, and what its answer means.
--
--   { name = "shopify", http = { url = <store>/admin/api/<version>/graphql.json,
--       headers = { ["X-Shopify-Access-Token"] = env(...) }, ...,
--       request = "recommendations.shopify.request",
--       response = "recommendations.shopify.response", as = "sendResult",
--       params = { type = "nu_recommendation" } } }
--
-- request(ctx, params) -> the body: the seed's mutation, with the visitor's
-- handle "customer-<userId>" (of metaobject type params.type, default
-- "nu_recommendation") and the field params.field (default "products") set
-- to the JSON text of ctx.recommendationIds (a list of product GIDs; the
-- field's value is a String in the Admin schema). The userId is only ever
-- a variable, never part of the query text.
--
-- response(ctx, status, headers, body) -> sendResult:
--   { metaobject = { id = "gid://shopify/Metaobject/..." },
--     cost = { requestedQueryCost, actualQueryCost,
--              throttleStatus = { maximumAvailable, currentlyAvailable, restoreRate } } }
-- cost is nil when Shopify sent none. The step keeps its cost bucket from
-- cost.throttleStatus.
--
-- Failures are raised as failure objects (sluice.response: message, reason,
-- retryable, retry_after_ms, cost):
--   throttled       retryable: errors[].extensions.code THROTTLED (HTTP 200);
--                   retry_after_ms = (requestedQueryCost - currentlyAvailable)
--                   / restoreRate, from the answer's extensions.cost
--   http_429        retryable, retry_after_ms from Retry-After
--   http_5xx, internal_error   retryable (an upsert may be repeated)
--   user_errors     not retryable: metaobjectUpsert.userErrors not empty (the
--                   message lists field, message and code of each)
--   graphql_errors  not retryable: other top-level errors (a query or
--                   variables Shopify refused, access denied)
--   http_<status>   not retryable: any other status (401: a bad token)
--   bad_response    not retryable: not JSON, no data, no metaobject
-- A step retries a retryable failure (after retry_after_ms when given) up to
-- its `retries`, then dead-letters it like the others.

local sluice = require "sluice"
local collections = require "sluice.collections"
local graphql = require "sluice.graphql"
local response = require "sluice.response"

local type, ipairs, tostring, error, format, concat, huge =
  type, ipairs, tostring, error, string.format, table.concat, math.huge

local M = {}

--- The seed's mutation, byte for byte (spec/fixtures/shopify/
-- upsert-metaobject.admin.graphql; spec/recommendations/
-- shopify_schema_spec.lua validates it against the Admin schema).
M.QUERY = "mutation UpsertMetaobject($metaobject: MetaobjectUpsertInput!, $handle: MetaobjectHandleInput!) "
  .. "{ metaobjectUpsert(handle: $handle, metaobject: $metaobject) "
  .. "{ metaobject { id } userErrors { field message code } } }"

M.TYPE = "nu_recommendation"    -- the metaobject type when params.type is not given
M.FIELD = "products"            -- the field of the GID list when params.field is not given
M.HANDLE_PREFIX = "customer-"   -- handle = prefix .. userId (the storefront reads it so)
M.MAX_HANDLE = 255              -- Shopify's longest handle

local function param(params, name, default)
  local v = params and params[name]
  if v == nil then return default end
  if type(v) ~= "string" or v == "" then
    error(format("shopify.request: params.%s must be a non-empty string", name), 3)
  end
  return v
end

--- request(ctx, params) -> body (see the top of this file). Raises when
-- ctx has no userId or recommendationIds is not a list of strings: those
-- come from earlier steps, so it is a pipeline error, not bad input.
function M.request(ctx, params)
  local mtype = param(params, "type", M.TYPE)
  local field = param(params, "field", M.FIELD)
  local user = ctx.userId
  if type(user) ~= "string" or user == "" then
    error("shopify.request: ctx.userId must be a non-empty string, got " .. type(user), 2)
  end
  local handle = M.HANDLE_PREFIX .. user
  if #handle > M.MAX_HANDLE then
    error(format("shopify.request: the handle of userId is %d bytes, Shopify takes at most %d", #handle,
      M.MAX_HANDLE), 2)
  end
  local ids = ctx.recommendationIds
  local list = type(ids) == "table" and collections.take(ids, huge)
  if not list then
    error("shopify.request: ctx.recommendationIds must be a list, got "
      .. (type(ids) == "table" and "an object" or type(ids)), 2)
  end
  for i, id in ipairs(list) do
    if type(id) ~= "string" then
      error(format("shopify.request: ctx.recommendationIds[%d] must be a string, got %s", i, type(id)), 2)
    end
  end
  local value = assert(sluice.json_encode(list))
  return graphql.body(M.QUERY, {
    handle = { handle = handle, type = mtype },
    metaobject = { fields = sluice.array({ { key = field, value = value } }) },
  })
end

-- "[metaobject.fields.0.value] message (CODE)" of one userError.
local function user_error_line(e)
  if type(e) ~= "table" then return tostring(e) end
  local parts = {}
  if collections.is_list(e.field) then
    local path = {}
    for i, p in ipairs(e.field) do path[i] = tostring(p) end
    parts[#parts + 1] = "[" .. concat(path, ".") .. "]"
  end
  parts[#parts + 1] = type(e.message) == "string" and e.message or "(no message)"
  if type(e.code) == "string" then parts[#parts + 1] = "(" .. e.code .. ")" end
  return concat(parts, " ")
end

--- response(ctx, status, headers, body) -> sendResult (see the top of this
-- file), or raises a failure.
function M.response(_, status, headers, body)
  local data, cost = graphql.result(status, headers, body, "shopify")
  local payload = data.metaobjectUpsert
  if not collections.is_object(payload) then
    response.fail({ reason = "bad_response", status = status, cost = cost,
      message = "shopify: the answer has no data.metaobjectUpsert: " .. response.snippet(body) })
  end
  local errs = payload.userErrors
  if collections.is_list(errs) and errs[1] ~= nil then
    local lines = {}
    for i, e in ipairs(errs) do lines[i] = user_error_line(e) end
    response.fail({ reason = "user_errors", status = status, cost = cost,
      message = "shopify: metaobjectUpsert userErrors: " .. response.snippet(concat(lines, "; ")) })
  end
  local mo = payload.metaobject
  if not collections.is_object(mo) or type(mo.id) ~= "string" then
    response.fail({ reason = "bad_response", status = status, cost = cost,
      message = "shopify: metaobjectUpsert gave no metaobject id: " .. response.snippet(body) })
  end
  return { metaobject = { id = mo.id }, cost = cost }
end

return M
