-- The Shopify rules: the metaobjectUpsert body and the meaning of Shopify's
-- answers (spec/fixtures/shopify/responses/, shaped as the Admin API
-- answers: see spec/fixtures/shopify/README.md).

local sluice = require "sluice"
local shopify = require "recommendations.shopify"
local response = require "sluice.response"

local read = dofile("spec/fixtures/load.lua").file

local function answer(name) return read("spec/fixtures/shopify/responses/" .. name) end

local USER = "11111111-1111-4111-8111-000000000000"

local function ctx(ids)
  return { userId = USER, recommendationIds = sluice.array(ids or {
    "gid://shopify/Product/10334949278027", "gid://shopify/Product/10334948950347" }) }
end

local function failure_of(...)
  local ok, err = pcall(shopify.response, ...)
  assert(not ok, "expected a failure, the call returned")
  assert(response.is_failure(err), "expected a failure object, got: " .. tostring(err))
  return err
end

describe("recommendations.shopify.request", function()
  it("uses the seed's query text, the same bytes as the operation file", function()
    local op = read("spec/fixtures/shopify/upsert-metaobject.admin.graphql"):gsub("\n$", "")
    assert.are.equal(op, shopify.QUERY)
    assert.are.equal(op, shopify.request(ctx(), {}).query)
  end)

  it("puts the visitor's handle and the GIDs as a JSON string into the variables", function()
    local body = shopify.request(ctx(), {})
    assert.are.equal('{"query":' .. assert(sluice.json_encode(shopify.QUERY)) .. ',"variables":'
      .. '{"handle":{"handle":"customer-' .. USER .. '","type":"nu_recommendation"},'
      .. '"metaobject":{"fields":[{"key":"products","value":'
      .. '"[\\"gid://shopify/Product/10334949278027\\",\\"gid://shopify/Product/10334948950347\\"]"}]}}}',
      assert(sluice.json_encode(body)))
    local value = body.variables.metaobject.fields[1].value
    assert.are.same(ctx().recommendationIds, sluice.json_decode(value))
  end)

  it("writes an empty list as the string \"[]\"", function()
    local body = shopify.request(ctx({}), {})
    assert.are.equal("[]", body.variables.metaobject.fields[1].value)
  end)

  it("takes the metaobject type and field from params", function()
    local body = shopify.request(ctx(), { type = "nu_recommendations", field = "items" })
    assert.are.equal("nu_recommendations", body.variables.handle.type)
    assert.are.equal("items", body.variables.metaobject.fields[1].key)
  end)

  it("never puts the userId into the query text, whatever it holds", function()
    local c = ctx()
    c.userId = 'x") { __typename } #"'
    local body = shopify.request(c, {})
    assert.are.equal(shopify.QUERY, body.query)
    assert.are.equal("customer-" .. c.userId, body.variables.handle.handle)
  end)

  it("raises on a context the earlier steps should not have let through", function()
    local cases = {
      { { recommendationIds = sluice.array() }, "ctx.userId must be a non%-empty string" },
      { { userId = USER }, "ctx.recommendationIds must be a list, got nil" },
      { { userId = USER, recommendationIds = { a = 1 } }, "must be a list, got an object" },
      { { userId = USER, recommendationIds = sluice.array({ "a", 5 }) }, "recommendationIds%[2%] must be a string" },
      { { userId = string.rep("x", 250), recommendationIds = sluice.array() }, "at most 255" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(shopify.request, c[1], {})
      assert.is_false(ok)
      assert.matches(c[2], err)
    end
    local ok, err = pcall(shopify.request, ctx(), { type = "" })
    assert.is_false(ok)
    assert.matches("params.type must be a non%-empty string", err)
  end)
end)

describe("recommendations.shopify.response", function()
  it("gives the metaobject id and the query cost on success", function()
    local res = shopify.response(ctx(), 200, { ["Content-Type"] = "application/json" }, answer("upsert.ok.json"))
    assert.are.same({
      metaobject = { id = "gid://shopify/Metaobject/128934567890" },
      cost = { requestedQueryCost = 10, actualQueryCost = 10,
        throttleStatus = { maximumAvailable = 2000, currentlyAvailable = 1990, restoreRate = 100 } },
    }, res)
  end)

  it("works without extensions.cost", function()
    local body = '{"data":{"metaobjectUpsert":{"metaobject":{"id":"gid://shopify/Metaobject/1"},"userErrors":[]}}}'
    local res = shopify.response(ctx(), 200, {}, body)
    assert.are.equal("gid://shopify/Metaobject/1", res.metaobject.id)
    assert.is_nil(res.cost)
  end)

  it("dead-letters userErrors, naming each field, message and code", function()
    local f = failure_of(ctx(), 200, {}, answer("upsert.user-errors.json"))
    assert.are.equal("user_errors", f.reason)
    assert.is_false(f.retryable)
    assert.matches("shopify: metaobjectUpsert userErrors: [metaobject.fields.0.value] "
      .. "Value references a product that does not exist. (INVALID_VALUE); [handle.type] ", f.message, nil, true)
    assert.matches("(UNDEFINED_OBJECT_TYPE)", f.message, nil, true)
    assert.are.equal(1980, f.cost.throttleStatus.currentlyAvailable)
  end)

  it("dead-letters top-level errors (variables Shopify refused)", function()
    local f = failure_of(ctx(), 200, {}, answer("errors.variables.json"))
    assert.are.equal("graphql_errors", f.reason)
    assert.is_false(f.retryable)
    assert.matches("shopify: GraphQL errors: Variable $handle of type MetaobjectHandleInput! "
      .. "was provided invalid value", f.message, nil, true)
  end)

  it("marks THROTTLED retryable, with the wait its cost asks for and the bucket state", function()
    local f = failure_of(ctx(), 200, {}, answer("throttled.json"))
    assert.are.equal("throttled", f.reason)
    assert.is_true(f.retryable)
    -- (752 requested - 666 available) / 50 per second = 1.72 s
    assert.are.equal(1720, f.retry_after_ms)
    assert.are.same({ maximumAvailable = 1000, currentlyAvailable = 666, restoreRate = 50 }, f.cost.throttleStatus)
    assert.is_nil(f.cost.actualQueryCost)
    assert.matches("Throttled (THROTTLED)", f.message, nil, true)
  end)

  it("marks INTERNAL_SERVER_ERROR retryable", function()
    local f = failure_of(ctx(), 200, {}, answer("errors.internal.json"))
    assert.are.equal("internal_error", f.reason)
    assert.is_true(f.retryable)
  end)

  it("a THROTTLED error among others is not retryable", function()
    local body = '{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}},{"message":"Field x"}]}'
    local f = failure_of(ctx(), 200, {}, body)
    assert.are.equal("graphql_errors", f.reason)
    assert.is_false(f.retryable)
  end)

  it("turns HTTP statuses into failures: 429 and 5xx retryable, 401 not", function()
    local f = failure_of(ctx(), 429, { ["retry-after"] = "2.0" }, '{"errors":"Exceeded 2 calls per second"}')
    assert.are.equal("http_429", f.reason)
    assert.is_true(f.retryable)
    assert.are.equal(2000, f.retry_after_ms)
    f = failure_of(ctx(), 500, {}, "<html>oops</html>")
    assert.are.equal("http_500", f.reason)
    assert.is_true(f.retryable)
    f = failure_of(ctx(), 401, {}, answer("unauthorized.json"))
    assert.are.equal("http_401", f.reason)
    assert.is_false(f.retryable)
    assert.matches("shopify: HTTP 401: [API] Invalid API key", f.message, nil, true)
  end)

  it("dead-letters garbage and answers without a metaobject", function()
    local cases = {
      { "<html>", "the answer is not JSON" },
      { "[1]", "expected a JSON object" },
      { "{}", "neither data nor errors" },
      { '{"data":{}}', "no data.metaobjectUpsert" },
      { '{"data":{"metaobjectUpsert":{"metaobject":null,"userErrors":[]}}}', "gave no metaobject id" },
    }
    for _, c in ipairs(cases) do
      local f = failure_of(ctx(), 200, {}, c[1])
      assert.are.equal("bad_response", f.reason, c[1])
      assert.is_false(f.retryable)
      assert.matches(c[2], f.message, nil, true)
    end
  end)

  it("quotes at most a snippet of a long body", function()
    local f = failure_of(ctx(), 502, {}, string.rep("x", 5000))
    assert.is_true(#f.message < 300, "message of " .. #f.message .. " bytes")
    assert.matches("%.%.%.$", f.message)
  end)
end)
