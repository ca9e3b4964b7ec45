--- Snowplow tracker payloads as the collector hands them over.
--
-- A record is {"message": <tracker payload>, "collector": {...}}. The tracker
-- payload is a payload_data 1-0-4 object whose `data` is a list of events;
-- every value of an event is a string (dtm, the device timestamp in ms,
-- included). A POST carries the tracker's body (one or several events); for
-- a GET the collector builds the same object around the one event of the
-- query string (payload_from_query does the same here).
--
-- Every function takes whatever it is given and answers with a value or
-- nil and a short snake_case reason; none raises on bad input.
-- Uses sluice (json_decode, array) and sluice.collections, sluice.utf8.

local sluice = require "sluice"
local collections = require "sluice.collections"
local utf8 = require "sluice.utf8"

local type, tonumber, floor, next = type, tonumber, math.floor, next
local sub, find, gsub, lower, char, byte = string.sub, string.find, string.gsub,
  string.lower, string.char, string.byte

local M = {}

M.PAYLOAD_SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"

local MAX_SAFE_INTEGER = 2^53

-- ==================== Payload ====================

--- payload(input) -> payload, data | nil, reason
-- Checks the collector record `input` and returns its tracker payload and
-- the payload's event list. Reasons: "not_json_object" (input is not an
-- object), "message_not_an_object" (message missing, or neither an object
-- nor a string holding one), "wrong_schema", "data_not_a_list".
-- A message that is a JSON string is decoded, so a collector that embeds
-- the raw body as text works too.
function M.payload(input)
  if not collections.is_object(input) then return nil, "not_json_object" end
  local message = input.message
  if type(message) == "string" then message = sluice.json_decode(message) end
  if not collections.is_object(message) then return nil, "message_not_an_object" end
  if message.schema ~= M.PAYLOAD_SCHEMA then return nil, "wrong_schema" end
  local data = message.data
  if not collections.is_list(data) then return nil, "data_not_a_list" end
  return message, data
end

--- events(data) -> iterator of i, event
-- The events of a payload's data list in order, stopping at the first nil.
-- Elements are given as they are: the caller checks they are objects.
function M.events(data)
  local i = 0
  return function()
    i = i + 1
    local ev = data[i]
    if ev == nil then return nil end
    return i, ev
  end
end

-- ==================== Fields ====================

--- text(v, max) -> v | nil
-- v when it is a non-empty string of valid UTF-8, without control
-- characters, at most max bytes long (default 256); else nil.
function M.text(v, max)
  if type(v) ~= "string" then return nil end
  local n = #v
  if n == 0 or n > (max or 256) then return nil end
  local ascii = true
  for i = 1, n do
    local c = byte(v, i)
    if c < 32 or c == 127 then return nil end
    if c >= 128 then ascii = false end
  end
  if not ascii and not utf8.valid(v) then return nil end
  return v
end

--- timestamp(v) -> integer ms | nil
-- A tracker timestamp (dtm, stm): a string of 1 to 16 digits, or an
-- integral number, within 0..2^53. Anything else is nil.
function M.timestamp(v)
  local n
  if type(v) == "string" then
    local len = #v
    if len == 0 or len > 16 then return nil end
    n = 0
    for i = 1, len do                -- digits only; a loop the JIT compiles
      local c = byte(v, i)
      if c < 48 or c > 57 then return nil end
      n = n * 10 + (c - 48)
    end
    if len == 16 and v > "9007199254740992" then return nil end   -- would round
  elseif type(v) == "number" then
    if v ~= floor(v) then return nil end
    n = v
  else
    return nil
  end
  if n < 0 or n > MAX_SAFE_INTEGER then return nil end
  return n
end

-- ==================== URLs ====================

local function hex_byte(h)
  return char(tonumber(h, 16))
end

--- percent_decode(s, plus_is_space) -> string | nil, "bad_percent_encoding"
-- Decodes %XX sequences (either case). A '%' not followed by two hex
-- digits is an error. With plus_is_space (query strings), '+' is a space.
-- The result is bytes: callers check UTF-8 when they need text.
function M.percent_decode(s, plus_is_space)
  if type(s) ~= "string" then return nil, "bad_percent_encoding" end
  if find(s, "%%%X") or find(s, "%%%x%X") or find(s, "%%%x?$") then
    return nil, "bad_percent_encoding"
  end
  if plus_is_space then s = gsub(s, "+", " ") end
  return (gsub(s, "%%(%x%x)", hex_byte))
