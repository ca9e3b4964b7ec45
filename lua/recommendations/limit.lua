--- Recommendations, the limit: the first 10 product GIDs of the model's
-- answer (the seed's `#COLLECTION.take(#recommendationsModelOutput.itemIds, 10)`).
--
-- limit(ctx, params) sets ctx.recommendationIds to the first params.n
-- (default 10) entries of ctx.recommendationsModelOutput.itemIds that are
-- Shopify product GIDs ("gid://shopify/Product/<digits>"), in the model's
-- order, and returns ctx. Other entries (another kind of GID, a handle, a
-- number) are skipped without a trace: the model may know products the
-- store does not sell. When none remains the list is empty and the context
-- goes on, so the visitor's metaobject is overwritten with [] rather than
-- left with recommendations of an older window. Excluding what the visitor
-- has just viewed is the model's job, as in the seed.
--
-- params.from and params.as rename the variables read and set (defaults
-- "recommendationsModelOutput" and "recommendationIds"). A missing model
-- output or one without an itemIds list raises: the model step's `output`
-- rule guarantees its shape, so this is a pipeline error.

local sluice = require "sluice"
local collections = require "sluice.collections"

local type, tostring, error, format, floor, find = type, tostring, error, string.format, math.floor, string.find

local M = {}

M.N = 10 -- how many recommendations when params.n is not given

--- is_product_gid(v) -> boolean: v is "gid://shopify/Product/<digits>".
function M.is_product_gid(v)
  return type(v) == "string" and find(v, "^gid://shopify/Product/%d+$") ~= nil
end

-- What is_product_gid said of the strings seen lately: a product's GID is
-- matched once, not in every window (string.find with a pattern is not
-- compiled by LuaJIT). Cleared when it holds MEMO_MAX strings.
local MEMO_MAX = 4096
local memo, memo_n = {}, 0

local function product_gid(v)
  if type(v) ~= "string" then return false end
  local r = memo[v]
  if r == nil then
    r = M.is_product_gid(v)
    if memo_n >= MEMO_MAX then memo, memo_n = {}, 0 end
    memo[v] = r
    memo_n = memo_n + 1
  end
  return r
end

--- limit(ctx, params) -> ctx (see the top of this file).
function M.limit(ctx, params)
  local n = params and params.n or M.N
  local from = params and params.from or "recommendationsModelOutput"
  local as = params and params.as or "recommendationIds"
  if type(n) ~= "number" or n ~= floor(n) or n < 0 then
    error("limit: params.n must be a whole number >= 0, got " .. tostring(n), 2)
  end
  local out = ctx[from]
  if not collections.is_object(out) then
    error(format("limit: ctx.%s must be the model's output (an object with itemIds), got %s", from, type(out)), 2)
  end
  local ids = out.itemIds
  if not collections.is_list(ids) then
    error(format("limit: ctx.%s.itemIds must be a list, got %s", from,
      type(ids) == "table" and "an object" or type(ids)), 2)
  end
  local picked, k, i = sluice.array(), 0, 1
  while k < n do
    local id = ids[i]
    if id == nil then break end
    if product_gid(id) then
      k = k + 1
      picked[k] = id
    end
    i = i + 1
  end
  ctx[as] = picked
  return ctx
end

return M
