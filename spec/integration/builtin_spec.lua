-- builtin_spec.lua -- the model step with kind = "builtin" through the
-- binary: the same windows scored in process and by the MLflow step talking
-- to `sluice model serve` over HTTP give the same debug records; SIGHUP with
-- a bad model file keeps the model in use; restore records never reach the
-- model (seen through learn = true); a window list that is not handles or
-- times dead-letters the record; a missing file fails `sluice check`.
--
-- A model is trained from `sluice model gen --seed 1`; two workers on their
-- own consumer groups read the same input, one with the built-in step, one
-- with the MLflow step pointed at `sluice model serve` of the same file.

local H = dofile("spec/integration/helpers.lua")

local TOP = 20

local function sh_ok(cmd, what)
  local rc, _, err = H.run(cmd)
  assert(rc == 0, what .. ": " .. err)
end

-- The recommendations job's steps (config/recommendations.lua) up to its
-- debug record, with `model` as the model step.
local function job(t, model)
  local cfg = H.pipeline_config(t)
  cfg.pipeline = {
    { lua = "recommendations.extract", params = { store_url = H.STORE_URL, app_id = H.APP_ID } },
    { name = "window", window = { key = "userId", time = "product.viewTimestamp", length = "5m",
      dedupe = "eventId", aggregate = { slugs = { "list", "product.slug" },
        viewTimestamps = { "list", "product.viewTimestamp" } },
      as = "aggregatedProducts", max_entries = 50 } },
    { name = "model", model = model },
    { lua = "recommendations.limit" },
    { lua = "recommendations.record" },
    { name = "debug", kafka = { topic = t.output, key = "userId",
      fields = { "userId", "aggregatedProducts", "recommendationsOutput", "recommendationIds" } } },
  }
  return cfg
end

-- Debug records of topic per visitor, in offset order.
local function per_user(brokers, topic)
  local recs = H.records(brokers, topic)
  table.sort(recs, function(a, b) return a.offset < b.offset end)
  local per = {}
  for _, r in ipairs(recs) do
    local u = r.json and r.json.userId
    if u then
      per[u] = per[u] or {}
      table.insert(per[u], r.json)
    end
  end
  return per
end

