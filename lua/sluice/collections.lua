--- Lists and objects as the core hands them to rules: arrays carry
-- sluice.array_mt, objects are plain tables, JSON null is sluice.null.
-- Elements are read with ordinary indexing (never rawget or #), so a lazy
-- decoder's proxy tables would work unchanged.

local sluice = require "sluice"

local type, getmetatable, next, floor, error = type, getmetatable, next, math.floor, error

local M = {}

--- is_list(v) -> boolean
-- True for an array-marked table (a decoded JSON array, even empty) and for
-- a plain Lua sequence whose first element is set.
function M.is_list(v)
  if type(v) ~= "table" then return false end
  if getmetatable(v) == sluice.array_mt then return true end
  return v[1] ~= nil
end

--- is_object(v) -> boolean
-- True for a table that is not a list (a decoded JSON object, even empty).
function M.is_object(v)
  if type(v) ~= "table" then return false end
  return getmetatable(v) ~= sluice.array_mt and v[1] == nil
end

--- take(list, n) -> list | nil, "not_a_list"
-- A new array-marked list of the first n elements of list (fewer when the
-- list is shorter; it ends at the first nil). The result is always marked,
-- so it encodes as a JSON array even when empty. n is floored; n <= 0 gives
-- an empty list. A non-empty object, or anything that is not a table, gives
-- nil, "not_a_list". n that is not a number is a programming error and
-- raises.
function M.take(list, n)
  if type(n) ~= "number" or n ~= n then
    error("take: n must be a number", 2)
  end
  if type(list) ~= "table" then return nil, "not_a_list" end
  if getmetatable(list) ~= sluice.array_mt and list[1] == nil and next(list) ~= nil then
    return nil, "not_a_list"
  end
  local out = sluice.array({})
  local i = 1
  n = floor(n)
  while i <= n do
    local v = list[i]
    if v == nil then break end
    out[i] = v
    i = i + 1
  end
  return out
end

return M
