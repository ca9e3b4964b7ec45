-- testservers_spec.lua -- the HTTP test servers of scripts/testservers/
-- answer as documented in their headers, in every mode, before the model and
-- Shopify steps rely on them. Driven with curl; the bodies come from the
-- rules of lua/recommendations/ where a step would send them, and the
-- answers are read back with those rules, so both sides agree.

local cjson = require "cjson"
local sluice = require "sluice"
local H = dofile("spec/integration/helpers.lua")
local TS = dofile("spec/integration/testservers.lua")
local fx = dofile("spec/fixtures/load.lua")
local model = require "recommendations.model"
local limit = require "recommendations.limit"
local shopify = require "recommendations.shopify"
local response = require "sluice.response"

local JSON = { "Content-Type: application/json" }
local INVENTORY = cjson.decode(fx.file("scripts/mlflow/inventory.json"))

local function window_ctx()
  return assert(sluice.json_decode(fx.file("spec/fixtures/recommendations/window.ctx.json")))
end
local function encode(v) return assert(sluice.json_encode(v)) end

-- The failure a response rule raises on (status, headers, body).
local function failure_of(rule, status, headers, body)
  local ok, err = pcall(rule, {}, status, headers or {}, body)
  assert(not ok, "expected the rule to fail on: " .. tostring(body))
  assert(response.is_failure(err), "expected a failure object, got " .. tostring(err))
  return err
end

