-- sluice.utf8: strict UTF-8 validation and code point encoding.

local utf8 = require "sluice.utf8"

describe("sluice.utf8", function()
  describe("valid", function()
    it("accepts ASCII, the empty string and well-formed sequences of every length", function()
      for _, s in ipairs({ "", "plain ascii", "\0", "\127", "caf\195\169", "\226\128\147", "\239\191\191",
                           "\240\159\152\128", "\244\143\191\191", "Sneaker \226\128\147 NU \240\159\145\159" }) do
        assert.is_true(utf8.valid(s), ("%q"):format(s))
      end
    end)

    it("refuses stray bytes and truncated, overlong, surrogate and out-of-range sequences with their offset", function()
      local cases = {
        { "\128", 1 }, { "ab\191", 3 }, { "caf\233", 4 }, { "\192\128", 1 }, { "\193\191", 1 },
        { "\224\128\128", 1 }, { "\237\160\128", 1 }, { "\240\128\128\128", 1 }, { "\244\144\128\128", 1 },
        { "\245\128\128\128", 1 }, { "\255", 1 }, { "ok\226\128", 3 }, { "\226\40\161", 1 },
        { "\240\159\152", 1 }, { "x\195", 2 },
      }
      for _, c in ipairs(cases) do
        local ok, at = utf8.valid(c[1])
        assert.is_false(ok, ("%q"):format(c[1]))
        assert.are.equal(c[2], at, ("%q"):format(c[1]))
      end
    end)
  end)

  describe("encode", function()
    it("gives the UTF-8 bytes of code points at each length boundary", function()
      assert.are.equal("A", utf8.encode(0x41))
      assert.are.equal("\127", utf8.encode(0x7F))
      assert.are.equal("\194\128", utf8.encode(0x80))
      assert.are.equal("\223\191", utf8.encode(0x7FF))
      assert.are.equal("\224\160\128", utf8.encode(0x800))
      assert.are.equal("\226\128\147", utf8.encode(0x2013))
      assert.are.equal("\239\191\191", utf8.encode(0xFFFF))
      assert.are.equal("\240\144\128\128", utf8.encode(0x10000))
      assert.are.equal("\244\143\191\191", utf8.encode(0x10FFFF))
    end)
  end)
end)
