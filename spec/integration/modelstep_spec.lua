-- modelstep_spec.lua -- config/recommendations.lua end to end against the
-- real MLflow scoring server: tracker records in, each visitor's window
-- scored by MLflow (scripts/mlflow/model.py behind `mlflow models serve`),
-- the first 10 product ids written to the Shopify test server, the seed's
-- debug record out.
--
-- Runs when SLUICE_TEST_MLFLOW names the server (scripts/test.sh starts one
-- for every integration run, so this runs on both broker flavours);
-- `busted --run=integration` without it collects nothing here.
-- What MLflow answers is checked by asking it again for the same window,
-- never copied from sluice's output.

local URL = os.getenv("SLUICE_TEST_MLFLOW")
if not URL or URL == "" then return end

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")
local TS = dofile("spec/integration/testservers.lua")

local INPUT, OUTPUT = "http.shopify-events", "shopify-found-recommendations"

describe("config/recommendations.lua with MODEL_URL and SHOPIFY_STORE (real MLflow)", function()
  local dir, brokers, broker, shop, w, admin
  local run = H.unique("ms")
  -- visitors of this run only (the topics are the job's fixed ones)
  local users = { run .. "-a", run .. "-b" }
  local slugs = { "classic-leather-sneaker", "merino-wool-beanie", "canvas-weekender-bag" }

  lazy_setup(function()
    dir = H.mktemp()
    brokers, broker = H.kafka(dir, "broker")
    shop = TS.start(dir, "shopify", "", "shop")
    admin = H.free_port()
    local env = string.format("env KAFKA_BROKERS=%s SLUICE_GROUP=%s ADMIN_LISTEN=127.0.0.1:%d "
      .. "COLLECTOR_LISTEN=127.0.0.1:%d MODEL_URL=%s SHOPIFY_STORE=%s SHOPIFY_ADMIN_TOKEN=shpat_test_token ",
      H.q(brokers), H.q(run .. "-g"), admin, H.free_port(), H.q(URL), H.q(shop.url))
    if not H.embedded then
      H.create_topic(brokers, INPUT)
      H.create_topic(brokers, OUTPUT)
    end
    w = H.start_sluice(dir, "job", "config/recommendations.lua", { env = env, admin_port = admin })
    local recs, id = {}, 0
    for _, u in ipairs(users) do
      for _, s in ipairs(slugs) do
        id = id + 1
        recs[#recs + 1] = H.page_view(id, { duid = u, slug = s })
      end
    end
    H.produce(brokers, INPUT, recs)
  end)

  lazy_teardown(function()
    if w then w:stop() end
    if shop then shop:stop() end
    if broker then broker:stop() end
    H.rmrf(dir)
  end)

  -- The debug records of this run's visitors, per visitor in offset order.
  local function ours()
    local per, n = {}, 0
    local recs = H.records(brokers, OUTPUT)
    table.sort(recs, function(a, b) return a.offset < b.offset end)
    for _, r in ipairs(recs) do
      local u = r.json and r.json.userId
      for _, want in ipairs(users) do
        if u == want then
          per[u] = per[u] or {}
          table.insert(per[u], r.json)
          n = n + 1
        end
      end
    end
    return per, n
  end

  local function mlflow(items, stamps)
    local body = cjson.encode({ dataframe_split = { columns = { "userId", "items", "timestamps" },
      data = { { "x", items, stamps } } } })
    local tmp = H.mktemp()
    H.write(tmp .. "/req", body)
    local out = H.sh(string.format("curl -s -m 30 -H 'Content-Type: application/json' --data-binary @%s %s",
      H.q(tmp .. "/req"), H.q(URL:gsub("/+$", "") .. "/invocations")))
    H.rmrf(tmp)
    return cjson.decode(out).predictions[1]
  end

  it("scores each visitor's newest window with MLflow and writes the seed's record", function()
    local per
    local ok = H.wait_for(function()
      per = ours()
      for _, u in ipairs(users) do
        local l = per[u]
        if not (l and #l[#l].aggregatedProducts.slugs == #slugs) then return false end
      end
      return true
    end, 30, 0.5)
    assert.is_true(ok, "each visitor's full window reached the debug topic")
    for _, u in ipairs(users) do
      local last = per[u][#per[u]]
      assert.are.same(slugs, last.aggregatedProducts.slugs)
      local stamps = {}
      for i, t in ipairs(last.aggregatedProducts.viewTimestamps) do stamps[i] = string.format("%d", t) end
      local want = mlflow(slugs, stamps)
      assert.are.same(want.itemIds, last.recommendationsOutput.itemIds, "MLflow's answer for the window")
      assert.are.same(want.preds, last.recommendationsOutput.preds)
      assert.is_string(last.sendResult.metaobject.id, "the Shopify write answered")
      for _, r in ipairs(per[u]) do
        local size = #r.aggregatedProducts.slugs
        assert.are.same(mlflow({ unpack(slugs, 1, size) }, { unpack(stamps, 1, size) }).itemIds,
          r.recommendationsOutput.itemIds, "window of " .. size)
      end
    end
  end)

  it("stores the first 10 product ids of the newest answer in each visitor's metaobject", function()
    local per = ours()
    local code, doc = shop:get("/_metaobjects")
    assert.are.equal(200, code)
    for _, u in ipairs(users) do
      local last = per[u][#per[u]]
      local mo = doc.metaobjects["customer-" .. u]
      assert.is_table(mo, "metaobject of " .. u)
      local want = {}
      for i = 1, 10 do want[i] = last.recommendationsOutput.itemIds[i] end
      assert.are.same(want, cjson.decode(mo.fields.products))
    end
    assert.are.equal(0, H.metric(H.metrics(admin), "sluice_dead_letters_total") or 0)
  end)
end)
