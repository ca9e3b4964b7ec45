--- sluice: the module the core registers as package.loaded.sluice, written
-- in plain Lua for the places where the core is absent (busted specs, tools).
-- In production the core's C module is loaded first and this file is never
-- read. Same API, same JSON mapping as core/json.h:
--
--   null    <-> sluice.null (lightuserdata NULL, the same value as cjson.null)
--   array   <-> table with sluice.array_mt; a plain table whose keys are
--               exactly 1..n also encodes as an array. Holes in an
--               array-marked table encode as null; a hole-ridden one
--               (max index > 2 * count + 64) is an error, as are holes in a
--               plain table.
--   object  <-> plain table with string keys; an empty plain table is `{}`
--   number  <-> Lua number; integral values with |x| <= 2^53 print as
--               integers, -0 as `-0`, others with the shortest of
--               %.15g/%.16g/%.17g that reads back the same; NaN/inf fail
--   string  <-> string; the decoder validates UTF-8 and turns \uXXXX
--               (surrogate pairs too) into UTF-8; the encoder escapes `"`,
--               `\` and control characters, passes UTF-8 through and rejects
--               strings that are not valid UTF-8.
-- Duplicate object keys: the last one wins. Nesting deeper than MAX_DEPTH
-- fails cleanly on both sides. Object keys are written in sorted order.
-- json_decode and json_encode never raise: they return nil and a message.
--
-- Uses sluice.utf8, and lua-cjson only for its null value when installed.

local utf8 = require "sluice.utf8"

local byte, sub, find, format, gsub, char = string.byte, string.sub, string.find,
  string.format, string.gsub, string.char
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge
local type, pairs, next, tonumber, tostring, pcall, error, getmetatable, setmetatable =
  type, pairs, next, tonumber, tostring, pcall, error, getmetatable, setmetatable

local M = {}

M.MAX_DEPTH = 256 -- deepest nesting of arrays/objects accepted, as the core

local has_cjson, cjson = pcall(require, "cjson")
if has_cjson and type(cjson) == "table" and cjson.null ~= nil then
  M.null = cjson.null
else
  -- Without lua-cjson there is no NULL lightuserdata in plain Lua; a frozen
  -- sentinel stands in for it and behaves the same for == and the codec.
  M.null = setmetatable({}, {
    __tostring = function() return "null" end,
    __newindex = function() error("sluice.null is read-only", 2) end,
    __metatable = "sluice.null",
  })
end
local null = M.null

M.array_mt = {}
local array_mt = M.array_mt

--- array(t) -> t
-- Marks t as a JSON array (sets sluice.array_mt) and returns it; a new empty
-- array when t is nil.
function M.array(t)
  if t == nil then t = {} end
  return setmetatable(t, array_mt)
end

--- now() -> milliseconds since the epoch. Specs may replace it.
function M.now()
  return os.time() * 1000
end

local log_levels = { debug = true, info = true, warn = true, error = true }

--- log(level, msg): one line to stderr. level is "debug", "info" (the
-- default when nil), "warn" or "error"; msg a string or number. Other
-- arguments raise, as the core's argument checks do.
function M.log(level, msg)
  level = level == nil and "info" or level
  if not log_levels[level] then
    error("bad argument #1 to 'log' (invalid option '" .. tostring(level) .. "')", 2)
  end
  if type(msg) ~= "string" and type(msg) ~= "number" then
    error("bad argument #2 to 'log' (string expected, got " .. type(msg) .. ")", 2)
  end
  io.stderr:write(format("sluice %s lua: %s\n", level, msg))
end

-- The core sets this to a hash of the rule files' contents.
M.version = "pure-lua"

-- ==================== Decoder ====================

-- Parse errors are raised as {pos, msg} tables and caught in json_decode.
local function fail(pos, msg)
  error({ pos = pos, msg = msg }, 0)
end

local function skip_ws(s, i)
  local _, e = find(s, "^[ \t\r\n]*", i)
  return e + 1
end

local escape_chars = {
  [34] = '"', [92] = "\\", [47] = "/", [98] = "\b",
  [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t",
}

local function check_utf8(chunk, base)
  local ok, off = utf8.valid(chunk)
  if not ok then fail(base + off - 1, "invalid UTF-8") end
end

-- Reads the 4 hex digits after "\u" at k (k is the backslash).
local function hex4(s, k)
  local h = sub(s, k + 2, k + 5)
  if not find(h, "^%x%x%x%x$") then fail(k, "bad \\u escape") end
  return tonumber(h, 16)
end

-- s[i] is the opening quote. Returns the string and the index after it.
local function parse_string(s, i)
  local j = i + 1
  local parts, np = nil, 0
  while true do
    local k = find(s, '[%z\1-\31\\"]', j)
    if not k then fail(i, "unterminated string") end
    local c = byte(s, k)
    local chunk = sub(s, j, k - 1)
    check_utf8(chunk, j)
    if c == 34 then
      if not parts then return chunk, k + 1 end
      parts[np + 1] = chunk
      return concat(parts), k + 1
    elseif c ~= 92 then
      fail(k, "control character in string")
    end
    parts = parts or {}
    np = np + 1
    parts[np] = chunk
    local e = byte(s, k + 1)
    if e == 117 then                            -- \uXXXX
      local cp = hex4(s, k)
      j = k + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        if sub(s, j, j + 1) ~= "\\u" then fail(k, "lone surrogate in \\u escape") end
        local lo = hex4(s, j)
        if lo < 0xDC00 or lo > 0xDFFF then fail(k, "lone surrogate in \\u escape") end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
        j = j + 6
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        fail(k, "lone surrogate in \\u escape")
      end
      np = np + 1
      parts[np] = utf8.encode(cp)
    elseif escape_chars[e] then
      np = np + 1
      parts[np] = escape_chars[e]
      j = k + 2
    else
      fail(k, "bad escape in string")
    end
  end
end

-- JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
local function parse_number(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end
  local c = byte(s, j)
  if c == 48 then
    j = j + 1
  elseif c and c >= 49 and c <= 57 then
    local _, e = find(s, "^%d+", j)
    j = e + 1
  else
    fail(i, "bad number")
  end
  if byte(s, j) == 46 then
    local _, e = find(s, "^%d+", j + 1)
    if not e then fail(i, "bad number") end
    j = e + 1
  end
  c = byte(s, j)
  if c == 101 or c == 69 then
    local _, e = find(s, "^[+-]?%d+", j + 1)
    if not e then fail(i, "bad number") end
    j = e + 1
  end
  return tonumber(sub(s, i, j - 1)), j
end

local parse_value

local function parse_array(s, i, depth)
  if depth > M.MAX_DEPTH then fail(i, "nesting deeper than " .. M.MAX_DEPTH) end
  local t = setmetatable({}, array_mt)
  i = skip_ws(s, i + 1)
  if byte(s, i) == 93 then return t, i + 1 end
  local n = 0
  while true do
    local v
    v, i = parse_value(s, i, depth)
    n = n + 1
    t[n] = v
    i = skip_ws(s, i)
    local c = byte(s, i)
    if c == 93 then return t, i + 1 end
    if c ~= 44 then fail(i, "expected ',' or ']'") end
    i = skip_ws(s, i + 1)
  end
end

local function parse_object(s, i, depth)
  if depth > M.MAX_DEPTH then fail(i, "nesting deeper than " .. M.MAX_DEPTH) end
  local t = {}
  i = skip_ws(s, i + 1)
  if byte(s, i) == 125 then return t, i + 1 end
  while true do
    if byte(s, i) ~= 34 then fail(i, "expected a string key") end
    local k, v
    k, i = parse_string(s, i)
    i = skip_ws(s, i)
    if byte(s, i) ~= 58 then fail(i, "expected ':'") end
    v, i = parse_value(s, skip_ws(s, i + 1), depth)
    t[k] = v
    i = skip_ws(s, i)
    local c = byte(s, i)
    if c == 125 then return t, i + 1 end
    if c ~= 44 then fail(i, "expected ',' or '}'") end
    i = skip_ws(s, i + 1)
  end
end

local literals = { [116] = { "true", true }, [102] = { "false", false }, [110] = { "null", null } }

function parse_value(s, i, depth)
  local c = byte(s, i)
  if c == 123 then return parse_object(s, i, depth + 1) end
  if c == 91 then return parse_array(s, i, depth + 1) end
  if c == 34 then return parse_string(s, i) end
  if c == 45 or (c and c >= 48 and c <= 57) then return parse_number(s, i) end
  local lit = literals[c]
  if lit and sub(s, i, i + #lit[1] - 1) == lit[1] then return lit[2], i + #lit[1] end
  if not c then fail(i, "unexpected end of input") end
  fail(i, "unexpected character")
end

local function parse_document(s)
  local v, i = parse_value(s, skip_ws(s, 1), 0)
  i = skip_ws(s, i)
  if i <= #s then fail(i, "trailing characters after the value") end
  return v
end

--- json_decode(s) -> value | nil, err
-- Decodes the JSON text s. err names the problem and its byte offset.
function M.json_decode(s)
  if type(s) ~= "string" then
    return nil, "json_decode: expected a string, got " .. type(s)
  end
  local ok, v = pcall(parse_document, s)
  if ok then return v end
  if type(v) == "table" then
    return nil, format("json_decode: %s at byte %d", v.msg, v.pos)
  end
  return nil, "json_decode: " .. tostring(v)
end

-- ==================== Encoder ====================

local function efail(msg)
  error({ msg = msg }, 0)
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
for c = 0, 31 do
  if not escapes[char(c)] then escapes[char(c)] = format("\\u%04x", c) end
end

local function quote(s)
  if not utf8.valid(s) then efail("string is not valid UTF-8") end
  return '"' .. gsub(s, '[%z\1-\31\\"]', escapes) .. '"'
end

local function number_text(x)
  if x ~= x or x == huge or x == -huge then efail("cannot encode NaN or infinity") end
  if x == 0 then return 1 / x < 0 and "-0" or "0" end
  if x == floor(x) and x <= 2^53 and x >= -2^53 then return format("%d", x) end
  local s = format("%.15g", x)
  if tonumber(s) ~= x then s = format("%.16g", x) end
  if tonumber(s) ~= x then s = format("%.17g", x) end
  return s
end

local function is_index(k)
  return type(k) == "number" and k >= 1 and k == floor(k) and k < huge
end

local encode_value

local function encode_elements(t, max, buf, n, depth)
  n = n + 1
  buf[n] = "["
  for i = 1, max do
    if i > 1 then n = n + 1; buf[n] = "," end
    n = encode_value(t[i], buf, n, depth)
  end
  n = n + 1
  buf[n] = "]"
  return n
end

local function encode_table(t, buf, n, depth)
  if depth > M.MAX_DEPTH then efail("nesting deeper than " .. M.MAX_DEPTH .. " (or a cycle)") end
  if getmetatable(t) == array_mt then
    local max, count = 0, 0
    for k in pairs(t) do
      if not is_index(k) then efail("array-marked table has a key that is not an index") end
      count = count + 1
      if k > max then max = k end
    end
    if max > 2 * count + 64 then efail("array-marked table is too sparse") end
    return encode_elements(t, max, buf, n, depth)
  end
  if next(t) == nil then
    n = n + 1
    buf[n] = "{}"
    return n
  end
  local keys, nkeys, max, count = {}, 0, 0, 0
  for k in pairs(t) do
    if type(k) == "string" then
      nkeys = nkeys + 1
      keys[nkeys] = k
    elseif is_index(k) then
      count = count + 1
      if k > max then max = k end
    else
      efail("table has a key that is neither a string nor an index")
    end
  end
  if nkeys > 0 and count > 0 then efail("table mixes string and index keys") end
  if count > 0 then
    if max ~= count then efail("plain table has holes") end
    return encode_elements(t, max, buf, n, depth)
  end
  sort(keys)
  n = n + 1
  buf[n] = "{"
  for i = 1, nkeys do
    local k = keys[i]
    n = n + 1
    buf[n] = (i > 1 and "," or "") .. quote(k) .. ":"
    n = encode_value(t[k], buf, n, depth)
  end
  n = n + 1
  buf[n] = "}"
  return n
end

function encode_value(v, buf, n, depth)
  local tv = type(v)
  local text
  if v == nil or v == null then
    text = "null"
  elseif tv == "table" then
    return encode_table(v, buf, n, depth + 1)
  elseif tv == "string" then
    text = quote(v)
  elseif tv == "number" then
    text = number_text(v)
  elseif tv == "boolean" then
    text = v and "true" or "false"
  else
    efail("cannot encode a " .. tv)
  end
  n = n + 1
  buf[n] = text
  return n
end

local function encode_document(v)
  local buf = {}
  encode_value(v, buf, 0, 0)
  return concat(buf)
end

--- json_encode(v) -> string | nil, err
-- The JSON text of v, following the mapping at the top of this file.
function M.json_encode(v)
  local ok, s = pcall(encode_document, v)
  if ok then return s end
  if type(s) == "table" then return nil, "json_encode: " .. s.msg end
  return nil, "json_encode: " .. tostring(s)
end

return M
