-- model_spec.lua -- `sluice model gen | train | serve` through the binary: the
-- MLflow scoring protocol of the built-in model, as a client sees it.
--
-- A model is trained from `sluice model gen --seed 1` and served on a free
-- port. Requests are the bodies spec/integration/mlflow_spec.lua sends to the
-- real MLflow server; when SLUICE_TEST_MLFLOW names one (scripts/test.sh
-- starts it), the same bodies go to both and the answers must have the same
-- shape, and MLflow's own Python client (.cache/mlflow/venv) scores against
-- sluice. What a right answer is comes from the catalog and the model file's
-- header, never from the server's output.

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local MLFLOW = os.getenv("SLUICE_TEST_MLFLOW")
local MLFLOW_PY = ".cache/mlflow/venv/bin/python"
local TOP = 20 -- as scripts/mlflow/model.py, so answers compare one to one

local catalog = cjson.decode(H.read("examples/catalog.json"))
local handle_of = {}
for _, p in ipairs(catalog.products) do handle_of[p.gid] = p.handle end

local json = H.json

-- post(base, body, content_type or false) -> status, decoded or nil, raw.
local function post(base, body, content_type)
  return H.post_json(base .. "/invocations", body, content_type)
end

local stamps = H.stamps

local ROWS = {
  { userId = "u1", items = { "shirt", "jeans" } },
  { userId = "u2", items = {} },
  { userId = "u3", items = { "no-such-product", "laptop", "mouse", "laptop" } },
  { userId = "u4", items = { "towel-1", "water-bottle-1", "novel" } },
}

