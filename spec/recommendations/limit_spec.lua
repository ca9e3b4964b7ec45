-- The limit rule: the first 10 product GIDs of the model's answer.

local sluice = require "sluice"
local limit = require("recommendations.limit")

local fx = dofile("spec/fixtures/load.lua")

local function read(name) return fx.file("spec/fixtures/recommendations/" .. name) end

-- A context after the model step, with the given itemIds (a decoded JSON
-- list when given as text).
local function ctx_with(ids)
  if type(ids) == "string" then ids = assert(sluice.json_decode(ids)) end
  return { userId = "u1", recommendationsModelOutput = { itemIds = ids } }
end

local function gids(from, to)
  local out = sluice.array()
  for i = from, to do out[#out + 1] = "gid://shopify/Product/" .. (1000000000 + i) end
  return out
end

describe("recommendations.limit", function()
  it("keeps the first 10 of a real MLflow answer's 20 itemIds, in order", function()
    local doc = assert(sluice.json_decode(read("mlflow.predictions.json")))
    local ctx = { recommendationsModelOutput = doc.predictions[1] }
    local out = limit.limit(ctx, {})
    assert.are.equal(ctx, out, "the same context goes on")
    assert.are.equal(10, #out.recommendationIds)
    for i = 1, 10 do assert.are.equal(doc.predictions[1].itemIds[i], out.recommendationIds[i]) end
  end)

  it("keeps all of a shorter list", function()
    assert.are.same(gids(1, 3), limit.limit(ctx_with(gids(1, 3)), {}).recommendationIds)
  end)

  it("drops entries that are not product GIDs and fills up to 10 from later ones", function()
    local ids = gids(1, 12)
    table.insert(ids, 2, "gid://shopify/ProductVariant/5")
    table.insert(ids, 4, "shirt")
    table.insert(ids, 6, "gid://shopify/Product/12x")
    table.insert(ids, 7, "gid://shopify/Product/")
    table.insert(ids, 8, "gid://shopify/Product/7/")
    table.insert(ids, 9, " gid://shopify/Product/7")
    table.insert(ids, 10, 42)
    table.insert(ids, 11, sluice.null)
    local out = limit.limit(ctx_with(ids), {}).recommendationIds
    assert.are.same(gids(1, 10), out)
  end)

  it("gives an empty list, encoded as [], when nothing qualifies", function()
    local out = limit.limit(ctx_with('["shirt", "gid://shopify/Collection/1"]'), {}).recommendationIds
    assert.are.equal("[]", sluice.json_encode(out))
    out = limit.limit(ctx_with("[]"), {}).recommendationIds
    assert.are.equal("[]", sluice.json_encode(out))
  end)

  it("takes params.n, params.from and params.as", function()
    local ctx = { model = { itemIds = gids(1, 5) } }
    local out = limit.limit(ctx, { n = 2, from = "model", as = "top" })
    assert.are.same(gids(1, 2), out.top)
    assert.are.equal(0, #limit.limit(ctx_with(gids(1, 3)), { n = 0 }).recommendationIds)
  end)

  it("raises naming the variable when the model output is missing or has no list", function()
    local ok, err = pcall(limit.limit, { userId = "u1" }, {})
    assert.is_false(ok)
    assert.matches("ctx.recommendationsModelOutput must be the model's output", err)
    ok, err = pcall(limit.limit, { recommendationsModelOutput = { itemIds = "gid://shopify/Product/1" } }, {})
    assert.is_false(ok)
    assert.matches("itemIds must be a list, got string", err)
    ok, err = pcall(limit.limit, ctx_with(gids(1, 2)), { n = 2.5 })
    assert.is_false(ok)
    assert.matches("params.n must be a whole number", err)
  end)
end)
