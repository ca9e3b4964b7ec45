-- The model rules: the MLflow scoring request built from a real window
-- aggregate, and the model's answers (a real MLflow server's, captured in
-- spec/fixtures/recommendations/) turned into recommendationsModelOutput.

local sluice = require "sluice"
local model = require "recommendations.model"
local response = require "sluice.response"

local FIX = "spec/fixtures/recommendations/"

local fx = dofile("spec/fixtures/load.lua")

local function read(name) return fx.file(FIX .. name) end

-- The context the window step emitted for three views of one visitor
-- (`sluice test` on config/recommendations.lua), decoded as the core does.
local function window_ctx()
  return assert(sluice.json_decode(read("window.ctx.json")))
end

local function encode(v) return assert(sluice.json_encode(v)) end

-- The failure object a call raises (fails the spec when it does not raise
-- one).
local function failure_of(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected a failure, the call returned")
  assert(response.is_failure(err), "expected a failure object, got: " .. tostring(err))
  return err
end

local function error_of(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error, the call returned")
  return tostring(err)
end

describe("recommendations.model.input", function()
  it("builds the seed's dataframe_split with timestamps as strings by default", function()
    local body = model.input(window_ctx(), {})
    assert.are.equal('{"dataframe_split":{"columns":["userId","items","timestamps"],"data":'
      .. '[["11111111-1111-4111-8111-000000000000",["shirt","jeans","laptop"],'
      .. '["1795667677486","1795667677583","1795667677680"]]]}}', encode(body))
  end)

  it("sends timestamps as numbers for an Array(long) signature", function()
    local body = model.input(window_ctx(), { timestamps = "number" })
    assert.are.equal('{"dataframe_split":{"columns":["userId","items","timestamps"],"data":'
      .. '[["11111111-1111-4111-8111-000000000000",["shirt","jeans","laptop"],'
      .. '[1795667677486,1795667677583,1795667677680]]]}}', encode(body))
  end)

  it("leaves the optional timestamps column out with timestamps = none", function()
    local body = model.input(window_ctx(), { timestamps = "none" })
    assert.are.equal('{"dataframe_split":{"columns":["userId","items"],"data":'
      .. '[["11111111-1111-4111-8111-000000000000",["shirt","jeans","laptop"]]]}}', encode(body))
  end)

  it("builds dataframe_records and record-list inputs when asked", function()
    for _, fmt in ipairs({ "dataframe_records", "inputs" }) do
      local body = model.input(window_ctx(), { format = fmt })
      assert.are.equal('{"' .. fmt .. '":[{"items":["shirt","jeans","laptop"],'
        .. '"timestamps":["1795667677486","1795667677583","1795667677680"],'
        .. '"userId":"11111111-1111-4111-8111-000000000000"}]}', encode(body))
    end
  end)

  it("keeps an empty window's lists as JSON arrays", function()
    local ctx = { userId = "u1", aggregatedProducts = { slugs = sluice.array(), viewTimestamps = sluice.array() } }
    assert.are.equal('{"dataframe_split":{"columns":["userId","items","timestamps"],"data":[["u1",[],[]]]}}',
      encode(model.input(ctx, {})))
  end)

  it("does not change the context's lists", function()
    local ctx = window_ctx()
    model.input(ctx, {})
    assert.are.equal(1795667677486, ctx.aggregatedProducts.viewTimestamps[1])
  end)

  it("raises naming the variable when the window's aggregate is missing or wrong", function()
    local ctx = window_ctx()
    ctx.aggregatedProducts = nil
    assert.matches("ctx.aggregatedProducts must be", error_of(model.input, ctx, {}))
    ctx = window_ctx()
    ctx.aggregatedProducts.viewTimestamps[2] = 1.5
    assert.matches("viewTimestamps%[2%] must be an integer ms timestamp", error_of(model.input, ctx, {}))
    ctx = window_ctx()
    ctx.aggregatedProducts.slugs[3] = sluice.null
    assert.matches("slugs%[3%] must be a product handle", error_of(model.input, ctx, {}))
    ctx = window_ctx()
    ctx.aggregatedProducts.viewTimestamps[4] = 1795667677999
    assert.matches("3 slugs but 4 viewTimestamps", error_of(model.input, ctx, {}))
    ctx = window_ctx()
    ctx.userId = nil
    assert.matches("ctx.userId must be a non%-empty string", error_of(model.input, ctx, {}))
  end)

  it("raises on unknown params", function()
    assert.matches("params.format must be", error_of(model.input, window_ctx(), { format = "split" }))
    assert.matches("params.timestamps must be", error_of(model.input, window_ctx(), { timestamps = "long" }))
  end)
end)

describe("recommendations.model.output", function()
  local real = read("mlflow.predictions.json")
  local real_doc = assert(sluice.json_decode(real))

  it("takes the one prediction of a real MLflow answer", function()
    local out = model.output(window_ctx(), 200, { ["content-type"] = "application/json" }, real)
    assert.are.equal(20, #out.itemIds)
    assert.are.same(real_doc.predictions[1].itemIds, out.itemIds)
    assert.are.same(real_doc.predictions[1].preds, out.preds)
    for i, id in ipairs(out.itemIds) do
      assert.matches("^gid://shopify/Product/%d+$", id)
      if i > 1 then assert.is_true(out.preds[i] < out.preds[i - 1], "preds descending") end
    end
  end)

  it("reads a bare list and a predictions object too", function()
    local p = real_doc.predictions[1]
    local bare = encode(sluice.array({ p }))
    assert.are.same(p.itemIds, model.output({}, 200, {}, bare).itemIds)
    local obj = encode({ predictions = p })
    assert.are.same(p.itemIds, model.output({}, 200, {}, obj).itemIds)
  end)

  it("keeps an empty answer as empty lists that encode as []", function()
    local out = model.output({}, 200, {}, '{"predictions": [{"itemIds": [], "preds": []}]}')
    assert.are.equal('{"itemIds":[],"preds":[]}', encode(out))
  end)

  it("accepts an answer without preds", function()
    local out = model.output({}, 200, {}, '{"predictions": [{"itemIds": ["gid://shopify/Product/1"]}]}')
    assert.are.same({ "gid://shopify/Product/1" }, out.itemIds)
    assert.is_nil(out.preds)
  end)

  it("raises a bad_response failure quoting the body on garbage", function()
    local cases = {
      { "not json <html>", "not JSON" },
      { '{"predictions": "x"}', "expected {\"predictions\"" },
      { '{"result": []}', "expected {\"predictions\"" },
      { '{"predictions": []}', "expected 1 prediction %(one row was sent%), got 0" },
      { '{"predictions": [{"itemIds": []}, {"itemIds": []}]}', "got 2" },
      { '{"predictions": [17]}', "must be an object with itemIds" },
      { '{"predictions": [{"preds": [0.5]}]}', "itemIds must be a list of strings %(got nil%)" },
      { '{"predictions": [{"itemIds": "gid://shopify/Product/1"}]}', "itemIds must be a list of strings" },
      { '{"predictions": [{"itemIds": ["a", 7]}]}', "itemIds%[2%] is a number" },
      { '{"predictions": [{"itemIds": ["a"], "preds": ["0.5"]}]}', "preds%[1%] is a string" },
      { '{"predictions": [{"itemIds": ["a", "b"], "preds": [0.5]}]}', "2 itemIds but 1 preds" },
    }
    for _, c in ipairs(cases) do
      local f = failure_of(model.output, {}, 200, {}, c[1])
      assert.are.equal("bad_response", f.reason, c[1])
      assert.is_false(f.retryable, c[1])
      assert.matches(c[2], f.message, nil, false)
      assert.matches("^model: ", tostring(f))
    end
  end)

  it("raises on MLflow's 400 with its error code and message, not retryable", function()
    local f = failure_of(model.output, {}, 400, {}, read("mlflow.error-string-timestamps.json"))
    assert.are.equal("http_400", f.reason)
    assert.is_false(f.retryable)
    assert.matches("model: HTTP 400: BAD_REQUEST: Invalid input%. Data is not compatible", f.message)
  end)

  it("raises retryable failures on 429 (with Retry-After) and 5xx", function()
    local f = failure_of(model.output, {}, 429, { ["Retry-After"] = "2" }, "Too Many Requests")
    assert.are.equal("http_429", f.reason)
    assert.is_true(f.retryable)
    assert.are.equal(2000, f.retry_after_ms)
    f = failure_of(model.output, {}, 503, {}, "upstream unavailable")
    assert.are.equal("http_503", f.reason)
    assert.is_true(f.retryable)
    assert.is_nil(f.retry_after_ms)
  end)
end)