end

-- The store URL without trailing slashes, lower-cased for comparison;
-- cached per store_url since params rarely change.
local bases, nbases = {}, 0
local function store_base(store_url)
  local base = bases[store_url]
  if not base then
    base = lower((gsub(store_url, "/+$", "")))
    if nbases >= 64 then bases, nbases = {}, 0 end
    bases[store_url] = base
    nbases = nbases + 1
  end
  return base
end

--- product_slug(url, store_url) -> slug | nil, reason
-- The product handle of a storefront URL: url must be
-- store_url .. "/products/" .. slug, optionally followed by one '/' and a
-- query string or fragment, which are dropped. The slug is percent-decoded
-- and must be valid UTF-8 without control characters or '/'.
-- Scheme and host compare case-insensitively, a trailing '/' on store_url
-- is ignored. Reasons: "missing_url" (not a non-empty string),
-- "not_a_product_url" (another site, or a page of the store that is not a
-- product), "bad_url" (malformed percent-encoding or slug).
function M.product_slug(url, store_url)
  if type(url) ~= "string" or url == "" then return nil, "missing_url" end
  if type(store_url) ~= "string" then return nil, "not_a_product_url" end
  local base = store_base(store_url)
  local prefix_end = #base + #"/products/"
  local head = sub(url, 1, #base)
  if (head ~= base and lower(head) ~= base) or sub(url, #base + 1, prefix_end) ~= "/products/" then
    return nil, "not_a_product_url"
  end
  local path_end = #url
  local q, h = find(url, "?", prefix_end + 1, true), find(url, "#", prefix_end + 1, true)
  if q and (not h or q < h) then path_end = q - 1 elseif h then path_end = h - 1 end
  if byte(url, path_end) == 47 then path_end = path_end - 1 end   -- one trailing '/'
  local raw = sub(url, prefix_end + 1, path_end)
  if raw == "" or find(raw, "/", 1, true) then return nil, "not_a_product_url" end
  local slug = raw
  if find(raw, "%", 1, true) then
    slug = M.percent_decode(raw)
    if not slug or find(slug, "/", 1, true) then return nil, "bad_url" end
  end
  if not M.text(slug, 1024) then return nil, "bad_url" end
  return slug
end

-- ==================== GET requests ====================

--- decode_query(qs) -> table | nil, "bad_query"
-- The parameters of a query string (without the '?') as a table of
-- strings, as the tracker's GET sends an event: name=value pairs joined by
-- '&', percent-encoded, '+' meaning space. A name given twice keeps its
-- last value (as Snowplow's enrich and the collector read it); empty pairs
-- and pairs with an empty name ("=x") are skipped, as the collector skips
-- them. Names and values must decode to valid UTF-8.
function M.decode_query(qs)
  if type(qs) ~= "string" then return nil, "bad_query" end
  local out = {}
  for pair in qs:gmatch("[^&]+") do
    local eq = find(pair, "=", 1, true)
    if eq ~= 1 then
      local name = M.percent_decode(eq and sub(pair, 1, eq - 1) or pair, true)
      local value = M.percent_decode(eq and sub(pair, eq + 1) or "", true)
      if not name or not value or not utf8.valid(name) or not utf8.valid(value) then
        return nil, "bad_query"
      end
      out[name] = value
    end
  end
  return out
end

--- payload_from_query(qs) -> payload | nil, "bad_query"
-- The payload_data 1-0-4 object the collector builds for a GET: the
-- decoded query string as the one event of `data`; sluice.json_encode of it
-- is the collector's record message byte for byte. A query without any
-- parameter is "bad_query", as the collector answers it.
function M.payload_from_query(qs)
  local event, why = M.decode_query(qs)
  if not event then return nil, why end
  if next(event) == nil then return nil, "bad_query" end
  return { schema = M.PAYLOAD_SCHEMA, data = sluice.array({ event }) }
end

return M
