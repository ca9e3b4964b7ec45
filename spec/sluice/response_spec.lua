-- sluice.response and sluice.graphql: the helpers of HTTP response rules.

local response = require "sluice.response"
local graphql = require "sluice.graphql"

describe("sluice.response", function()
  it("raises failure objects that print as their message", function()
    local ok, err = pcall(response.fail, { reason = "x", message = "who: what" })
    assert.is_false(ok)
    assert.is_true(response.is_failure(err))
    assert.is_false(err.retryable)
    assert.are.equal("who: what", tostring(err))
    assert.is_false(response.is_failure("who: what"))
    assert.is_false(response.is_failure({ message = "m" }))
    assert.has_error(function() response.fail({ reason = "x" }) end)
  end)

  it("finds headers in any case", function()
    local h = { ["Retry-After"] = "3", ["content-type"] = "application/json" }
    assert.are.equal("3", response.header(h, "retry-after"))
    assert.are.equal("application/json", response.header(h, "Content-Type"))
    assert.is_nil(response.header(h, "X-Missing"))
    assert.is_nil(response.header(nil, "X"))
  end)

  it("reads Retry-After seconds, not dates", function()
    assert.are.equal(3000, response.retry_after_ms({ ["Retry-After"] = "3" }))
    assert.are.equal(1500, response.retry_after_ms({ ["retry-after"] = " 1.5 " }))
    assert.are.equal(2000, response.retry_after_ms({ ["Retry-After"] = 2 }))
    assert.is_nil(response.retry_after_ms({ ["Retry-After"] = "Wed, 21 Oct 2026 07:28:00 GMT" }))
    assert.is_nil(response.retry_after_ms({}))
  end)

  it("quotes bodies as one line of at most SNIPPET bytes", function()
    assert.are.equal("a b", response.snippet("a\nb"))
    assert.are.equal(response.SNIPPET + 3, #response.snippet(string.rep("y", 1000)))
    assert.are.equal('{"a":1}', response.snippet({ a = 1 }))
  end)

  it("passes 2xx and fails the rest with http_<status>", function()
    assert.has_no_error(function() response.check_status(204, {}, "", "t") end)
    local ok, err = pcall(response.check_status, 404, {}, '{"error_code":"NOT_FOUND","message":"no such model"}', "t")
    assert.is_false(ok)
    assert.are.equal("http_404", err.reason)
    assert.are.equal("t: HTTP 404: NOT_FOUND: no such model", err.message)
    assert.has_error(function() response.check_status("200", {}, "", "t") end)
  end)
end)

describe("sluice.graphql", function()
  it("builds {query, variables}", function()
    assert.are.same({ query = "{ shop { id } }", variables = {} }, graphql.body("{ shop { id } }", {}))
    assert.has_error(function() graphql.body("", {}) end)
  end)

  it("computes the wait until the requested cost is back", function()
    local c = { requestedQueryCost = 100, throttleStatus = { currentlyAvailable = 40, restoreRate = 50 } }
    assert.are.equal(1200, graphql.wait_ms(c))
    c.throttleStatus.currentlyAvailable = 500
    assert.are.equal(0, graphql.wait_ms(c))
    c.throttleStatus.restoreRate = 0
    assert.is_nil(graphql.wait_ms(c))
    assert.is_nil(graphql.wait_ms(nil))
    assert.is_nil(graphql.wait_ms({ requestedQueryCost = 1 }))
  end)

  it("keeps only numbers of extensions.cost", function()
    local doc = { extensions = { cost = { requestedQueryCost = "10", actualQueryCost = 3,
      throttleStatus = { currentlyAvailable = 7, restoreRate = "x" } } } }
    assert.are.same({ actualQueryCost = 3, throttleStatus = { currentlyAvailable = 7 } }, graphql.cost(doc))
    assert.is_nil(graphql.cost({}))
  end)

  it("gives data and ignores an empty errors list", function()
    local data = graphql.result(200, {}, '{"data":{"x":1},"errors":[]}', "t")
    assert.are.same({ x = 1 }, data)
  end)

  it("uses Retry-After for THROTTLED when the answer has no cost", function()
    local ok, err = pcall(graphql.result, 200, { ["Retry-After"] = "1" },
      '{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}}]}', "t")
    assert.is_false(ok)
    assert.are.equal("throttled", err.reason)
    assert.are.equal(1000, err.retry_after_ms)
  end)
end)
