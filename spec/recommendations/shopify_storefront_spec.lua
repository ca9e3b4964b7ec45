-- The Shopify theme snippet's Storefront query (examples/shopify/): the text
-- assets/sluice-recs-shopify.js sends is the one in
-- recommendations.storefront.graphql, and it validates against Shopify's
-- Storefront schema 2026-07 (spec/fixtures/shopify/storefront-graphql_2026-07.json.gz)
-- with the variables the snippet builds; one query brings the metaobject's
-- time and the products' titles, images, prices and links. The negative cases
-- prove the check refuses what Shopify would.

local sluice = require "sluice"
local graphql = dofile("spec/fixtures/graphql.lua")
local read = dofile("spec/fixtures/load.lua").file

local STOREFRONT = "spec/fixtures/shopify/storefront-graphql_2026-07.json.gz"
local ADMIN = "spec/fixtures/shopify/admin_2026-07.json.gz"
local QUERY = read("examples/shopify/recommendations.storefront.graphql"):gsub("\n$", "")
local DUID = "4f1195b8-6b68-4cd6-a7eb-925bd120e8ad"

local function body(query, handle)
  return { query = query or QUERY,
           variables = { handle = handle or { type = "nu_recommendation", handle = "customer-" .. DUID } } }
end

describe("the Shopify snippet's Storefront query", function()
  it("is the text the snippet's script sends", function()
    local js = read("examples/shopify/assets/sluice-recs-shopify.js")
    local sent = js:match("var QUERY = '([^']*)';")
    assert.is_string(sent, "no QUERY string in sluice-recs-shopify.js")
    assert.are.equal(QUERY, sent)
  end)

  it("reads the metaobject's time and, in the same query, the products' title, image, price and link", function()
    for _, f in ipairs({ "metaobject%(handle: %$handle%)", "updatedAt", 'field%(key: "products"%)',
                         "references%(first: 10%)", "%.%.%. on Product", "title", "onlineStoreUrl",
                         "featuredImage", "minVariantPrice" }) do
      assert.matches(f, QUERY)
    end
    local n = 0
    for _ in QUERY:gmatch("query ") do n = n + 1 end
    assert.are.equal(1, n)
  end)

  local no_fragment = QUERY:gsub("%.%.%. on Product { (.-) } } } } } }$", "%1 } } } } }")
  local cases = {
    { "accepts the snippet's query and variables", STOREFRONT, body(), true },
    { "refuses a misspelt field", STOREFRONT, body((QUERY:gsub("altText", "altTxt"))), false,
      'Cannot query field "altTxt" on type "Image"' },
    { "refuses a handle without its type", STOREFRONT, body(nil, { handle = "customer-" .. DUID }), false,
      'Field "type" of required type "String!" was not provided' },
    { "refuses products read without the Product fragment", STOREFRONT, body(no_fragment), false,
      'Cannot query field "id" on type "MetafieldReference"' },
    { "refuses the query against the Admin schema (metaobject there takes no handle)", ADMIN, body(), false,
      'Unknown argument "handle"' },
  }
  local results = {}
  for i, c in ipairs(cases) do
    it(c[1], function()
      if not results[c[2]] then
        local bodies, idx = {}, {}
        for j, d in ipairs(cases) do
          if d[2] == c[2] then bodies[#bodies + 1] = d[3]; idx[j] = #bodies end
        end
        local rs = graphql.check_all(c[2], bodies)
        results[c[2]] = {}
        for j, k in pairs(idx) do results[c[2]][j] = rs[k] end
      end
      local r = results[c[2]][i]
      local errs = table.concat(r.errors or {}, " | ")
      if c[4] then
        assert.is_true(r.ok, "expected valid, got: " .. errs)
      else
        assert.is_false(r.ok, "expected the check to refuse it")
        assert.matches(c[5], errs, nil, true)
      end
    end)
  end

  it("the section and loader are where the README says", function()
    local liquid = read("examples/shopify/sections/sluice-recommendations.liquid")
    assert.matches("sluice-recs-widget.js", liquid, nil, true)
    assert.matches("sluice-recs-shopify.js", liquid, nil, true)
    assert.matches('"name": "Sluice recommendations"', liquid, nil, true)
    assert.is_table(sluice.json_decode(liquid:match("{%% schema %%}(.-){%% endschema %%}")))
  end)
end)
