-- mlflow_spec.lua -- contract of the MLflow scoring server the model step calls.
--
-- Runs only when SLUICE_TEST_MLFLOW names the base URL of a server started by
-- scripts/mlflow.sh (scripts/test.sh starts one and runs this file once);
-- `busted --run=integration` without it collects nothing here.
--
-- The expected answers are derived in this file from scripts/mlflow/
-- inventory.json with the ranking rule of scripts/mlflow/model.py's
-- docstring, never copied from the server's output.

local URL = os.getenv("SLUICE_TEST_MLFLOW")
if not URL or URL == "" then return end

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local TOP_K = 20
local INVOCATIONS = URL:gsub("/+$", "") .. "/invocations"

-- ==================== The ranking rule, from the docstring ====================

local inventory_text = H.read("scripts/mlflow/inventory.json")
local inventory = cjson.decode(inventory_text)

-- handle -> list of categories; the sorted catalog of handles
local categories, handles = {}, {}
for handle in pairs(inventory.handle_to_id) do
  categories[handle] = {}
  handles[#handles + 1] = handle
end
table.sort(handles) -- byte order: Python's str order for these ASCII slugs
for category, titles in pairs(inventory.categories) do
  for _, title in ipairs(titles) do
    local handle = inventory.title_to_handle[title]
    local cats = handle and categories[handle]
    if cats then
      local seen = false
      for _, c in ipairs(cats) do seen = seen or c == category end
      if not seen then cats[#cats + 1] = category end
    end
  end
end

-- {itemIds, preds} the rule gives for a list of viewed handles.
local function expected(items)
  local count, last, viewed = {}, {}, {}
  for pos, handle in ipairs(items) do
    viewed[handle] = true
    for _, c in ipairs(categories[handle] or {}) do
      count[c] = (count[c] or 0) + 1
      last[c] = pos - 1 -- 0-based
    end
  end
  local keyed = {}
  for _, handle in ipairs(handles) do
    if not viewed[handle] then
      local n, l = 0, -1
      for _, c in ipairs(categories[handle]) do
        local cn, cl = count[c] or 0, last[c] or -1
        if cn > n or (cn == n and cl > l) then n, l = cn, cl end
      end
      keyed[#keyed + 1] = { handle = handle, n = n, l = l }
    end
  end
  table.sort(keyed, function(a, b)
    if a.n ~= b.n then return a.n > b.n end
    if a.l ~= b.l then return a.l > b.l end
    return a.handle < b.handle
  end)
  local ids, preds, ranked = {}, {}, {}
  for r = 0, math.min(TOP_K, #keyed) - 1 do
    local handle = keyed[r + 1].handle
    ranked[#ranked + 1] = handle
    ids[#ids + 1] = inventory.handle_to_id[handle]
    preds[#preds + 1] = math.floor((TOP_K - r) / (TOP_K + 1) * 1e6 + 0.5) / 1e6
  end
  return { itemIds = ids, preds = preds, handles = ranked }
end

-- ==================== HTTP ====================

local json = H.json

-- post(body, content_type or false) -> status, decoded JSON or nil, raw body.
local function post(body, content_type) return H.post_json(INVOCATIONS, body, content_type) end

local function split(rows)
  local data = {}
  for i, r in ipairs(rows) do data[i] = { r.userId, r.items, r.timestamps } end
  return { dataframe_split = { columns = { "userId", "items", "timestamps" }, data = data } }
end

local stamps = H.stamps

-- Checks one prediction against the rule's answer for items.
local function assert_prediction(p, items, what)
  local want = expected(items)
  assert.is_table(p, what .. ": a prediction object")
  assert.are.same(want.itemIds, p.itemIds, what .. ": itemIds (" .. table.concat(want.handles, ",") .. ")")
  assert.are.equal(#want.preds, #p.preds, what .. ": one pred per item")
  for r, v in ipairs(want.preds) do
    assert.is_true(math.abs(p.preds[r] - v) < 1e-9,
      string.format("%s: preds[%d] = %s, expected %s", what, r, tostring(p.preds[r]), v))
    if r > 1 then assert.is_true(p.preds[r] < p.preds[r - 1], what .. ": preds strictly descending") end
    assert.is_true(p.preds[r] > 0 and p.preds[r] < 1, what .. ": pred in (0, 1)")
  end
end

-- Known inputs: what each one exercises is in its name.
local CASES = {
  { name = "no items: the catalog in handle order", items = {} },
  { name = "one category viewed", items = { "shirt", "jeans" } },
  { name = "more views of a category win over recency",
    items = { "shirt", "smartphone", "jeans", "laptop", "headphones" } },
  { name = "equal views: the more recently viewed category first",
    items = { "shirt", "novel", "jeans", "comic" } },
  { name = "repeats count, unknown handles ignored",
    items = { "no-such-product", "shirt", "shirt", "laptop", "shirt", "also-unknown" } },
  { name = "a handle in two categories", items = { "shirt", "towel-1" } },
  { name = "a handle listed twice in one category", items = { "water-bottle-1", "novel" } },
  { name = "a handle without a category", items = { "towel", "novel", "face-mask" } },
}

-- ==================== Specs ====================

describe("MLflow scoring server (" .. URL .. ")", function()
  it("the rule's inputs exist in the inventory the server was built from", function()
    assert.are.equal(238, #handles)
    assert.are.equal(2, #categories["towel-1"]) -- Home and Sports
    assert.are.equal(1, #categories["water-bottle-1"]) -- listed twice, both in Food
    assert.are.equal(0, #categories["towel"])
    for _, c in ipairs(CASES) do
      local known = 0
      for _, h in ipairs(c.items) do if categories[h] then known = known + 1 end end
      assert.is_true(#c.items == 0 or known > 0, c.name .. ": at least one catalog handle")
    end
    -- the cases must tell a wrong tie-break apart: distinct expectations
    local seen = {}
    for _, c in ipairs(CASES) do
      local key = table.concat(expected(c.items).itemIds, ",")
      assert.is_nil(seen[key], c.name .. " expects the same as " .. tostring(seen[key]))
      seen[key] = c.name
    end
  end)

  it("GET /ping answers 200", function()
    local code = tonumber(H.sh("curl -s -m 10 -o /dev/null -w '%{http_code}' "
      .. H.q(URL:gsub("/+$", "") .. "/ping")))
    assert.are.equal(200, code)
  end)

  it("dataframe_split: one prediction per row, in row order, ranked by the rule", function()
    local rows = {}
    for i, c in ipairs(CASES) do
      rows[i] = { userId = "u" .. i, items = c.items, timestamps = stamps(#c.items) }
    end
    local code, answer, raw = post(split(rows))
    assert.are.equal(200, code, raw)
    assert.is_table(answer, "JSON answer: " .. raw)
    assert.is_table(answer.predictions, "answer has predictions: " .. raw)
    assert.are.equal(#rows, #answer.predictions)
    for i, c in ipairs(CASES) do
      local p = answer.predictions[i]
      assert.are.same({ "itemIds", "preds" }, (function()
        local keys = {}
        for k in pairs(p) do keys[#keys + 1] = k end
        table.sort(keys)
        return keys
      end)(), c.name .. ": exactly itemIds and preds")
      assert_prediction(p, c.items, c.name)
      for _, id in ipairs(p.itemIds) do
        assert.is_truthy(id:match("^gid://shopify/Product/%d+$"), "a product GID: " .. id)
      end
    end
  end)

  it("record-list inputs (with and without timestamps) give the same answers", function()
    local with, without = {}, {}
    for i, c in ipairs(CASES) do
      with[i] = { userId = "u" .. i, items = c.items, timestamps = stamps(#c.items) }
      without[i] = { userId = "u" .. i, items = c.items }
    end
    local function encode(rows) return json({ inputs = rows }) end
    for _, rows in ipairs({ with, without }) do
      local code, answer, raw = post(encode(rows), "application/json; charset=utf-8")
      assert.are.equal(200, code, raw)
      assert.are.equal(#CASES, #answer.predictions, raw)
      for i, c in ipairs(CASES) do assert_prediction(answer.predictions[i], c.items, c.name) end
    end
  end)

  it("is deterministic: the same request twice gives the same bytes", function()
    local body = split({ { userId = "u1", items = { "shirt", "laptop", "shirt" }, timestamps = stamps(3) } })
    local c1, _, r1 = post(body)
    local c2, _, r2 = post(body)
    assert.are.equal(200, c1)
    assert.are.equal(200, c2)
    assert.are.equal(r1, r2)
  end)

  it("refuses a body that is not declared JSON with 415", function()
    local body = json(split({ { userId = "u1", items = { "shirt" }, timestamps = stamps(1) } }))
    assert.are.equal(415, (post(body, "text/plain")))
    assert.are.equal(415, (post(body, "application/x-www-form-urlencoded")))
  end)

  it("fails a request without any Content-Type header (never a 200)", function()
    -- MLflow 3.17.2 answers 500 here (its content-type parsing raises on a
    -- missing header), so a client must always send application/json.
    local body = json(split({ { userId = "u1", items = { "shirt" }, timestamps = stamps(1) } }))
    local code = post(body, false)
    assert.is_number(code)
    assert.is_true(code >= 400, "status " .. tostring(code))
  end)

  it("takes the bodies the model rule builds and gives answers the rule reads", function()
    local sluice = require "sluice"
    local model = require "recommendations.model"
    local ctx = assert(sluice.json_decode(H.read("spec/fixtures/recommendations/window.ctx.json")))
    local want = expected(ctx.aggregatedProducts.slugs)
    -- the seed's signature has timestamps: Array(string), the rule's default
    for _, p in ipairs({ {}, { timestamps = "none" },
                         { format = "dataframe_records" }, { format = "inputs" } }) do
      local what = (p.format or "dataframe_split") .. ", timestamps " .. (p.timestamps or "string")
      local code, _, raw = post(assert(sluice.json_encode(model.input(ctx, p))))
      assert.are.equal(200, code, what .. ": " .. raw)
      assert.are.same(want.itemIds, model.output(ctx, code, {}, raw).itemIds, what)
    end
    local code, _, raw = post(assert(sluice.json_encode(model.input(ctx, { timestamps = "number" }))))
    assert.are.equal(400, code, "numbers for an Array(string) column: " .. raw)
    local ok, err = pcall(model.output, ctx, code, {}, raw)
    assert.is_false(ok)
    assert.are.equal("http_400", err.reason)
  end)

  it("answers 400 with an error_code on bad input", function()
    local bad = {
      ["not JSON"] = "not json",
      ["no input field"] = '{"rows":[{"userId":"u1","items":["shirt"]}]}',
      ["two input fields"] = '{"inputs":[{"userId":"u1","items":["shirt"]}],'
        .. '"dataframe_records":[{"userId":"u1","items":["shirt"]}]}',
      ["timestamps of another length"] = '{"inputs":[{"userId":"u1","items":["shirt","jeans"],'
        .. '"timestamps":[1795667676496]}]}',
      ["model failure (userId __fail__)"] = '{"inputs":[{"userId":"__fail__","items":["shirt"]}]}',
    }
    for what, body in pairs(bad) do
      local code, answer, raw = post(body)
      assert.are.equal(400, code, what .. ": " .. raw)
      assert.is_table(answer, what .. ": JSON error body")
      assert.are.equal("BAD_REQUEST", answer.error_code, what .. ": " .. raw)
    end
  end)
end)