local function split_body(rows)
  local data = {}
  for i, r in ipairs(rows) do data[i] = { r.userId, r.items, stamps(#r.items) } end
  return { dataframe_split = { columns = { "userId", "items", "timestamps" }, data = data } }
end

local function records(rows)
  local out = {}
  for i, r in ipairs(rows) do out[i] = { userId = r.userId, items = r.items, timestamps = stamps(#r.items) } end
  return out
end

-- A prediction is {itemIds, preds}: top GIDs of the catalog, scores descending,
-- none of the row's own products.
local function assert_prediction(p, items, what)
  assert.is_table(p, what)
  local keys = {}
  for k in pairs(p) do keys[#keys + 1] = k end
  table.sort(keys)
  assert.are.same({ "itemIds", "preds" }, keys, what .. ": exactly itemIds and preds")
  assert.are.equal(TOP, #p.itemIds, what .. ": top " .. TOP)
  assert.are.equal(TOP, #p.preds, what .. ": one pred per item")
  local viewed, seen = {}, {}
  for _, h in ipairs(items) do viewed[h] = true end
  for r, id in ipairs(p.itemIds) do
    local h = handle_of[id]
    assert.is_truthy(h, what .. ": " .. tostring(id) .. " is a catalog GID")
    assert.is_falsy(viewed[h], what .. ": " .. h .. " was in the window")
    assert.is_falsy(seen[id], what .. ": " .. id .. " twice")
    seen[id] = true
    assert.is_true(p.preds[r] >= 0 and p.preds[r] <= 1, what .. ": pred in [0, 1]")
    if r > 1 then assert.is_true(p.preds[r] <= p.preds[r - 1], what .. ": preds descending") end
  end
end

describe("sluice model serve (MLflow scoring protocol)", function()
  local dir, server, base, port, model

  setup(function()
    dir = H.mktemp()
    model = dir .. "/m.model"
    local rc, _, err = H.run(string.format("%s model gen --seed 1 --out %s", H.q(H.BIN), H.q(dir .. "/i.tsv")))
    assert(rc == 0, "sluice model gen: " .. err)
    rc, _, err = H.run(string.format("%s model train -i %s -c examples/catalog.json -o %s",
      H.q(H.BIN), H.q(dir .. "/i.tsv"), H.q(model)))
    assert(rc == 0, "sluice model train: " .. err)
    port = H.free_port()
    server = H.spawn(dir, "serve", string.format("%s model serve --model %s --listen 127.0.0.1:%d --top %d",
      H.q(H.BIN), H.q(model), port, TOP))
    base = "http://127.0.0.1:" .. port
    local up = H.wait_for(function() return H.http(port, "GET", "/ping") == 200 end, 10)
    assert(up, "sluice model serve did not answer /ping; stderr: " .. server:stderr())
  end)

  teardown(function()
    if server then server:stop() end
    H.rmrf(dir)
  end)

  it("prints its address and answers GET /ping and /health with 200", function()
    assert.are.equal(base, (server:stdout():match("^([^\n]+)")))
    assert.are.equal(200, (H.http(port, "GET", "/ping")))
    assert.are.equal(200, (H.http(port, "GET", "/health")))
  end)

  it("GET /version describes the model file's header", function()
    local code, body = H.http(port, "GET", "/version")
    assert.are.equal(200, code)
    local v = cjson.decode(body)
    local header = H.read(model):match("^(.-)\n\n")
    assert.are.equal(1, v.model.format)
    assert.are.equal(#catalog.products, v.model.catalog.products)
    assert.is_truthy(header:find("catalog " .. v.model.catalog.hash .. " " .. #catalog.products, 1, true),
      "the header's catalog line: " .. header)
    assert.are.equal(70888, v.model.data.lines)
    assert.are.equal(TOP, v.top_n)
  end)

  it("dataframe_split, dataframe_records and inputs give the same predictions", function()
    local c1, a1, raw1 = post(base, split_body(ROWS))
    assert.are.equal(200, c1, raw1)
    assert.are.equal(#ROWS, #a1.predictions)
    for i, r in ipairs(ROWS) do assert_prediction(a1.predictions[i], r.items, r.userId) end
    local c2, _, raw2 = post(base, { dataframe_records = records(ROWS) })
    local c3, _, raw3 = post(base, { inputs = records(ROWS) }, "application/json; charset=utf-8")
    assert.are.equal(200, c2, raw2)
    assert.are.equal(200, c3, raw3)
    assert.are.equal(raw1, raw2)
    assert.are.equal(raw1, raw3)
  end)

  it("an empty or unknown window gets the popularity fallback", function()
    local _, a = post(base, split_body({ { userId = "a", items = {} }, { userId = "b", items = { "nope" } } }))
    assert.are.same(a.predictions[1], a.predictions[2])
  end)

  it("a product seen with its group ranks that group first", function()
    -- the seed's rules: Smartphone, Charger, Power Bank, USB Cable, Earbuds
    local _, a = post(base, split_body({ { userId = "u", items = { "smartphone" } } }))
    local top = {}
    for r = 1, 4 do top[handle_of[a.predictions[1].itemIds[r]]] = true end
    for _, h in ipairs({ "charger", "power-bank", "usb-cable", "earbuds" }) do
      assert.is_true(top[h], h .. " in the top 4 after smartphone")
    end
  end)

  it("answers 400 with error_code and a message naming the problem", function()
    local bad = {
      { "not json", "the body is not JSON" },
      { '{"rows":[{"userId":"u1","items":["shirt"]}]}', 'unknown field "rows"' },
      { '{"inputs":[{"userId":"u1","items":["shirt"]}],"dataframe_records":[]}', "exactly one" },
      { '{"inputs":[{"userId":"u1","items":["shirt","jeans"],"timestamps":[1795667676496]}]}',
        "1 timestamps for 2 items" },
      { '{"inputs":[{"userId":"u1","items":["shirt",7]}]}', "inputs[0].items[1]" },
      { '{"dataframe_split":{"columns":["userId"],"data":[["u1"]]}}', 'no "items" column' },
    }
    for _, b in ipairs(bad) do
      local code, answer, raw = post(base, b[1])
      assert.are.equal(400, code, b[1] .. ": " .. raw)
      assert.are.equal("BAD_REQUEST", answer.error_code, raw)
      assert.is_truthy(answer.message:find(b[2], 1, true), b[2] .. " in " .. raw)
    end
    assert.are.equal(415, (post(base, json(split_body(ROWS)), "text/plain")))
    local code = post(base, json(split_body(ROWS)), false)
    assert.is_true(code >= 400, "no Content-Type: " .. tostring(code))
    assert.are.equal(404, (H.http(port, "GET", "/nothing")))
    assert.are.equal(405, (H.http(port, "GET", "/invocations")))
  end)

  it("refuses a body over 8 MiB and stays up", function()
    local big = '{"inputs":[{"items":["' .. string.rep("x", 9 * 1024 * 1024) .. '"]}]}'
    local code = post(base, big)
    assert.are.equal(413, code)
    assert.are.equal(200, (H.http(port, "GET", "/ping")))
  end)

  it("SIGHUP with a bad model file keeps serving the old model; a good one reloads", function()
    local _, before = post(base, split_body(ROWS))
    local good = H.read(model)
    H.write(model, "sluice-model 2\n")
    server:signal("HUP")
    assert.is_truthy(server:wait_log("reload failed, still serving.-format version 2", 10))
    local code, after = post(base, split_body(ROWS))
    assert.are.equal(200, code)
    assert.are.same(before, after)
    H.write(model, good:sub(1, #good - 10))
    server:signal("HUP")
    assert.is_truthy(server:wait_log("truncated", 10))
    H.write(model, good)
    server:signal("HUP")
    assert.is_truthy(server:wait_log("reloaded ", 10))
    local _, v = H.http(port, "GET", "/version")
    v = cjson.decode(v)
    assert.are.equal(1, v.reloads)
    assert.are.equal(2, v.reload_failures)
  end)

  if MLFLOW and MLFLOW ~= "" then
    it("the same request bodies work against the real MLflow server and sluice", function()
      local rows = {
        { userId = "u1", items = { "shirt", "jeans" } },
        { userId = "u2", items = {} },
        { userId = "u3", items = { "no-such-product", "shirt", "laptop" } },
      }
      for _, body in ipairs({ split_body(rows), { dataframe_records = records(rows) }, { inputs = records(rows) } }) do
        local cm, am, rawm = post(MLFLOW:gsub("/+$", ""), body)
        local cs, as, raws = post(base, body)
        assert.are.equal(200, cm, rawm)
        assert.are.equal(200, cs, raws)
        assert.are.equal(#am.predictions, #as.predictions)
        for i, r in ipairs(rows) do
          assert.are.equal(#am.predictions[i].itemIds, #as.predictions[i].itemIds)
          assert_prediction(am.predictions[i], r.items, "mlflow " .. r.userId)
          assert_prediction(as.predictions[i], r.items, "sluice " .. r.userId)
        end
      end
      local bad = '{"inputs":[{"userId":"u1","items":["shirt","jeans"],"timestamps":[1795667676496]}]}'
      local cm, am = post(MLFLOW:gsub("/+$", ""), bad)
      local cs, as = post(base, bad)
      assert.are.equal(cm, cs)
      assert.are.equal(am.error_code, as.error_code)
    end)

    it("MLflow's own Python client scores against sluice", function()
      assert.is_truthy(H.read(MLFLOW_PY) or H.read(MLFLOW_PY .. "3"), "MLflow venv at " .. MLFLOW_PY)
      local script = table.concat({
        "import importlib.util, json, sys",
        "import pandas as pd",
        -- MLflow 3.17.2's dump_input_data asks find_spec('scipy.sparse'), which
        -- raises instead of answering None when scipy is not installed.
        "_find = importlib.util.find_spec",
        "def _find_or_none(name, *a):",
        "    try:",
        "        return _find(name, *a)",
        "    except ModuleNotFoundError:",
        "        return None",
        "importlib.util.find_spec = _find_or_none",
        "from mlflow.pyfunc.scoring_server.client import ScoringServerClient",
        "c = ScoringServerClient('127.0.0.1', int(sys.argv[1]))",
        "df = pd.DataFrame({'userId': ['u1', 'u2'], 'items': [['shirt', 'jeans'], []],",
        "                   'timestamps': [[1795667676496, 1795667677496], []]})",
        "r = c.invoke(df)",
        "print(json.dumps(r['predictions']))",
      }, "\n")
      local f = H.mktemp()
      H.write(f .. "/client.py", script)
      local rc, out, err = H.run(string.format("%s %s %d", MLFLOW_PY, H.q(f .. "/client.py"), port))
      H.rmrf(f)
      assert.are.equal(0, rc, err)
      local got = cjson.decode(out)
      local _, direct = post(base, split_body({ { userId = "u1", items = { "shirt", "jeans" } },
        { userId = "u2", items = {} } }))
      assert.are.same(direct.predictions, got)
    end)
  end

  it("stops on SIGTERM with status 0", function()
    assert.are.equal(0, server:stop())
    server = nil
  end)
end)
