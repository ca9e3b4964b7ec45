-- The pure-Lua `sluice` module (lua/sluice/init.lua): the same API and JSON
-- mapping as the core's C module, for specs that run without the core.

local sluice = require "sluice"
local fx = dofile("spec/fixtures/load.lua")

local function is_array(v)
  return type(v) == "table" and getmetatable(v) == sluice.array_mt
end

-- Decodes s, failing the spec with the decoder's message when it cannot.
local function decode(s)
  local v, err = sluice.json_decode(s)
  assert(v ~= nil, "expected " .. s:sub(1, 60) .. " to decode, got: " .. tostring(err))
  return v
end

local function encode(v)
  local s, err = sluice.json_encode(v)
  assert(s, "expected a value to encode, got: " .. tostring(err))
  return s
end

-- Expects s to be refused with a message that says where.
local function decode_fails(s)
  local v, err = sluice.json_decode(s)
  assert(v == nil, "expected " .. s:sub(1, 60) .. " to be refused")
  assert(type(err) == "string" and err:match("at byte %d+"), "expected an error with a byte offset, got "
    .. tostring(err))
  return err
end

local function encode_fails(v)
  local s, err = sluice.json_encode(v)
  assert(s == nil, "expected encoding to fail, got " .. tostring(s))
  assert.is_string(err)
  return err
end

