-- The recommendations extract step on real Snowplow tracker captures and on
-- bad input.

local sluice = require "sluice"
local snowplow = require "sluice.snowplow"
local extract = require("recommendations.extract").extract
local T = require "sluice.testing"
local fx = dofile("spec/fixtures/load.lua")

local PARAMS = fx.PARAMS

-- Runs the step as the core does (sluice.testing): its result as the rule
-- returned it (a context, nil and the counted reason, or a list), failing
-- the spec when it raised or returned what the core dead-letters.
local function run(ctx, params)
  local out = T.run_step(extract, ctx, params or PARAMS, { ctx = true, step = "extract" })
  assert(out.status ~= "error", "extract failed: " .. tostring(out.error))
  if out.status == "filtered" then return nil, out.reason end
  return out.status == "many" and out.contexts or out.ctx
end

-- The reason a context is filtered with, failing when it is not filtered.
local function reason_of(ctx, params)
  local res, why = run(ctx, params)
  assert(res == nil, "expected the record to be filtered, got a result")
  assert(type(why) == "string" and why:match("^[a-z_]+$"), "expected a snake_case reason, got " .. tostring(why))
  return why
end

local function ctx_with_event(ev)
  return fx.ctx(fx.payload({ ev }))
end

describe("recommendations.extract", function()

  describe("on real POST captures (bufferSize 1)", function()
    local bodies = fx.post_bodies("post-pageviews.requests.jsonl")

    it("filters the collection page view as not_a_product_url", function()
      assert.are.equal("http://127.0.0.1:8080/collections/all", bodies[1].data[1].url)
      assert.are.equal("not_a_product_url", reason_of(fx.ctx(bodies[1])))
    end)

    it("gives one context per product page view with userId, eventId, slug and integer viewTimestamp", function()
      local expected = {
        { "classic-leather-sneaker", "54c9981f-b499-4873-be0b-64fbb2baf6ed", 1795667677389 },
        { "merino-wool-beanie", "52d1177b", nil },
        { "canvas-weekender-bag", "d699a48a", nil },
        { "organic-cotton-tee", "4f8aebc6", nil },
      }
      for i = 2, 5 do
        local ctx = fx.ctx(bodies[i])
        local out = run(ctx)
        assert.is_table(out)
        assert.is_nil(out[1], "a single page view gives a context, not a list")
        local want = expected[i - 1]
        assert.are.equal(want[1], out.product.slug)
        assert.are.equal(1, out.eventId:find(want[2], 1, true))
        assert.are.equal("4f1195b8-6b68-4cd6-a7eb-925bd120e8ad", out.userId)
        assert.are.equal("number", type(out.product.viewTimestamp))
        assert.are.equal(tonumber(bodies[i].data[1].dtm), out.product.viewTimestamp)
        if want[3] then assert.are.equal(want[3], out.product.viewTimestamp) end
        assert.are.equal(ctx.input, out.input)
        assert.are.equal(ctx.kafka, out.kafka)
      end
    end)

    it("keeps the viewTimestamp an integer in JSON (no exponent)", function()
      local out = run(fx.ctx(bodies[2]))
      assert.are.equal('{"slug":"classic-leather-sneaker","viewTimestamp":1795667677389}',
        sluice.json_encode(out.product))
    end)

    it("leaves no integer keys in the context", function()
      local out = run(fx.ctx(bodies[2]))
      for k in pairs(out) do assert.are.equal("string", type(k)) end
    end)

    it("keeps other variables the context already had", function()
      local ctx = fx.ctx(bodies[2])
      ctx.tenant = "nu"
      assert.are.equal("nu", run(ctx).tenant)
    end)

    it("does not change the input context", function()
      local ctx = fx.ctx(bodies[2])
      run(ctx)
      assert.is_nil(ctx.userId)
      assert.is_nil(ctx.product)
    end)

    it("accepts a message that is still JSON text", function()
      local raw = fx.read("tp2-post-product.body.raw")
      local out = run(fx.ctx(raw))
      assert.are.equal("classic-leather-sneaker", out.product.slug)
    end)
  end)

  describe("on real batched POST captures (bufferSize 3)", function()
    local bodies = fx.post_bodies("batch-bufferSize3.requests.jsonl")

    it("turns a batch of 3 product page views into 3 contexts in event order", function()
      local body = bodies[6]
      assert.are.equal(3, #body.data)
      local out = run(fx.ctx(body))
      assert.are.equal(3, #out)
      local slugs, ts = {}, {}
      for i, c in ipairs(out) do
        slugs[i] = c.product.slug
        ts[i] = c.product.viewTimestamp
        assert.are.equal(body.data[i].eid, c.eventId)
        assert.are.equal("93c5aea8-ab31-4f52-93ff-854ac1d959ee", c.userId)
      end
      assert.are.same({ "canvas-weekender-bag", "organic-cotton-tee", "stainless-steel-bottle" }, slugs)
      assert.are.same({ 1795667697808, 1795667701138, 1795667701997 }, ts)
    end)

    it("returns only the product page views of a batch that also holds a collection page", function()
      local body = fx.post_bodies("batch-bufferSize3.requests.jsonl")[3]
      assert.are.equal(fx.read("tp2-post-batch3.body.raw"), (fx.requests("batch-bufferSize3.requests.jsonl")[4].body))
      local out = run(fx.ctx(body))
      assert.are.equal(2, #out)
      assert.are.equal("classic-leather-sneaker", out[1].product.slug)
      assert.are.equal("merino-wool-beanie", out[2].product.slug)
    end)

    it("gives a context for every delivery of a re-sent event (dedupe across records is not its job)", function()
      local n = 0
      for _, body in ipairs(bodies) do n = n + #T.run_step(extract, fx.ctx(body), PARAMS, { ctx = true }).contexts end
      assert.are.equal(9, n)   -- 12 deliveries, 3 of them of the collection page
    end)
  end)

  describe("on real GET captures", function()
    local queries = fx.get_queries("get-pageviews.requests.jsonl")

    it("handles the payload the collector builds from a GET query string", function()
      local qs = fx.read("get-i-product.querystring.txt")
      local payload = assert(snowplow.payload_from_query(qs))
      local out = run(fx.ctx(payload))
      assert.are.equal("classic-leather-sneaker", out.product.slug)
      assert.are.equal("36a64dd0-0746-4b4c-93e4-b284312026b5", out.userId)
      assert.are.equal("1c109e82-0346-4129-9268-07e014d62333", out.eventId)
      assert.are.equal(1795667685707, out.product.viewTimestamp)
    end)

    it("gives the 4 product pages of the GET run and filters the collection page", function()
      assert.are.equal(5, #queries)
      local slugs, reasons = {}, {}
      for _, qs in ipairs(queries) do
        local res, why = run(fx.ctx(assert(snowplow.payload_from_query(qs))))
        if res then slugs[#slugs + 1] = res.product.slug else reasons[#reasons + 1] = why end
      end
      assert.are.same({ "classic-leather-sneaker", "merino-wool-beanie", "canvas-weekender-bag",
                        "organic-cotton-tee" }, slugs)
      assert.are.same({ "not_a_product_url" }, reasons)
    end)
  end)

  describe("filters a record", function()
    it("that is not JSON (the input is a string) as not_json_object", function()
      local ctx = fx.ctx(nil)
      ctx.input = "this is not json {"
      assert.are.equal("not_json_object", reason_of(ctx))
    end)

    it("whose input is a JSON array as not_json_object", function()
      local ctx = fx.ctx(nil)
      ctx.input = sluice.json_decode('[{"message": {}}]')
      assert.are.equal("not_json_object", reason_of(ctx))
    end)

    it("whose input is JSON null, a number or an empty array as not_json_object", function()
      for _, v in ipairs({ sluice.null, 42, sluice.array({}), true }) do
        local ctx = fx.ctx(nil)
        ctx.input = v
        assert.are.equal("not_json_object", reason_of(ctx))
      end
    end)

    it("without a message object as message_not_an_object", function()
      for _, m in ipairs({ false, sluice.null, 7, "not json", sluice.array({ fx.payload({}) }) }) do
        assert.are.equal("message_not_an_object", reason_of(fx.ctx(m)))
      end
      local ctx = fx.ctx(nil)
      assert.are.equal("message_not_an_object", reason_of(ctx))
    end)

    it("with another schema as wrong_schema", function()
      local p = fx.payload({ fx.event() })
      p.schema = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-3"
      assert.are.equal("wrong_schema", reason_of(fx.ctx(p)))
      p.schema = nil
      assert.are.equal("wrong_schema", reason_of(fx.ctx(p)))
      p.schema = sluice.null
      assert.are.equal("wrong_schema", reason_of(fx.ctx(p)))
    end)

    it("whose data is not a list as data_not_a_list", function()
      for _, d in ipairs({ "[]", 1, sluice.null, false, fx.event(), {} }) do
        local p = fx.payload({})
        p.data = d
        assert.are.equal("data_not_a_list", reason_of(fx.ctx(p)))
      end
      local p = fx.payload({})
      p.data = nil
      assert.are.equal("data_not_a_list", reason_of(fx.ctx(p)))
    end)

    it("whose data is an empty list as no_page_view", function()
      assert.are.equal("no_page_view", reason_of(fx.ctx(fx.payload({}))))
    end)

    it("with no page view (a page ping, a structured event) as no_page_view", function()
      local pp, se = fx.event(), fx.event()
      pp.e = "pp"
      se.e = "se"
      assert.are.equal("no_page_view", reason_of(fx.ctx(fx.payload({ pp, se }))))
      local none = fx.event()
      none.e = nil
      assert.are.equal("no_page_view", reason_of(ctx_with_event(none)))
    end)

    it("whose events are not objects as event_not_an_object", function()
      assert.are.equal("event_not_an_object", reason_of(fx.ctx(fx.payload({ "pv", 1, sluice.null }))))
      assert.are.equal("event_not_an_object", reason_of(fx.ctx(fx.payload({ sluice.array({}) }))))
    end)

    it("of another app as wrong_app_id", function()
      local ev = fx.event()
      ev.aid = "another-app"
      assert.are.equal("wrong_app_id", reason_of(ctx_with_event(ev)))
      ev.aid = nil
      assert.are.equal("wrong_app_id", reason_of(ctx_with_event(ev)))
      assert.are.equal("wrong_app_id", reason_of(ctx_with_event(fx.event()),
        { store_url = fx.STORE_URL, app_id = "other" }))
    end)

    it("without a duid as missing_duid", function()
      for _, v in ipairs({ false, "", sluice.null, 12, {} }) do
        local ev = fx.event()
        ev.duid = v
        assert.are.equal("missing_duid", reason_of(ctx_with_event(ev)))
      end
      local ev = fx.event()
      ev.duid = nil
      assert.are.equal("missing_duid", reason_of(ctx_with_event(ev)))
    end)

    it("without an eid as missing_eid", function()
      local ev = fx.event()
      ev.eid = nil
      assert.are.equal("missing_eid", reason_of(ctx_with_event(ev)))
    end)

    it("from another store as not_a_product_url", function()
      for _, url in ipairs({
        "http://other.example.com/products/classic-leather-sneaker",
        "https://127.0.0.1:8080/products/classic-leather-sneaker",
        "http://127.0.0.1:80800/products/classic-leather-sneaker",
        "http://127.0.0.1:8080.evil.example/products/classic-leather-sneaker",
        "/products/classic-leather-sneaker",
      }) do
        local ev = fx.event()
        ev.url = url
        assert.are.equal("not_a_product_url", reason_of(ctx_with_event(ev)), url)
      end
    end)

    it("of a page of the store that is not a product as not_a_product_url", function()
      for _, url in ipairs({
        "http://127.0.0.1:8080/", "http://127.0.0.1:8080", "http://127.0.0.1:8080/collections/all",
        "http://127.0.0.1:8080/products/", "http://127.0.0.1:8080/products", "http://127.0.0.1:8080/products?x=1",
        "http://127.0.0.1:8080/products/a/b", "http://127.0.0.1:8080/cart#/products/x",
        "http://127.0.0.1:8080/search?q=/products/x",
      }) do
        local ev = fx.event()
        ev.url = url
        assert.are.equal("not_a_product_url", reason_of(ctx_with_event(ev)), url)
      end
    end)

    it("without a url as missing_url", function()
      for _, v in ipairs({ "", sluice.null, 3 }) do
        local ev = fx.event()
        ev.url = v
        assert.are.equal("missing_url", reason_of(ctx_with_event(ev)))
      end
    end)

    it("whose slug has malformed percent-encoding as bad_url", function()
      for _, slug in ipairs({ "bad%2", "bad%zz", "bad%", "a%2Fb", "nul%00", "latin1-%E9t%E9" }) do
        local ev = fx.event()
        ev.url = fx.STORE_URL .. "/products/" .. slug
        assert.are.equal("bad_url", reason_of(ctx_with_event(ev)), slug)
      end
    end)

    it("with a non-numeric dtm as bad_dtm", function()
      for _, v in ipairs({ "1795667677389.5", "17956676x7389", "-1795667677389", "1.795667677389e12",
                           " 1795667677389", "99999999999999999", 1.5, {}, true }) do
        local ev = fx.event()
        ev.dtm = v
        assert.are.equal("bad_dtm", reason_of(ctx_with_event(ev)), tostring(v))
      end
    end)

    it("without a dtm as missing_dtm", function()
      for _, v in ipairs({ "", sluice.null }) do
        local ev = fx.event()
        ev.dtm = v
        assert.are.equal("missing_dtm", reason_of(ctx_with_event(ev)))
      end
      local ev = fx.event()
      ev.dtm = nil
      assert.are.equal("missing_dtm", reason_of(ctx_with_event(ev)))
    end)

    it("with the reason of the first rejected event when none qualifies", function()
      local a, b = fx.event(), fx.event()
      a.aid = "other"
      b.url = fx.STORE_URL .. "/cart"
      assert.are.equal("wrong_app_id", reason_of(fx.ctx(fx.payload({ a, b }))))
      assert.are.equal("not_a_product_url", reason_of(fx.ctx(fx.payload({ b, a }))))
    end)
  end)

  describe("reads the product slug", function()
    local function slug_of(url)
      local ev = fx.event()
      ev.url = url
      local out = run(ctx_with_event(ev))
      assert(out, "expected a context for " .. url)
      return out.product.slug
    end

    it("percent-decoded", function()
      assert.are.equal("caf\195\169-cr\195\168me", slug_of(fx.STORE_URL .. "/products/caf%C3%A9-cr%c3%A8me"))
      assert.are.equal("a b+c", slug_of(fx.STORE_URL .. "/products/a%20b+c"))
    end)

    it("already in UTF-8 when the browser sent it raw", function()
      assert.are.equal("t\195\169", slug_of(fx.STORE_URL .. "/products/t\195\169"))
    end)

    it("without the query string or fragment", function()
      assert.are.equal("classic-leather-sneaker",
        slug_of(fx.STORE_URL .. "/products/classic-leather-sneaker?variant=123&x=/y"))
      assert.are.equal("classic-leather-sneaker", slug_of(fx.STORE_URL .. "/products/classic-leather-sneaker#reviews"))
      assert.are.equal("classic-leather-sneaker", slug_of(fx.STORE_URL .. "/products/classic-leather-sneaker/?a=1#b"))
    end)

    it("with a trailing slash tolerated", function()
      assert.are.equal("classic-leather-sneaker", slug_of(fx.STORE_URL .. "/products/classic-leather-sneaker/"))
    end)

    it("with scheme and host in any case and a store_url that ends in a slash", function()
      local ev = fx.event()
      ev.url = "HTTP://127.0.0.1:8080/products/merino-wool-beanie"
      local out = run(ctx_with_event(ev), { store_url = fx.STORE_URL .. "/", app_id = fx.APP_ID })
      assert.are.equal("merino-wool-beanie", out.product.slug)
    end)
  end)

  describe("never raises", function()
    it("on 1 MB of nested arrays, decoded or as Lua tables, anywhere in the record", function()
      local depth = 512 * 1024
      local text = string.rep("[", depth) .. string.rep("]", depth)
      assert.are.equal(1024 * 1024, #text)

      local v, err = sluice.json_decode(text)
      assert.is_nil(v)
      assert.matches("nesting deeper than", err)

      -- The raw text as the record and inside the payload.
      local ctx = fx.ctx(nil)
      ctx.input = text
      assert.are.equal("not_json_object", reason_of(ctx))
      assert.are.equal("message_not_an_object", reason_of(fx.ctx(text)))

      -- The same nesting built as Lua tables, as data, as an event and as a field.
      local nested = sluice.array({})
      for _ = 1, depth do nested = sluice.array({ nested }) end
      local p = fx.payload({})
      p.data = nested
      assert.are.equal("event_not_an_object", reason_of(fx.ctx(p)))
      local ev = fx.event()
      ev.url, ev.dtm, ev.duid = nested, nested, nested
      assert.are.equal("missing_duid", reason_of(ctx_with_event(ev)))
      ev.duid = "4f1195b8-6b68-4cd6-a7eb-925bd120e8ad"
      assert.are.equal("missing_url", reason_of(ctx_with_event(ev)))
      local big = fx.ctx(fx.payload({ nested, fx.event() }))
      assert.are.equal("classic-leather-sneaker", run(big).product.slug)
      assert.is_nil(sluice.json_encode(nested))
    end)

    it("on a 1 MB payload of arrays nested within the limit", function()
      local chunk = string.rep("[", 200) .. string.rep("]", 200)
      local parts = {}
      for i = 1, math.ceil(1024 * 1024 / (#chunk + 1)) do parts[i] = chunk end
      local text = '{"schema":"' .. snowplow.PAYLOAD_SCHEMA .. '","data":[' .. table.concat(parts, ",") .. "]}"
      assert.is_true(#text > 1024 * 1024)
      local payload = assert(sluice.json_decode(text))
      assert.are.equal("event_not_an_object", reason_of(fx.ctx(payload)))
      assert.are.equal("event_not_an_object", reason_of(fx.ctx(text)))
    end)

    it("on invalid UTF-8 in fields, filtering with a reason", function()
      local cases = {
        { "duid", "4f1195b8\255", "bad_duid" },
        { "duid", "\192\128", "bad_duid" },
        { "eid", "54c9981f\237\160\128", "bad_eid" },
        { "url", fx.STORE_URL .. "/products/t\233", "bad_url" },
        { "url", fx.STORE_URL .. "/products/%ff%fe", "bad_url" },
        { "url", "http://127.0.0.1:8080\255/products/x", "not_a_product_url" },
        { "aid", "shopify-nu-recommendations\255", "wrong_app_id" },
        { "e", "pv\255", "no_page_view" },
        { "dtm", "1795667677389\255", "bad_dtm" },
      }
      for _, c in ipairs(cases) do
        local ev = fx.event()
        ev[c[1]] = c[2]
        assert.are.equal(c[3], reason_of(ctx_with_event(ev)), c[1])
      end
      -- A page title that is not UTF-8 is not read, so the view still counts.
      local ev = fx.event()
      ev.page = "Sneaker \150 NU"
      assert.is_table(run(ctx_with_event(ev)))
    end)

    it("when any field of a real event is replaced by a value of another type", function()
      local bad_values = { sluice.null, false, true, 0, -1, 1e308, 0 / 0, "", "\0", "\255\254",
                           {}, sluice.array({}), sluice.array({ "pv" }), { x = 1 }, string.rep("a", 100000) }
      local keys = {}
      for k in pairs(fx.event()) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        for _, v in ipairs(bad_values) do
          local ev = fx.event()
          ev[k] = v
          local ok, res, why = pcall(extract, ctx_with_event(ev), PARAMS)
          assert(ok, "extract raised with " .. k .. " = " .. tostring(v) .. ": " .. tostring(res))
          assert(res ~= nil or type(why) == "string", "no reason for " .. k)
        end
      end
    end)

    it("when the context has no input or kafka metadata", function()
      assert.are.equal("not_json_object", reason_of({}))
      local out = run({ input = { message = fx.payload({ fx.event() }) } })
      assert.are.equal("classic-leather-sneaker", out.product.slug)
      assert.is_nil(out.kafka)
    end)
  end)

  describe("with a broken configuration", function()
    it("raises, naming the missing parameter, so records are dead-lettered rather than dropped", function()
      local ctx = ctx_with_event(fx.event())
      local function err_of(params)
        local ok, err = pcall(extract, ctx, params)
        assert.is_false(ok)
        return err
      end
      assert.matches("params must be a table", err_of(nil))
      assert.matches("params.app_id must be a non%-empty string", err_of({ store_url = fx.STORE_URL }))
      assert.matches("params.store_url must be a non%-empty string", err_of({ app_id = fx.APP_ID }))
      assert.matches("params.app_id", err_of({ store_url = fx.STORE_URL, app_id = "" }))
    end)
  end)

  describe("within one record", function()
    it("drops a repeated eid as duplicate_eid and keeps the first", function()
      local a, b = fx.event(), fx.event()
      b.url = fx.STORE_URL .. "/products/merino-wool-beanie"
      local out = run(fx.ctx(fx.payload({ a, b })))
      assert.is_nil(out[1])
      assert.are.equal("classic-leather-sneaker", out.product.slug)
    end)

    it("drops repeats of the first and of later eids, keeping the order of the rest", function()
      local a, b, c, d, e = fx.event(), fx.event(), fx.event(), fx.event(), fx.event()
      c.eid, d.eid, e.eid = "c0000000-0000-4000-8000-000000000001", "c0000000-0000-4000-8000-000000000001",
        "e0000000-0000-4000-8000-000000000002"
      c.url = fx.STORE_URL .. "/products/merino-wool-beanie"
      local out = run(fx.ctx(fx.payload({ a, b, c, d, e })))
      assert.are.equal(3, #out)
      assert.are.same({ a.eid, c.eid, e.eid }, { out[1].eventId, out[2].eventId, out[3].eventId })
      assert.are.equal("merino-wool-beanie", out[2].product.slug)
    end)
  end)
end)
