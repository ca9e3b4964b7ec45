--- Recommendations, step 1: product page views out of Snowplow records.
--
-- extract(ctx, params) takes a collector record (ctx.input) and gives one
-- context per product page view of the store's app:
--   {input = ctx.input, kafka = ctx.kafka, userId = <duid>, eventId = <eid>,
--    product = {slug = <product handle>, viewTimestamp = <dtm, integer ms>}}
-- plus any other variable ctx already had. A batched POST gives several, in
-- the order the tracker sent them.
--
-- params: app_id (the tracker's appId, compared with each event's `aid`)
-- and store_url (the storefront origin, e.g. "https://shop.example.com").
-- Missing params are a configuration error and raise, so the records go to
-- the dead-letter topic instead of being dropped.
--
-- Filter reasons, for the record: not_json_object, message_not_an_object,
-- wrong_schema, data_not_a_list; or, when no event qualifies, the reason of
-- the first event rejected: event_not_an_object, no_page_view (also for an
-- empty list), wrong_app_id, missing_duid, bad_duid, missing_eid, bad_eid,
-- missing_url, not_a_product_url, bad_url, missing_dtm, bad_dtm,
-- duplicate_eid (the same eid earlier in the same record).
--
-- Duplicates across records (a tracker re-sends an event whose response it
-- never read: same eid, new stm) are not removed here; that needs state.

local sluice = require "sluice"
local snowplow = require "sluice.snowplow"
local collections = require "sluice.collections"

local type, pairs, error = type, pairs, error

local M = {}

local function check_params(params)
  if type(params) ~= "table" then
    error("extract: params must be a table with app_id and store_url", 3)
  end
  local app_id, store_url = params.app_id, params.store_url
  if type(app_id) ~= "string" or app_id == "" then
    error("extract: params.app_id must be a non-empty string", 3)
  end
  if type(store_url) ~= "string" or store_url == "" then
    error("extract: params.store_url must be a non-empty string", 3)
  end
  return app_id, store_url
end

-- The product view of one event, or nil and why the event does not count.
local function page_view(ev, app_id, store_url)
  if not collections.is_object(ev) then return nil, "event_not_an_object" end
  if ev.e ~= "pv" then return nil, "no_page_view" end
  if ev.aid ~= app_id then return nil, "wrong_app_id" end
  local duid = ev.duid
  if type(duid) ~= "string" or duid == "" then return nil, "missing_duid" end
  if not snowplow.text(duid) then return nil, "bad_duid" end
  local eid = ev.eid
  if type(eid) ~= "string" or eid == "" then return nil, "missing_eid" end
  if not snowplow.text(eid) then return nil, "bad_eid" end
  local slug, why = snowplow.product_slug(ev.url, store_url)
  if not slug then return nil, why end
  local dtm = ev.dtm
  if dtm == nil or dtm == sluice.null or dtm == "" then return nil, "missing_dtm" end
  local ts = snowplow.timestamp(dtm)
  if not ts then return nil, "bad_dtm" end
  return duid, eid, slug, ts
end

local function new_context(ctx, duid, eid, slug, ts)
  -- The members every context has, in a constructor: the table is made
  -- with room for them, not grown member by member.
  local out = { input = ctx.input, kafka = ctx.kafka, userId = duid, eventId = eid,
    product = { slug = slug, viewTimestamp = ts } }
  for k, v in pairs(ctx) do
    if out[k] == nil then out[k] = v end
  end
  return out
end

--- extract(ctx, params) -> ctx | {ctx, ...} | nil, reason
-- One qualifying event gives its context, several give a list of them in
-- event order, none gives nil and a reason (see the top of this file).
function M.extract(ctx, params)
  local app_id, store_url = check_params(params)
  if type(ctx) ~= "table" then return nil, "not_json_object" end
  local payload, data = snowplow.payload(ctx.input)
  if not payload then return nil, data end
  -- One qualifying event (the common case) makes no list and no set.
  local first, out, seen, first_reason
  local i = 1
  while true do
    local ev = data[i]
    if ev == nil then break end
    i = i + 1
    local duid, eid, slug, ts = page_view(ev, app_id, store_url)
    local reason
    if not duid then
      reason = eid                    -- page_view's reason comes second
    elseif first == nil then
      first = new_context(ctx, duid, eid, slug, ts)
    elseif eid == first.eventId or (seen and seen[eid]) then
      reason = "duplicate_eid"
    else
      if not out then out, seen = { first }, { [first.eventId] = true } end
      seen[eid] = true
      out[#out + 1] = new_context(ctx, duid, eid, slug, ts)
    end
    if reason and not first_reason then first_reason = reason end
  end
  if first == nil then return nil, first_reason or "no_page_view" end
  return out or first
end

return M