describe("sluice (pure Lua)", function()

  describe("null", function()
    it("is the NULL lightuserdata cjson uses", function()
      assert.are.equal("userdata", type(sluice.null))
      assert.are.equal(require("cjson").null, sluice.null)
      assert.are_not.equal(nil, sluice.null)
    end)

    it("is what JSON null decodes to, in values, arrays and objects", function()
      assert.are.equal(sluice.null, sluice.json_decode("null"))
      local t = decode('{"a":null,"b":[null,1]}')
      assert.are.equal(sluice.null, t.a)
      assert.are.equal(sluice.null, t.b[1])
      assert.are.equal(1, t.b[2])
    end)

    it("encodes as null", function()
      assert.are.equal("null", encode(sluice.null))
      assert.are.equal('{"a":null}', encode({ a = sluice.null }))
    end)
  end)

  describe("array", function()
    it("marks a table with array_mt and returns it", function()
      local t = {}
      assert.are.equal(t, sluice.array(t))
      assert.is_true(is_array(t))
    end)

    it("makes a new empty array when given nil", function()
      local a = sluice.array()
      assert.is_true(is_array(a))
      assert.are.equal("[]", encode(a))
    end)
  end)

  describe("json_decode", function()
    it("decodes every real tracker request and body the same as lua-cjson", function()
      local cjson = require "cjson"
      local n = 0
      for _, name in ipairs({ "post-pageviews.requests.jsonl", "batch-bufferSize3.requests.jsonl",
                              "get-pageviews.requests.jsonl" }) do
        for line in fx.read(name):gmatch("[^\n]+") do
          local r = decode(line)
          assert.are.same(cjson.decode(line), r)
          if r.body ~= "" then
            assert.are.same(cjson.decode(r.body), decode(r.body))
            n = n + 1
          end
        end
      end
      assert.are.equal(11, n)
      for _, name in ipairs({ "tp2-post-product.body.raw", "tp2-post-batch3.body.raw",
                              "tp2-post-product.body.pretty.json", "tp2-post-batch3.body.pretty.json" }) do
        assert.are.same(cjson.decode(fx.read(name)), decode(fx.read(name)))
      end
    end)

    it("keeps the non-ASCII page title as UTF-8 bytes", function()
      local body = decode(fx.read("tp2-post-product.body.raw"))
      assert.are.equal("Classic Leather Sneaker \226\128\147 NU Demo Store", body.data[1].page)
    end)

    it("marks arrays, empty ones too, and leaves objects plain", function()
      local t = decode('{"a":[],"b":[1,[2]],"c":{},"d":{"x":[]}}')
      assert.is_true(is_array(t.a))
      assert.is_true(is_array(t.b))
      assert.is_true(is_array(t.b[2]))
      assert.is_nil(getmetatable(t))
      assert.is_nil(getmetatable(t.c))
      assert.is_true(is_array(t.d.x))
      assert.is_true(is_array(decode("[]")))
    end)

    it("reads numbers as Lua numbers, millisecond timestamps exactly", function()
      assert.are.equal(1795667685707, decode("1795667685707"))
      assert.are.equal(-0.5, decode("-0.5"))
      assert.are.equal(1.5e-7, decode("1.5e-7"))
      assert.are.equal(120, decode("1.2E+2"))
      assert.are.equal(0, decode("0"))
      assert.are.equal(9007199254740993, decode("9007199254740993"))  -- nearest double, as C does
    end)

    it("reads true, false and scalars at the top level with surrounding whitespace", function()
      assert.is_true(decode(" true "))
      assert.is_false(decode("\n\tfalse\r\n"))
      assert.are.equal("x", decode('"x"'))
    end)

    it("turns escapes into bytes, \\u escapes and surrogate pairs into UTF-8", function()
      assert.are.equal('"\\/\b\f\n\r\t', decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'))
      assert.are.equal("\0", decode('"\\u0000"'))
      assert.are.equal("\226\128\147", decode('"\\u2013"'))
      assert.are.equal("\195\169", decode('"\\u00E9"'))
      assert.are.equal("\240\159\152\128", decode('"\\ud83d\\ude00"'))
      assert.are.equal("a\226\128\147b\240\159\152\128c", decode('"a\\u2013b\\uD83D\\uDE00c"'))
    end)

    it("lets the last of duplicate keys win", function()
      assert.are.equal(2, decode('{"a":1,"a":2}').a)
    end)

    it("refuses malformed JSON with the byte offset of the problem", function()
      for _, s in ipairs({
        "", "   ", "[", "[1,", "[1,]", "[1 2]", "{", '{"a"}', '{"a":}', '{"a":1,}', "{a:1}", "{'a':1}",
        "01", "1.", ".5", "+1", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "tru", "nul", "[] []",
        '"abc', '"\\x"', '"\\u12"', '"\\u12G4"', "[1]//c", "/* c */ 1", '"tab\there"', '"nl\nhere"',
      }) do
        decode_fails(s)
      end
      assert.matches("at byte 4", decode_fails("[1,]"))
    end)

    it("refuses lone and reversed surrogates", function()
      decode_fails('"\\ud83d"')
      decode_fails('"\\ud83dx"')
      decode_fails('"\\ude00"')
      decode_fails('"\\ude00\\ud83d"')
      decode_fails('"\\ud83d\\u0041"')
    end)

    it("refuses text that is not UTF-8", function()
      for _, s in ipairs({ '"\255"', '"caf\233"', '"\192\175"', '"\237\160\128"', '"\244\144\128\128"',
                           '"\226\128"', '{"k\128":1}' }) do
        assert.matches("invalid UTF%-8", decode_fails(s))
      end
    end)

    it("accepts nesting up to MAX_DEPTH and refuses one more", function()
      local d = sluice.MAX_DEPTH
      assert.are.equal(256, d)
      assert.is_true(is_array(decode(string.rep("[", d) .. string.rep("]", d))))
      assert.matches("nesting deeper than 256",
        decode_fails(string.rep("[", d + 1) .. string.rep("]", d + 1)))
      assert.is_table(decode(string.rep('{"a":', d) .. "1" .. string.rep("}", d)))
      decode_fails(string.rep('{"a":', d + 1) .. "1" .. string.rep("}", d + 1))
    end)

    it("fails cleanly on 1 MB of nested arrays and of nested objects", function()
      local half = 512 * 1024
      assert.matches("nesting deeper", decode_fails(string.rep("[", half) .. string.rep("]", half)))
      decode_fails(string.rep("[", 1024 * 1024))
      decode_fails(string.rep('{"a":', 200 * 1024))
    end)

    it("decodes 1 MB of arrays nested within the limit", function()
      local chunk = string.rep("[", 100) .. string.rep("]", 100)
      local n = math.floor(1024 * 1024 / (#chunk + 1))
      local parts = {}
      for i = 1, n do parts[i] = chunk end
      local v = decode("[" .. table.concat(parts, ",") .. "]")
      assert.are.equal(n, #v)
    end)

    it("returns nil and a message for a value that is not a string, never raising", function()
      for _, v in ipairs({ 1, true, {}, sluice.null }) do
        local r, err = sluice.json_decode(v)
        assert.is_nil(r)
        assert.matches("expected a string", err)
      end
      assert.is_nil(sluice.json_decode(nil))
    end)
  end)

  describe("json_encode", function()
    it("round-trips every real tracker body", function()
      for _, name in ipairs({ "tp2-post-product.body.raw", "tp2-post-batch3.body.raw" }) do
        local v = decode(fx.read(name))
        assert.are.same(v, decode(encode(v)))
      end
    end)

    it("writes [] for an empty array-marked table and {} for an empty plain one", function()
      assert.are.equal("[]", encode(sluice.array({})))
      assert.are.equal("{}", encode({}))
      assert.are.equal('{"a":[],"b":{}}', encode(decode('{"a":[],"b":{}}')))
    end)

    it("writes a plain table with keys 1..n as an array", function()
      assert.are.equal('[1,"a",true]', encode({ 1, "a", true }))
    end)

    it("writes integral numbers up to 2^53 as integers, never with an exponent", function()
      assert.are.equal("1795667685707", encode(1795667685707))
      assert.are.equal("9007199254740992", encode(2 ^ 53))
      assert.are.equal("-9007199254740992", encode(-2 ^ 53))
      assert.are.equal("[1795667685707,0,-3]", encode(sluice.array({ 1795667685707, 0, -3 })))
      assert.are.equal("1e+300", encode(1e300))
    end)

    it("writes -0 as -0 and fractions with the shortest text that reads back the same", function()
      assert.are.equal("-0", encode(-0.0))
      assert.are.equal("0.1", encode(0.1))
      assert.are.equal("1.5", encode(1.5))
      for _, x in ipairs({ 1 / 3, 2 / 3, math.pi, 1e-300, 123456.789e10, 2 ^ 53 + 2.5e3 + 0.5 }) do
        assert.are.equal(x, tonumber(encode(x)))
      end
    end)

    it("refuses NaN and infinities", function()
      encode_fails(0 / 0)
      encode_fails(math.huge)
      encode_fails({ a = -math.huge })
    end)

    it("escapes quotes, backslashes and control characters and passes UTF-8 through", function()
      assert.are.equal('"a\\"b\\\\c\\n\\t\\u0000\\u001f\\r\\b\\f/\127"', encode('a"b\\c\n\t\0\31\r\b\f/\127'))
      assert.are.equal('"\226\128\147"', encode("\226\128\147"))
      assert.are.equal("\0\31", decode(encode("\0\31")))
    end)

    it("refuses strings, keys included, that are not UTF-8", function()
      assert.matches("UTF%-8", encode_fails("caf\233"))
      encode_fails({ ["k\255"] = 1 })
      encode_fails(sluice.array({ "\237\160\128" }))
    end)

    it("writes object keys sorted", function()
      assert.are.equal('{"a":1,"b":2,"c":{"x":1,"y":2}}', encode({ c = { y = 2, x = 1 }, b = 2, a = 1 }))
    end)

    it("writes holes in an array-marked table as null and refuses a hole-ridden one", function()
      assert.are.equal("[1,null,3]", encode(sluice.array({ 1, nil, 3 })))
      assert.are.equal("[null,null,1]", encode(sluice.array({ [3] = 1 })))
      assert.matches("sparse", encode_fails(sluice.array({ [1000] = 1 })))
    end)

    it("refuses holes in a plain table, mixed keys and keys that are neither strings nor indexes", function()
      assert.matches("holes", encode_fails({ [1] = 1, [3] = 3 }))
      assert.matches("mixes", encode_fails({ 1, a = 2 }))
      encode_fails({ [true] = 1 })
      encode_fails({ [1.5] = 1 })
      encode_fails({ [0] = 1 })
      encode_fails(sluice.array({ 1, a = 2 }))
    end)

    it("refuses functions, coroutines and other userdata", function()
      encode_fails(print)
      encode_fails({ f = print })
      encode_fails(coroutine.create(print))
      encode_fails(io.stderr)
    end)

    it("refuses a cycle and nesting deeper than MAX_DEPTH without raising", function()
      local t = {}
      t.self = t
      assert.matches("nesting deeper", encode_fails(t))
      local deep = sluice.array()
      for _ = 1, 512 * 1024 do deep = sluice.array({ deep }) end
      encode_fails(deep)
      local ok256 = sluice.array()
      for _ = 2, sluice.MAX_DEPTH do ok256 = sluice.array({ ok256 }) end
      assert.are.equal(string.rep("[", 256) .. string.rep("]", 256), encode(ok256))
      encode_fails(sluice.array({ ok256 }))
    end)

    it("writes nil as null", function()
      assert.are.equal("null", encode(nil))
    end)
  end)

  describe("now", function()
    it("gives integral milliseconds since the epoch", function()
      local t = sluice.now()
      assert.are.equal(math.floor(t), t)
      assert.is_true(math.abs(t - os.time() * 1000) <= 2000)
    end)

    it("can be replaced by a spec", function()
      local saved = sluice.now
      sluice.now = function() return 1795667700000 end
      assert.are.equal(1795667700000, require("sluice").now())
      sluice.now = saved
    end)
  end)

  describe("log", function()
    it("writes one line with the level and message to stderr", function()
      local saved = io.stderr
      local got = {}
      io.stderr = { write = function(_, s) got[#got + 1] = s end }   -- luacheck: ignore 122
      sluice.log("warn", "slow model")
      io.stderr = saved                                               -- luacheck: ignore 122
      assert.are.equal(1, #got)
      assert.matches("warn", got[1])
      assert.matches("slow model\n$", got[1])
    end)

    it("refuses an unknown level or a message that is not text, as the core does", function()
      assert.has_error(function() sluice.log("loud", "x") end)
      assert.has_error(function() sluice.log("info", {}) end)
      assert.has_error(function() sluice.log("info") end)
    end)
  end)
end)