-- Sends the requests at once (curl in the background); returns per request
-- {code, body, ms}. reqs: {path, body, headers}.
local function parallel(port, reqs)
  local dir = H.mktemp()
  local cmds = {}
  for i, r in ipairs(reqs) do
    H.write(dir .. "/req" .. i, r.body or "")
    local hs = {}
    for _, h in ipairs(r.headers or JSON) do hs[#hs + 1] = "-H " .. H.q(h) end
    cmds[i] = string.format("curl -s -m 20 -o %s/resp%d -w '%%{http_code} %%{time_total}' %s --data-binary @%s/req%d "
      .. "http://127.0.0.1:%d%s >%s/code%d &", dir, i, table.concat(hs, " "), dir, i, port, r.path, dir, i)
  end
  os.execute(table.concat(cmds, "\n") .. "\nwait")
  local out = {}
  for i = 1, #reqs do
    local code, secs = (H.read(dir .. "/code" .. i) or ""):match("^(%d+) ([%d.]+)")
    out[i] = { code = tonumber(code), body = H.read(dir .. "/resp" .. i) or "", ms = tonumber(secs or 0) * 1000 }
  end
  H.rmrf(dir)
  return out
end

-- The MLflow test server's documented ranking, recomputed here.
local HANDLES = {}
for h in pairs(INVENTORY.handle_to_id) do HANDLES[#HANDLES + 1] = h end
table.sort(HANDLES)
local function expected_ids(user, items, k)
  local sum = 0
  for _, s in ipairs({ user, unpack(items) }) do for i = 1, #s do sum = sum + s:byte(i) end end
  local viewed = {}
  for _, it in ipairs(items) do viewed[it] = true end
  local ids, n = {}, #HANDLES
  for j = 0, n - 1 do
    local h = HANDLES[(sum + j) % n + 1]
    if not viewed[h] then ids[#ids + 1] = INVENTORY.handle_to_id[h] end
    if #ids == (k or 20) then break end
  end
  return ids
end

describe("test servers", function()
  local dir
  setup(function() dir = H.mktemp() end)
  teardown(function() H.rmrf(dir) end)

  describe("MLflow protocol (scripts/testservers/mlflow.py)", function()
    local ml
    setup(function() ml = TS.start(dir, "mlflow") end)
    teardown(function() ml:stop() end)
    before_each(function() ml:control({ reset = true, timestamps = "string" }) end)

    it("answers /ping and the rule's default body with the documented recommendations", function()
      assert.are.equal(200, (ml:get("/ping")))
      local ctx = window_ctx()
      local code, doc, raw = ml:post("/invocations", encode(model.input(ctx, {})), JSON)
      assert.are.equal(200, code, raw)
      local want = expected_ids(ctx.userId, ctx.aggregatedProducts.slugs)
      assert.are.same(want, doc.predictions[1].itemIds)
      local out = model.output(ctx, code, {}, raw)
      assert.are.equal(20, #out.itemIds)
      for _, id in ipairs(out.itemIds) do
        assert.are_not.equal(INVENTORY.handle_to_id.shirt, id, "a viewed product is not recommended")
      end
      assert.are.equal(0.952381, out.preds[1])
      local _, _, again = ml:post("/invocations", encode(model.input(ctx, {})), JSON)
      assert.are.equal(raw, again, "deterministic")
      ctx.userId = "someone-else"
      local _, other = ml:post("/invocations", encode(model.input(ctx, {})), JSON)
      assert.are_not.same(doc.predictions[1].itemIds, other.predictions[1].itemIds)
    end)

    it("accepts every format the rule builds, and numbers once told timestamps are long", function()
      local ctx = window_ctx()
      for _, p in ipairs({ { format = "dataframe_records" }, { format = "inputs" }, { timestamps = "none" },
                           { format = "inputs", timestamps = "none" } }) do
        local code, doc, raw = ml:post("/invocations", encode(model.input(ctx, p)), JSON)
        assert.are.equal(200, code, raw)
        assert.are.same(expected_ids(ctx.userId, ctx.aggregatedProducts.slugs), doc.predictions[1].itemIds)
      end
      local numbers = encode(model.input(ctx, { timestamps = "number" }))
      local code, doc = ml:post("/invocations", numbers, JSON)
      assert.are.equal(400, code)
      assert.matches("Array%(string%)", doc.message)
      ml:control({ timestamps = "long" })
      assert.are.equal(200, (ml:post("/invocations", numbers, JSON)))
      code, doc = ml:post("/invocations", encode(model.input(ctx, {})), JSON)
      assert.are.equal(400, code)
      assert.matches("Can not safely convert str to int64", doc.message)
    end)

    it("refuses wrong shapes with 400 BAD_REQUEST, as MLflow does", function()
      local bad = {
        ["not JSON"] = "nope",
        ["a list"] = "[1]",
        ["no input field"] = '{"rows": []}',
        ["two input fields"] = '{"inputs": [], "dataframe_records": []}',
        ["columnar inputs"] = '{"inputs": {"userId": ["u1"], "items": [["shirt"]]}}',
        ["records as an object"] = '{"dataframe_records": {"userId": "u1"}}',
        ["a row of another width"] = '{"dataframe_split": {"columns": ["userId", "items"], "data": [["u1"]]}}',
        ["no columns"] = '{"dataframe_split": {"data": [["u1", ["shirt"]]]}}',
        ["items missing"] = '{"inputs": [{"userId": "u1"}]}',
        ["items not a list"] = '{"inputs": [{"userId": "u1", "items": "shirt"}]}',
        ["timestamps of another length"] = '{"inputs": [{"userId": "u1", "items": ["a", "b"], "timestamps": ["1"]}]}',
        ["model failure hook"] = '{"inputs": [{"userId": "__fail__", "items": ["shirt"]}]}',
      }
      for what, body in pairs(bad) do
        local code, doc, raw = ml:post("/invocations", body, JSON)
        assert.are.equal(400, code, what .. ": " .. raw)
        assert.are.equal("BAD_REQUEST", doc.error_code, what)
      end
      local code = ml:post("/invocations", '{"inputs": []}', { "Content-Type: text/plain" })
      assert.are.equal(415, code)
      code = ml:post("/invocations", '{"inputs": []}', { "Content-Type:" })
      assert.are.equal(415, code)
    end)

    it("answers 500, 429 with Retry-After, garbage and a closed connection when told, then normally", function()
      local body = encode(model.input(window_ctx(), {}))
      ml:control({ mode = "500", times = 1 })
      ml:control({ mode = "429", retry_after = 3, times = 1 })
      ml:control({ mode = "garbage", times = 1 })
      ml:control({ mode = "garbage", garbage = "json", times = 1 })
      ml:control({ mode = "garbage", garbage = "truncated", times = 1 })
      ml:control({ mode = "close", times = 1 })
      local code, _, raw, hdrs = ml:post("/invocations", body, JSON)
      assert.are.equal(500, code)
      assert.is_true(failure_of(model.output, code, hdrs, raw).retryable)
      code, _, raw, hdrs = ml:post("/invocations", body, JSON)
      assert.are.equal(429, code)
      assert.are.equal("3", hdrs["retry-after"])
      assert.are.equal(3000, failure_of(model.output, code, hdrs, raw).retry_after_ms)
      for _ = 1, 3 do
        code, _, raw = ml:post("/invocations", body, JSON)
        assert.are.equal(200, code)
        assert.are.equal("bad_response", failure_of(model.output, code, {}, raw).reason, raw)
      end
      code = ml:post("/invocations", body, JSON)
      assert.are.equal(0, code or 0, "the connection closed without an answer")
      code = ml:post("/invocations", body, JSON)
      assert.are.equal(200, code, "back to normal after the queued modes")
      local modes = {}
      for _, r in ipairs(ml:received()) do modes[#modes + 1] = r.mode .. ":" .. r.status end
      assert.are.same({ "status:500", "status:429", "garbage:200", "garbage:200", "garbage:200", "close:0",
        "normal:200" }, modes)
    end)

    it("answers slowly when told, and reorders concurrent answers with delays", function()
      local body = encode(model.input(window_ctx(), {}))
      ml:control({ mode = "slow", delay_ms = 300 })
      local t0 = H.now_ms()
      assert.are.equal(200, (ml:post("/invocations", body, JSON)))
      assert.is_true(H.now_ms() - t0 >= 300, "slow mode waited")
      ml:control({ reset = true, timestamps = "string", delays = { 600, 0, 300 } })
      local res = parallel(ml.port, { { path = "/invocations", body = body }, { path = "/invocations", body = body },
        { path = "/invocations", body = body } })
      for _, r in ipairs(res) do assert.are.equal(200, r.code) end
      local recs = ml:received()
      table.sort(recs, function(a, b) return a.done_ms < b.done_ms end)
      local delays = {}
      for i, r in ipairs(recs) do delays[i] = ({ 600, 0, 300 })[r.seq] end
      assert.are.same({ 0, 300, 600 }, delays, "answered in order of their delays, not of arrival")
      assert.is_true(ml:stats().max_in_flight >= 2, "the 600 ms and 300 ms requests were in flight together")
    end)

    it("answers a bare list, and puts injected ids first, which the limit rule drops", function()
      ml:control({ mode = "bare", inject_ids = { "not-a-gid", "gid://shopify/Collection/1" } })
      local ctx = window_ctx()
      local code, doc, raw = ml:post("/invocations", encode(model.input(ctx, {})), JSON)
      assert.are.equal(200, code)
      assert.are.equal("not-a-gid", doc[1].itemIds[1])
      ctx.recommendationsModelOutput = model.output(ctx, code, {}, raw)
      local ids = limit.limit(ctx, {}).recommendationIds
      local want = expected_ids(ctx.userId, ctx.aggregatedProducts.slugs, 10)
      assert.are.same(want, ids)
    end)

    it("records what it received: method, path, headers and body", function()
      ml:post("/serving-endpoints/recs/invocations", '{"inputs": [{"userId": "u9", "items": []}]}',
        { "Content-Type: application/json", "X-Extra: 1" })
      local recs = ml:received()
      assert.are.equal(1, #recs)
      assert.are.equal("POST", recs[1].method)
      assert.are.equal("/serving-endpoints/recs/invocations", recs[1].path)
      assert.are.equal("1", recs[1].headers["x-extra"])
      assert.are.equal('{"inputs": [{"userId": "u9", "items": []}]}', recs[1].body)
      assert.are.equal(200, recs[1].status)
      assert.are.equal(0, #ml:received(1))
      assert.are.equal(1, ml:stats().invocations)
    end)

    it("requires a bearer token when started with one", function()
      local sec = TS.start(dir, "mlflow", "--bearer s3cret-token", "mlflow-bearer")
      local body = '{"inputs": [{"userId": "u1", "items": ["shirt"]}]}'
      local code, doc = sec:post("/invocations", body, JSON)
      assert.are.equal(401, code)
      assert.are.equal("401", doc.error_code)
      assert.are.equal(401, (sec:post("/invocations", body, { JSON[1], "Authorization: Bearer wrong" })))
      assert.are.equal(200, (sec:post("/invocations", body, { JSON[1], "Authorization: Bearer s3cret-token" })))
      sec:stop()
    end)
  end)

  describe("OAuth client credentials (scripts/testservers/oauth.py) with the MLflow server", function()
    local auth, ml
    local FORM = { "Content-Type: application/x-www-form-urlencoded" }
    local function basic(id, secret)
      return "Authorization: Basic " .. H.sh("printf %s " .. H.q(id .. ":" .. secret) .. " | base64"):gsub("%s", "")
    end
    local BASIC = basic("sluice-test-client", "sluice-test-secret")
    local BODY = '{"inputs": [{"userId": "u1", "items": ["shirt"]}]}'
    setup(function()
      auth = TS.start(dir, "oauth", "--token-secret spec-key --expires-in 60")
      ml = TS.start(dir, "mlflow", "--token-secret spec-key --timestamps any", "mlflow-oauth")
    end)
    teardown(function()
      auth:stop()
      ml:stop()
    end)

    local function token(headers, body)
      local code, doc, raw = auth:post("/oidc/v1/token", body or "grant_type=client_credentials&scope=all-apis",
        headers or { FORM[1], BASIC })
      return code, doc, raw
    end
    local function score(tok)
      return (ml:post("/invocations", BODY, { JSON[1], "Authorization: Bearer " .. tok }))
    end

    it("issues tokens to a client with Basic auth or form credentials, and counts requests", function()
      auth:control({ reset = true })
      local code, doc, raw = token()
      assert.are.equal(200, code, raw)
      assert.are.equal("Bearer", doc.token_type)
      assert.are.equal(60, doc.expires_in)
      assert.are.equal("all-apis", doc.scope)
      assert.are.equal(200, score(doc.access_token))
      code, doc = token(FORM, "grant_type=client_credentials&scope=all-apis"
        .. "&client_id=sluice-test-client&client_secret=sluice-test-secret")
      assert.are.equal(200, code)
      assert.are.equal(200, score(doc.access_token))
      local st = auth:stats()
      assert.are.equal(2, st.token_requests)
      assert.are.equal(2, st.tokens_issued)
    end)

    it("refuses bad clients, grants, scopes and bodies", function()
      auth:control({ reset = true })
      local wrong = basic("sluice-test-client", "nope")
      local cases = {
        { { FORM[1], wrong }, nil, 401, "invalid_client" },
        { FORM, nil, 401, "invalid_client" },
        { { FORM[1], BASIC }, "grant_type=password&scope=all-apis", 400, "unsupported_grant_type" },
        { { FORM[1], BASIC }, "grant_type=client_credentials", 400, "invalid_scope" },
        { { JSON[1], BASIC }, '{"grant_type":"client_credentials"}', 400, "invalid_request" },
      }
      for i, c in ipairs(cases) do
        local code, doc, raw = token(c[1], c[2])
        assert.are.equal(c[3], code, "case " .. i .. ": " .. raw)
        assert.are.equal(c[4], doc.error, "case " .. i)
      end
      local st = auth:stats()
      assert.are.equal(#cases, st.token_requests)
      assert.are.equal(0, st.tokens_issued)
    end)

    it("answers 500 and slowly when told, as every test server does", function()
      auth:control({ mode = "500", times = 1 })
      local code, doc = token()
      assert.are.equal(500, code)
      assert.are.equal("server_error", doc.error)
      auth:control({ mode = "slow", delay_ms = 200, times = 1 })
      local t0 = H.now_ms()
      assert.are.equal(200, (token()))
      assert.is_true(H.now_ms() - t0 >= 200)
      assert.are.equal(200, (token()))
    end)

    it("the MLflow server refuses missing, tampered, expired and revoked tokens with 401", function()
      assert.are.equal(401, (ml:post("/invocations", BODY, JSON)))
      local _, doc = token()
      local tok = doc.access_token
      assert.are.equal(200, score(tok))
      assert.are.equal(401, score(tok:sub(1, -2) .. (tok:sub(-1) == "0" and "1" or "0")))
      auth:control({ expires_in = 1 })
      local _, short = token()
      assert.are.equal(1, short.expires_in)
      assert.are.equal(200, score(short.access_token))
      H.sleep(1.2)
      local code, _, raw = ml:post("/invocations", BODY, { JSON[1], "Authorization: Bearer " .. short.access_token })
      assert.are.equal(401, code)
      assert.matches("expired", raw)
      ml:control({ revoke = true })
      assert.are.equal(401, score(tok), "a token issued before the revocation")
      auth:control({ expires_in = 60 })
      local _, fresh = token()
      assert.are.equal(200, score(fresh.access_token), "a token issued after it")
    end)

    it("mlflow.py --oauth serves the token endpoint itself; a mode can target one path", function()
      local both = TS.start(dir, "mlflow", "--oauth --timestamps any", "mlflow-with-oauth")
      both:control({ mode = "500", path = "/invocations", times = 1 })
      local code, doc = both:post("/oidc/v1/token", "grant_type=client_credentials&scope=all-apis", { FORM[1], BASIC })
      assert.are.equal(200, code, "the token request is not the one the mode targets")
      local auth_h = { JSON[1], "Authorization: Bearer " .. doc.access_token }
      assert.are.equal(500, (both:post("/invocations", BODY, auth_h)))
      assert.are.equal(200, (both:post("/invocations", BODY, auth_h)))
      assert.are.equal(1, both:stats().token_requests)
      both:stop()
    end)
  end)

  describe("Shopify Admin GraphQL (scripts/testservers/shopify.py)", function()
    local shop
    local PATH = "/admin/api/2026-07/graphql.json"
    local AUTH = { JSON[1], "X-Shopify-Access-Token: shpat_test_token" }
    local G = {}
    for _, h in ipairs({ "shirt", "jeans", "laptop" }) do G[#G + 1] = INVENTORY.handle_to_id[h] end

    local function body_for(user, ids, params)
      return shopify.request({ userId = user, recommendationIds = sluice.array(ids) }, params or {})
    end
    -- POSTs a body table (changed by `change` first) to the GraphQL path.
    local function upsert(body, headers, path)
      return shop:post(path or PATH, type(body) == "string" and body or encode(body), headers or AUTH)
    end
    local function top_error(body)
      local code, doc, raw = upsert(body)
      assert.are.equal(200, code, raw)
      assert.is_table(doc.errors, "top-level errors: " .. raw)
      assert.is_nil(doc.data)
      return doc.errors[1], raw
    end
    local function user_error(body)
      local code, doc, raw = upsert(body)
      assert.are.equal(200, code, raw)
      local errs = doc.data.metaobjectUpsert.userErrors
      assert.are.equal(1, #errs, raw)
      assert.is_true(doc.data.metaobjectUpsert.metaobject == cjson.null)
      return errs[1], raw
    end

    setup(function() shop = TS.start(dir, "shopify") end)
    teardown(function() shop:stop() end)
    before_each(function()
      shop:control({ reset = true, check_catalog = true,
        bucket = { maximumAvailable = 2000, currentlyAvailable = 2000, restoreRate = 100, cost = 10 } })
    end)

    it("takes the rule's body, stores the value per handle and answers like Shopify", function()
      local code, doc, raw, hdrs = upsert(body_for("u1", G))
      assert.are.equal(200, code, raw)
      assert.matches("^application/json", hdrs["content-type"])
      local res = shopify.response({}, code, hdrs, raw)
      assert.matches("^gid://shopify/Metaobject/%d+$", res.metaobject.id)
      assert.are.same({ maximumAvailable = 2000, currentlyAvailable = 1990, restoreRate = 100 },
        res.cost.throttleStatus)
      assert.are.equal(10, res.cost.actualQueryCost)
      assert.are.same({}, doc.data.metaobjectUpsert.userErrors)
      upsert(body_for("u2", { G[3] }))
      local _, again = upsert(body_for("u1", { G[2], G[1] }))
      assert.are.equal(res.metaobject.id, again.data.metaobjectUpsert.metaobject.id, "same handle, same metaobject")
      local _, mo = shop:get("/_metaobjects")
      assert.are.equal(encode(sluice.array({ G[2], G[1] })), mo.metaobjects["customer-u1"].fields.products)
      assert.are.equal(2, mo.metaobjects["customer-u1"].updates)
      assert.are.equal("nu_recommendation", mo.metaobjects["customer-u1"].type)
      local order = {}
      for i, h in ipairs(mo.history) do order[i] = h.handle end
      assert.are.same({ "customer-u1", "customer-u2", "customer-u1" }, order)
      assert.are.equal("[]", (function()
        upsert(body_for("u3", {}))
        local _, m = shop:get("/_metaobjects")
        return m.metaobjects["customer-u3"].fields.products
      end)(), "an empty list is written as []")
    end)

    it("checks the token, the path, the API version and the content type", function()
      local body = body_for("u1", G)
      local code, doc = upsert(body, { JSON[1], "X-Shopify-Access-Token: shpat_wrong" })
      assert.are.equal(401, code)
      assert.matches("Invalid API key or access token", doc.errors)
      assert.are.equal(401, (upsert(body, JSON)))
      assert.are.equal(404, (upsert(body, AUTH, "/admin/api/2025-10/graphql.json")))
      assert.are.equal(404, (upsert(body, AUTH, "/admin/api/graphql.json")))
      assert.are.equal(415, (upsert(body, { "Content-Type: application/graphql", AUTH[2] })))
      assert.are.equal(400, (upsert("{", AUTH)))
      assert.are.equal(0, shop:stats().upserts)
    end)

    it("refuses any other query text, even one space apart", function()
      local body = body_for("u1", G)
      body.query = body.query:gsub("{ metaobject { id }", "{ metaobject {id}")
      local err, raw = top_error(body)
      assert.are.equal("UNEXPECTED_QUERY", err.extensions.code)
      assert.are.equal("graphql_errors", failure_of(shopify.response, 200, {}, raw).reason)
    end)

    it("refuses variables of the wrong shape as GraphQL coercion does", function()
      local cases = {
        { "value as a list", function(b) b.variables.metaobject.fields[1].value = sluice.array({ G[1] }) end,
          "Could not coerce value to String" },
        { "no handle type", function(b) b.variables.handle.type = nil end, "Expected value to not be null" },
        { "an unknown handle field", function(b) b.variables.handle.kind = "x" end, "Field is not defined" },
        { "an unknown field input key", function(b) b.variables.metaobject.fields[1].name = "x" end,
          "Field is not defined on MetaobjectFieldInput" },
        { "a handle not customer-<id>", function(b) b.variables.handle.handle = "u1" end, "customer%-<userId>" },
        { "no metaobject", function(b) b.variables.metaobject = nil end, "Expected value to not be null" },
        { "an undeclared variable", function(b) b.variables.userId = "u1" end, "is not defined by operation" },
      }
      for _, c in ipairs(cases) do
        local b = body_for("u1", G)
        c[2](b)
        local err = top_error(b)
        assert.matches(c[3], err.message, nil, false)
      end
      assert.are.equal(0, shop:stats().upserts)
    end)

    it("answers userErrors as the store would: type, field, value, unknown product", function()
      local e = user_error(body_for("u1", G, { type = "other_type" }))
      assert.are.equal("UNDEFINED_OBJECT_TYPE", e.code)
      e = user_error(body_for("u1", G, { field = "items" }))
      assert.are.equal("UNDEFINED_OBJECT_FIELD", e.code)
      local b = body_for("u1", G)
      b.variables.metaobject.fields[1].value = '["shirt"]'
      e = user_error(b)
      assert.are.equal("INVALID_VALUE", e.code)
      assert.are.same({ "metaobject", "fields", "0", "value" }, e.field)
      local raw
      e, raw = user_error(body_for("u1", { "gid://shopify/Product/1" }))
      assert.matches("does not exist", e.message)
      assert.are.equal("user_errors", failure_of(shopify.response, 200, {}, raw).reason)
      shop:control({ check_catalog = false })
      assert.are.equal(200, (upsert(body_for("u1", { "gid://shopify/Product/1" }))))
      assert.are.equal(1, shop:stats().upserts)
    end)

    it("answers THROTTLED when told and when its cost bucket is empty", function()
      shop:control({ mode = "throttled", times = 1 })
      local code, doc, raw = upsert(body_for("u1", G))
      assert.are.equal(200, code)
      assert.are.equal("THROTTLED", doc.errors[1].extensions.code)
      assert.is_true(doc.extensions.cost.actualQueryCost == cjson.null)
      local f = failure_of(shopify.response, code, {}, raw)
      assert.are.equal("throttled", f.reason)
      assert.is_true(f.retryable)
      assert.is_true(f.retry_after_ms > 0 and f.retry_after_ms <= 100, "10 points at 100/s: " .. f.retry_after_ms)
      shop:control({ reset = true,
        bucket = { maximumAvailable = 30, currentlyAvailable = 30, restoreRate = 1, cost = 10 } })
      local left = {}
      for i = 1, 4 do
        local _, d = upsert(body_for("u" .. i, G))
        left[i] = d.errors and "THROTTLED" or d.extensions.cost.throttleStatus.currentlyAvailable
      end
      assert.are.same({ 20, 10, 0, "THROTTLED" }, left)
      local _, mo = shop:get("/_metaobjects")
      assert.is_nil(mo.metaobjects["customer-u4"], "a throttled upsert changes nothing")
      assert.are.equal(1, shop:stats().throttled)
    end)

    it("answers 429 with Retry-After, 500, userErrors, garbage and slowly when told", function()
      local body = body_for("u1", G)
      shop:control({ mode = "429", retry_after = 2, times = 1 })
      shop:control({ mode = "500", times = 1 })
      shop:control({ mode = "user_errors", times = 1 })
      shop:control({ mode = "garbage", garbage = "json", times = 1 })
      local code, _, raw, hdrs = upsert(body)
      assert.are.equal(429, code)
      assert.are.equal(2000, failure_of(shopify.response, code, hdrs, raw).retry_after_ms)
      code, _, raw = upsert(body)
      assert.are.equal(500, code)
      assert.is_true(failure_of(shopify.response, code, {}, raw).retryable)
      code, _, raw = upsert(body)
      assert.are.equal("user_errors", failure_of(shopify.response, code, {}, raw).reason)
      code, _, raw = upsert(body)
      assert.are.equal("bad_response", failure_of(shopify.response, code, {}, raw).reason)
      shop:control({ mode = "slow", delay_ms = 250 })
      local t0 = H.now_ms()
      assert.are.equal(200, (upsert(body)))
      assert.is_true(H.now_ms() - t0 >= 250)
      local mo = select(2, shop:get("/_metaobjects"))
      assert.are.equal(1, #mo.history, "only the slow request was stored")
      local recs = shop:received()
      assert.are.equal(5, #recs)
      assert.are.equal("shpat_test_token", recs[1].headers["x-shopify-access-token"])
      assert.are.same(sluice.json_decode(encode(body)), sluice.json_decode(recs[5].body))
    end)
  end)
end)
