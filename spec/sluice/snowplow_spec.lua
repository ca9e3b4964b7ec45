-- sluice.snowplow: payload checks, event iteration, field parsing, product
-- URLs and GET query strings, on the real tracker captures.

local sluice = require "sluice"
local snowplow = require "sluice.snowplow"
local fx = dofile("spec/fixtures/load.lua")

local STORE = fx.STORE_URL

describe("sluice.snowplow", function()

  describe("payload", function()
    it("gives the tracker payload and its events for a real collector record", function()
      local body = fx.post_bodies("batch-bufferSize3.requests.jsonl")[3]
      local ctx = fx.ctx(body)
      local payload, data = snowplow.payload(ctx.input)
      assert.are.equal(body, payload)
      assert.are.equal(body.data, data)
      assert.are.equal(3, #data)
    end)

    it("decodes a message given as JSON text", function()
      local payload, data = snowplow.payload({ message = fx.read("tp2-post-batch3.body.raw") })
      assert.are.equal(snowplow.PAYLOAD_SCHEMA, payload.schema)
      assert.are.equal(3, #data)
    end)

    it("names what is wrong with a record", function()
      local p = fx.payload({})
      local cases = {
        { "a string", "not_json_object" },
        { sluice.array({ { message = p } }), "not_json_object" },
        { sluice.null, "not_json_object" },
        { {}, "message_not_an_object" },
        { { message = "{not json" }, "message_not_an_object" },
        { { message = "[1]" }, "message_not_an_object" },
        { { message = sluice.array({}) }, "message_not_an_object" },
        { { message = { data = sluice.array({}) } }, "wrong_schema" },
        { { message = { schema = snowplow.PAYLOAD_SCHEMA .. " ", data = sluice.array({}) } }, "wrong_schema" },
        { { message = { schema = snowplow.PAYLOAD_SCHEMA } }, "data_not_a_list" },
        { { message = { schema = snowplow.PAYLOAD_SCHEMA, data = {} } }, "data_not_a_list" },
        { { message = { schema = snowplow.PAYLOAD_SCHEMA, data = "[]" } }, "data_not_a_list" },
      }
      for i, c in ipairs(cases) do
        local payload, why = snowplow.payload(c[1])
        assert.is_nil(payload, "case " .. i)
        assert.are.equal(c[2], why, "case " .. i)
      end
      assert.are.equal("not_json_object", select(2, snowplow.payload(nil)))
    end)
  end)

  describe("events", function()
    it("yields the events of a list in order with their index", function()
      local got = {}
      for i, ev in snowplow.events(sluice.array({ "a", sluice.null, "c" })) do got[#got + 1] = { i, ev } end
      assert.are.same({ { 1, "a" }, { 2, sluice.null }, { 3, "c" } }, got)
    end)

    it("yields nothing for an empty list", function()
      for _ in snowplow.events(sluice.array({})) do error("expected no event") end
    end)
  end)

  describe("timestamp", function()
    it("reads a string of digits as integer milliseconds", function()
      assert.are.equal(1795667677389, snowplow.timestamp("1795667677389"))
      assert.are.equal(0, snowplow.timestamp("0"))
      assert.are.equal(2 ^ 53, snowplow.timestamp("9007199254740992"))
      assert.are.equal(12, snowplow.timestamp("0012"))
      assert.are.equal(2 ^ 53 - 1, snowplow.timestamp("9007199254740991"))
    end)

    it("accepts an integral number", function()
      assert.are.equal(1795667677389, snowplow.timestamp(1795667677389))
    end)

    it("refuses anything else", function()
      for _, v in ipairs({ "", "1.5", "1e12", "-1", "+1", " 1", "1 ", "0x10", "12a", "9007199254740993",
                           "12345678901234567", 1.5, -1, 0 / 0, math.huge, 2 ^ 53 + 2, true, {}, sluice.null }) do
        assert.is_nil(snowplow.timestamp(v), tostring(v))
      end
      assert.is_nil(snowplow.timestamp(nil))
    end)
  end)

  describe("text", function()
    it("accepts a non-empty UTF-8 string without control characters up to the length limit", function()
      assert.are.equal("4f1195b8-6b68-4cd6-a7eb-925bd120e8ad", snowplow.text("4f1195b8-6b68-4cd6-a7eb-925bd120e8ad"))
      assert.are.equal("t\195\169", snowplow.text("t\195\169"))
      assert.are.equal(string.rep("a", 256), snowplow.text(string.rep("a", 256)))
      assert.are.equal(string.rep("a", 300), snowplow.text(string.rep("a", 300), 300))
    end)

    it("refuses empty, too long, control characters, invalid UTF-8 and non-strings", function()
      for _, v in ipairs({ "", string.rep("a", 257), "a\nb", "a\0", "\127", "\255", 1, sluice.null, {} }) do
        assert.is_nil(snowplow.text(v))
      end
    end)
  end)

  describe("percent_decode", function()
    it("decodes %XX in either case", function()
      assert.are.equal("caf\195\169 /x", snowplow.percent_decode("caf%C3%a9%20%2Fx"))
    end)

    it("leaves + alone in a path and makes it a space in a query", function()
      assert.are.equal("a+b", snowplow.percent_decode("a+b"))
      assert.are.equal("a b", snowplow.percent_decode("a+b", true))
      assert.are.equal("a+b", snowplow.percent_decode("a%2Bb", true))
    end)

    it("refuses a % not followed by two hex digits", function()
      for _, s in ipairs({ "%", "a%", "a%2", "%zz", "%2z", "%%41", "100%" }) do
        assert.are.same({ nil, "bad_percent_encoding" }, { snowplow.percent_decode(s) }, s)
      end
      assert.is_nil(snowplow.percent_decode(nil))
    end)
  end)

  describe("product_slug", function()
    it("reads the handle of each product page of the real captures", function()
      local slugs = {}
      for _, body in ipairs(fx.post_bodies("post-pageviews.requests.jsonl")) do
        slugs[#slugs + 1] = snowplow.product_slug(body.data[1].url, STORE) or "-"
      end
      assert.are.same({ "-", "classic-leather-sneaker", "merino-wool-beanie", "canvas-weekender-bag",
                        "organic-cotton-tee" }, slugs)
    end)

    it("drops the query string, the fragment and one trailing slash", function()
      for _, url in ipairs({ "/products/tee?variant=1", "/products/tee#top", "/products/tee/",
                             "/products/tee/?a=b#c", "/products/tee?x=/products/y", "/products/tee#?x" }) do
        assert.are.equal("tee", snowplow.product_slug(STORE .. url, STORE), url)
      end
    end)

    it("percent-decodes the handle", function()
      assert.are.equal("caf\195\169", snowplow.product_slug(STORE .. "/products/caf%C3%A9", STORE))
      assert.are.equal("50% off", snowplow.product_slug(STORE .. "/products/50%25%20off", STORE))
    end)

    it("compares scheme and host case-insensitively and ignores a trailing slash on the store URL", function()
      assert.are.equal("tee", snowplow.product_slug("HTTP://Shop.Example.com/products/tee", "http://shop.example.com/"))
    end)

    it("gives not_a_product_url for another site or another page", function()
      for _, url in ipairs({ "http://127.0.0.1:9090/products/tee", "http://127.0.0.1:8080/collections/all",
                             "http://127.0.0.1:8080/products/", "http://127.0.0.1:8080/products//",
                             "http://127.0.0.1:8080/products/a/b", "http://127.0.0.1:8080/products/?q=1",
                             "http://127.0.0.1:8080/PRODUCTS/tee", "http://127.0.0.1:8080products/tee" }) do
        assert.are.same({ nil, "not_a_product_url" }, { snowplow.product_slug(url, STORE) }, url)
      end
    end)

    it("gives missing_url when there is no url and bad_url for a handle that cannot be read", function()
      assert.are.same({ nil, "missing_url" }, { snowplow.product_slug(nil, STORE) })
      assert.are.same({ nil, "missing_url" }, { snowplow.product_slug("", STORE) })
      assert.are.same({ nil, "missing_url" }, { snowplow.product_slug(sluice.null, STORE) })
      for _, slug in ipairs({ "%", "%e9", "a%2fb", "%0a", "\255", string.rep("a", 2000) }) do
        assert.are.same({ nil, "bad_url" }, { snowplow.product_slug(STORE .. "/products/" .. slug, STORE) })
      end
    end)
  end)

  describe("decode_query and payload_from_query", function()
    it("turn the real GET query string into the event the tracker would have POSTed", function()
      local ev = assert(snowplow.decode_query(fx.read("get-i-product.querystring.txt")))
      assert.are.equal("pv", ev.e)
      assert.are.equal("http://127.0.0.1:8080/products/classic-leather-sneaker", ev.url)
      assert.are.equal("Classic Leather Sneaker \226\128\147 NU Demo Store", ev.page)
      assert.are.equal("1795667685707", ev.dtm)
      assert.are.equal("shopify-nu-recommendations", ev.aid)
      assert.are.equal("36a64dd0-0746-4b4c-93e4-b284312026b5", ev.duid)
      assert.are.equal("1c109e82-0346-4129-9268-07e014d62333", ev.eid)
      for k, v in pairs(ev) do
        assert.are.equal("string", type(k))
        assert.are.equal("string", type(v))
      end
      local payload = assert(snowplow.payload_from_query(fx.read("get-i-product.querystring.txt")))
      assert.are.equal(snowplow.PAYLOAD_SCHEMA, payload.schema)
      assert.are.equal(sluice.array_mt, getmetatable(payload.data))
      assert.are.same(ev, payload.data[1])
    end)

    it("give the same fields for a GET as the POST capture has for a page view", function()
      local post = fx.event()
      local get = assert(snowplow.decode_query(fx.read("get-i-product.querystring.txt")))
      for k in pairs(post) do
        if k ~= "co" then assert.is_string(get[k], "GET lacks " .. k) end
      end
      assert.is_string(get.cx)   -- contexts travel base64url-encoded in a GET
    end)

    it("skip empty pairs, keep a name without value as empty and let the last repeat win", function()
      assert.are.same({ a = "1", b = "", c = "3" }, snowplow.decode_query("a=0&&a=1&b&c=3&"))
      assert.are.same({ q = "a b+c" }, snowplow.decode_query("q=a+b%2Bc"))
      assert.are.same({}, snowplow.decode_query(""))
    end)

    it("skip a pair with an empty name, value unread, as the collector does", function()
      assert.are.same({ e = "pv" }, snowplow.decode_query("=x&e=pv&=%zz"))
      assert.are.same({}, snowplow.decode_query("=1"))
    end)

    it("refuse a query without any parameter as the collector answers it (bad_query)", function()
      for _, qs in ipairs({ "", "&&", "=1", "=1&=2" }) do
        assert.are.same({ nil, "bad_query" }, { snowplow.payload_from_query(qs) }, qs)
      end
    end)

    it("refuse a query with bad percent-encoding or bytes that are not UTF-8", function()
      for _, qs in ipairs({ "a=%", "a=%zz", "%=1", "a=%ff", "a=\255", "a=1&a=%ff" }) do
        assert.are.same({ nil, "bad_query" }, { snowplow.decode_query(qs) }, qs)
        assert.are.same({ nil, "bad_query" }, { snowplow.payload_from_query(qs) }, qs)
      end
      assert.are.same({ nil, "bad_query" }, { snowplow.decode_query(nil) })
    end)
  end)
end)