-- The window sizes seen for a visitor.
local function sizes(list)
  local out = {}
  for _, r in ipairs(list or {}) do out[#out + 1] = #r.aggregatedProducts.slugs end
  return out
end

local SLUGS = {
  { "shirt", "jeans", "sneakers" },
  { "laptop", "mouse" },
  { "towel-1", "no-such-product", "novel", "water-bottle-1" },
}

describe("the built-in model step", function()
  local dir, brokers, broker, serve, model, serve_url
  local id = 0
  local function views(users, slugs_of)
    local recs = {}
    for k, u in ipairs(users) do
      for _, s in ipairs(slugs_of[k]) do
        id = id + 1
        recs[#recs + 1] = H.page_view(id, { duid = u, slug = s })
      end
    end
    return recs
  end

  lazy_setup(function()
    dir = H.mktemp()
    model = dir .. "/m.model"
    sh_ok(string.format("%s model gen --seed 1 --out %s", H.q(H.BIN), H.q(dir .. "/i.tsv")), "model gen")
    sh_ok(string.format("%s model train -i %s -c examples/catalog.json -o %s", H.q(H.BIN),
      H.q(dir .. "/i.tsv"), H.q(model)), "model train")
    local port = H.free_port()
    serve = H.spawn(dir, "serve", string.format("%s model serve --model %s --listen 127.0.0.1:%d --top %d",
      H.q(H.BIN), H.q(model), port, TOP))
    serve_url = "http://127.0.0.1:" .. port
    assert(H.wait_for(function() return H.http(port, "GET", "/ping") == 200 end, 10),
      "sluice model serve did not answer; stderr: " .. serve:stderr())
    brokers, broker = H.kafka(dir, "broker")
  end)

  lazy_teardown(function() H.stop_all(serve, broker, dir) end)

  describe("next to the MLflow step against sluice model serve", function()
    local tb, tm, wb, wm
    local run = H.unique("bi")
    local users = { run .. "-a", run .. "-b", run .. "-c" }

    lazy_setup(function()
      tb = H.job_names("bi-builtin", brokers, dir)
      tm = H.job_names("bi-mlflow", brokers, dir)
      tm.input = tb.input
      wb = H.start_sluice(dir, "builtin", job(tb, { kind = "builtin", file = model,
        catalog = "examples/catalog.json", as = "recommendationsModelOutput", top_n = TOP }),
        { admin_port = tb.admin_port })
      wm = H.start_sluice(dir, "mlflow", job(tm, { kind = "mlflow", url = serve_url,
        as = "recommendationsModelOutput", input = "recommendations.model.input",
        output = "recommendations.model.output", timeout = "5s", coalesce = false }),
        { admin_port = tm.admin_port })
      H.produce(brokers, tb.input, views(users, SLUGS))
    end)

    lazy_teardown(function()
      if wb then wb:stop() end
      if wm then wm:stop() end
    end)

    local function complete(per)
      for k, u in ipairs(users) do
        local l = per[u]
        if not (l and #l == #SLUGS[k]) then return false end
      end
      return true
    end

    it("writes the same recommendationsOutput for every window as the MLflow step", function()
      local pb, pm
      assert.is_true(H.wait_for(function()
        pb, pm = per_user(brokers, tb.output), per_user(brokers, tm.output)
        return complete(pb) and complete(pm)
      end, 30, 0.5), "every window of both jobs reached their debug topics: "
        .. H.json({ builtin = { sizes(pb[users[1]]), sizes(pb[users[2]]), sizes(pb[users[3]]) },
          mlflow = { sizes(pm[users[1]]), sizes(pm[users[2]]), sizes(pm[users[3]]) } }))
      for k, u in ipairs(users) do
        assert.are.same(sizes(pm[u]), sizes(pb[u]), u .. ": the same windows")
        for i = 1, #SLUGS[k] do
          local b, m = pb[u][i], pm[u][i]
          assert.are.same(m.aggregatedProducts, b.aggregatedProducts)
          assert.are.equal(TOP, #b.recommendationsOutput.itemIds, u .. " window " .. i)
          assert.are.same(m.recommendationsOutput, b.recommendationsOutput,
            u .. " window " .. i .. ": the built-in answer is the served one")
          assert.are.same(m.recommendationIds, b.recommendationIds)
          assert.are.equal(10, #b.recommendationIds)
        end
      end
      assert.are.equal(0, H.metric(H.metrics(tb.admin_port), "sluice_dead_letters_total") or 0)
      local text = H.metrics(tb.admin_port)
      local n = 0
      for k = 1, #SLUGS do n = n + #SLUGS[k] end
      assert.are.equal(n, H.metric(text, 'sluice_step_out_total{step="model"}'), "counted like any step")
    end)

    it("keeps its model when SIGHUP finds a bad file, and reloads a good one", function()
      local good = H.read(model)
      H.write(model .. ".bad", "sluice-model 2\n")
      os.rename(model, model .. ".good")
      os.rename(model .. ".bad", model)
      local from = #wb:stderr() + 1
      wb:signal("HUP")
      local line = wb:wait_log("reload failed: ([^\n]*)", 10, from)
      assert.is_truthy(line, "a failed reload is logged; stderr: " .. wb:stderr():sub(from))
      assert.is_truthy(line:find(model, 1, true), "names the file: " .. line)
      assert.is_truthy(line:find("keeping the model in use", 1, true), line)
      assert.is_true(wb:alive())
      local u = run .. "-d"
      H.produce(brokers, tb.input, views({ u }, { { "shirt", "jeans" } }))
      local pb, pm
      assert.is_true(H.wait_for(function()
        pb, pm = per_user(brokers, tb.output), per_user(brokers, tm.output)
        return pb[u] and #pb[u] == 2 and pm[u] and #pm[u] == 2
      end, 30, 0.5), "the new visitor's windows reached both debug topics")
      assert.are.same(pm[u][2].recommendationsOutput, pb[u][2].recommendationsOutput,
        "still the model loaded at start")
      os.rename(model .. ".good", model)
      assert.are.equal(good, H.read(model))
      from = #wb:stderr() + 1
      wb:signal("HUP")
      assert.is_truthy(wb:wait_log("model reloaded from", 10, from), wb:stderr():sub(from))
      local text = H.metrics(tb.admin_port)
      assert.are.equal(1, H.metric(text, 'sluice_reloads_total{result="error"}'))
      assert.are.equal(2, H.metric(text, 'sluice_reloads_total{result="ok"}'), "the rules swapped both times")
    end)
  end)

  it("learn = true changes the model with each window, and restore records never reach it", function()
    local t = H.job_names("bi-learn", brokers, dir)
    local cfg = job(t, { kind = "builtin", file = model, as = "recommendationsModelOutput",
      top_n = TOP, learn = true })
    local u = H.unique("bi-learn-u")
    local first = { "shirt", "jeans", "sneakers" }
    local w = H.start_sluice(dir, "learn", cfg, { admin_port = t.admin_port })
    H.produce(brokers, t.input, views({ u }, { first }))
    local per
    assert.is_true(H.wait_for(function()
      per = per_user(brokers, t.output)
      return per[u] and #per[u] == 3
    end, 30, 0.5), "three windows")
    -- What the file's model says for each window (no learning): serve.
    local function served(items, stamps)
      local code, doc = H.post_json(serve_url .. "/invocations", H.json({ dataframe_split = {
        columns = { "userId", "items", "timestamps" }, data = { { u, items, stamps } } } }))
      assert.are.equal(200, code)
      return doc.predictions[1]
    end
    local function want(r)
      local stamps = {}
      for i, ts in ipairs(r.aggregatedProducts.viewTimestamps) do stamps[i] = string.format("%d", ts) end
      return served(r.aggregatedProducts.slugs, stamps)
    end
    assert.are.same(want(per[u][1]), per[u][1].recommendationsOutput, "the first window: nothing learnt yet")
    assert.are_not.same(want(per[u][3]).preds, per[u][3].recommendationsOutput.preds,
      "after two windows the learning model scores differently from the file's")
    assert.are.equal(0, w:stop())
    -- Restarted: the model is the file's again; the window is rebuilt from
    -- the input by restore records, which must not feed the model.
    w = H.start_sluice(dir, "learn2", cfg, { admin_port = t.admin_port })
    H.produce(brokers, t.input, views({ u }, { { "laptop" } }))
    assert.is_true(H.wait_for(function()
      per = per_user(brokers, t.output)
      return per[u] and #per[u] == 4
    end, 30, 0.5), "the fourth window after the restart")
    local last = per[u][4]
    assert.are.same({ "shirt", "jeans", "sneakers", "laptop" }, last.aggregatedProducts.slugs,
      "the window was restored")
    assert.are.same(want(last), last.recommendationsOutput,
      "the restored windows did not teach the model: it scores as the file's")
    assert.are.equal(0, w:stop())
  end)

  it("dead-letters a window whose list is not handles or times, naming the list and the entry", function()
    local cases = {
      { model = { items = "aggregatedProducts.viewTimestamps", timestamps = false },
        error = "model: ctx.aggregatedProducts.viewTimestamps[1] must be a product handle, got number" },
      { model = { timestamps = "aggregatedProducts.slugs" },
        error = "model: ctx.aggregatedProducts.slugs[1] must be an integer ms time, got string" },
    }
    for k, c in ipairs(cases) do
      local t = H.job_names("bi-bad" .. k, brokers, dir)
      local m = { kind = "builtin", file = model, as = "recommendationsModelOutput", top_n = TOP }
      for key, v in pairs(c.model) do m[key] = v end
      local w = H.start_sluice(dir, "bad" .. k, job(t, m), { admin_port = t.admin_port })
      local u = H.unique("bi-bad-u")
      H.produce(brokers, t.input, views({ u }, { { "shirt", "jeans" } }))
      local dl = H.wait_records(brokers, t.dead_letter, 2, 20)
      assert.are.equal(2, #dl, "both windows dead-lettered")
      for _, d in ipairs(dl) do
        assert.are.equal("model", d.json and d.json.step, "dead-lettered by the model step: " .. d.value:sub(-400))
        assert.are.equal(c.error, d.json.error, "the error names the list and the entry")
      end
      assert.are.equal(0, #H.records(brokers, t.output), "no debug record")
      assert.is_true(w:alive())
      assert.are.equal(0, w:stop())
    end
  end)

  it("fails sluice check naming a missing or bad model file and how to make one", function()
    local cfg = { kafka = { brokers = "embedded" }, pipeline = {
      { name = "model", model = { kind = "builtin", file = dir .. "/none.model" } } } }
    local path = H.write_config(dir .. "/check.lua", cfg)
    local rc, _, err = H.run(string.format("%s check -c %s", H.q(H.BIN), H.q(path)))
    assert.are.equal(1, rc)
    assert.is_truthy(err:find(path .. ": pipeline[1].model.file: expected a model file that loads ("
      .. dir .. "/none.model: No such file or directory; make one with: sluice model train", 1, true), err)
    H.write(dir .. "/bad.model", "not a model\n")
    cfg.pipeline[1].model.file = dir .. "/bad.model"
    H.write_config(path, cfg)
    rc, _, err = H.run(string.format("%s check -c %s", H.q(H.BIN), H.q(path)))
    assert.are.equal(1, rc)
    assert.is_truthy(err:find("pipeline[1].model.file: expected a model file that loads (" .. dir
      .. "/bad.model", 1, true), err)
    cfg.pipeline[1].model = { kind = "builtin", file = model, url = "http://x" }
    H.write_config(path, cfg)
    rc, _, err = H.run(string.format("%s check -c %s", H.q(H.BIN), H.q(path)))
    assert.are.equal(1, rc)
    assert.is_truthy(err:find("pipeline[1].model.url: unknown key", 1, true), err)
    cfg.pipeline[1].model = { kind = "builtin", file = model, top_n = 101 }
    H.write_config(path, cfg)
    rc, _, err = H.run(string.format("%s check -c %s", H.q(H.BIN), H.q(path)))
    assert.are.equal(1, rc)
    assert.is_truthy(err:find("pipeline[1].model.top_n: expected an integer from 1 to 100", 1, true), err)
  end)
end)
