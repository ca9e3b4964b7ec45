-- The body the Shopify rule builds, checked against Shopify's Admin GraphQL
-- schema 2026-07 (spec/fixtures/shopify/admin_2026-07.json.gz) by graphql-js
-- (scripts/graphql-check.js): the query text validates and the variables
-- coerce to the declared input types. The negative cases prove the check
-- catches a wrong query and wrongly shaped variables.
--
-- Needs node and the npm package graphql (package.json): scripts/node-deps.sh
-- installs them, and scripts/test.sh runs it before the specs.

local sluice = require "sluice"
local shopify = require "recommendations.shopify"
local limit = require "recommendations.limit"
local model = require "recommendations.model"

local SCHEMA = "spec/fixtures/shopify/admin_2026-07.json.gz"

local read = dofile("spec/fixtures/load.lua").file
local FIX = "spec/fixtures/recommendations/"

-- The body the rules build for the real window context and MLflow answer.
local function body_of(ids_override)
  local ctx = assert(sluice.json_decode(read(FIX .. "window.ctx.json")))
  ctx.recommendationsModelOutput = model.output(ctx, 200, {}, read(FIX .. "mlflow.predictions.json"))
  ctx = limit.limit(ctx, {})
  if ids_override then ctx.recommendationIds = ids_override end
  return shopify.request(ctx, {})
end

local graphql = dofile("spec/fixtures/graphql.lua")
local copy = graphql.copy

describe("the Shopify body against the Admin schema 2026-07", function()
  local good = body_of()
  local cases = {
    { name = "the body of a real window", body = good, ok = true },
    { name = "an empty recommendation list", body = body_of(sluice.array()), ok = true },
    { name = "params.type and params.field", ok = true,
      body = shopify.request({ userId = "u1", recommendationIds = sluice.array() }, { type = "t", field = "f" }) },
  }
  local function bad(name, want, change)
    local b = copy(good)
    change(b)
    cases[#cases + 1] = { name = name, body = b, ok = false, want = want }
  end
  bad("the value as a list instead of a JSON string", "String cannot represent a non string value",
    function(b) b.variables.metaobject.fields[1].value = sluice.json_decode(b.variables.metaobject.fields[1].value) end)
  bad("a handle without its type", 'Field "type" of required type "String!" was not provided',
    function(b) b.variables.handle.type = nil end)
  bad("an unknown field in a metaobject field", 'Field "name" is not defined by type "MetaobjectFieldInput"',
    function(b) b.variables.metaobject.fields[1].name = "x" end)
  bad("no metaobject variable", 'Variable "$metaobject" of required type "MetaobjectUpsertInput!" was not provided',
    function(b) b.variables.metaobject = nil end)
  bad("a variable the operation does not declare", "$userId is not declared",
    function(b) b.variables.userId = "u1" end)
  bad("a misspelt field in the query", 'Cannot query field "userError" on type "MetaobjectUpsertPayload"',
    function(b) b.query = b.query:gsub("userErrors", "userError") end)
  bad("a query that does not parse", "Syntax Error",
    function(b) b.query = b.query:sub(1, -3) end)

  local results
  local function result(i)
    results = results or graphql.check_all(SCHEMA, (function()
      local bodies = {}
      for j, c in ipairs(cases) do bodies[j] = c.body end
      return bodies
    end)())
    return results[i]
  end

  for i, c in ipairs(cases) do
    it((c.ok and "accepts " or "refuses ") .. c.name, function()
      local r = result(i)
      local errs = table.concat(r.errors or {}, " | ")
      if c.ok then
        assert.is_true(r.ok, "expected valid, got: " .. errs)
      else
        assert.is_false(r.ok, "expected the check to refuse it")
        assert.matches(c.want, errs, nil, true)
      end
    end)
  end

  it("checked the rule's exact query text, the operation file's", function()
    assert.are.equal(read("spec/fixtures/shopify/upsert-metaobject.admin.graphql"):gsub("\n$", ""), good.query)
  end)
end)
