-- sluice.collections: list/object predicates and take().

local sluice = require "sluice"
local collections = require "sluice.collections"

local take = collections.take

local function is_array(v)
  return getmetatable(v) == sluice.array_mt
end

describe("sluice.collections", function()
  describe("take", function()
    it("gives the first n elements in order", function()
      local list = sluice.json_decode("[1,2,3,4,5,6,7,8,9,10,11,12]")
      local top = take(list, 10)
      assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, top)
      assert.are.equal("[1,2,3,4,5,6,7,8,9,10]", sluice.json_encode(top))
    end)

    it("gives the whole list, copied, when it is shorter than n", function()
      local list = sluice.array({ "a", "b" })
      local top = take(list, 10)
      assert.are.same({ "a", "b" }, top)
      assert.are_not.equal(list, top)
    end)

    it("keeps the array marking, so an empty result still encodes as []", function()
      assert.is_true(is_array(take(sluice.array({ 1, 2 }), 1)))
      assert.are.equal("[]", sluice.json_encode(take(sluice.array({ 1, 2 }), 0)))
      assert.are.equal("[]", sluice.json_encode(take(sluice.json_decode("[]"), 10)))
      assert.are.equal("[]", sluice.json_encode(take({}, 10)))
    end)

    it("marks the result of a plain Lua sequence as an array", function()
      assert.is_true(is_array(take({ 1, 2, 3 }, 2)))
    end)

    it("keeps null elements and the objects themselves", function()
      local list = sluice.json_decode('[{"id":"a"},null,{"id":"c"}]')
      local top = take(list, 3)
      assert.are.equal(list[1], top[1])
      assert.are.equal(sluice.null, top[2])
      assert.are.equal(list[3], top[3])
    end)

    it("floors n and treats n <= 0 as nothing", function()
      local list = sluice.array({ 1, 2, 3 })
      assert.are.same({ 1, 2 }, take(list, 2.9))
      assert.are.same({}, take(list, -1))
      assert.are.same({ 1, 2, 3 }, take(list, math.huge))
    end)

    it("stops at the first nil of a list with holes", function()
      assert.are.same({ 1 }, take({ 1, nil, 3 }, 3))
    end)

    it("filters what is not a list as not_a_list", function()
      for _, v in ipairs({ "abc", 5, true, sluice.null, { a = 1 } }) do
        local r, why = take(v, 10)
        assert.is_nil(r)
        assert.are.equal("not_a_list", why)
      end
      local r, why = take(nil, 10)
      assert.is_nil(r)
      assert.are.equal("not_a_list", why)
    end)

    it("raises when n is not a number, a programming error", function()
      assert.has_error(function() take({ 1 }, "10") end)
      assert.has_error(function() take({ 1 }) end)
      assert.has_error(function() take({ 1 }, 0 / 0) end)
    end)
  end)

  describe("is_list and is_object", function()
    it("tell decoded arrays, empty ones too, from decoded objects", function()
      local v = sluice.json_decode('{"a":[],"b":{},"c":[1],"d":{"1":2}}')
      assert.is_true(collections.is_list(v.a))
      assert.is_true(collections.is_list(v.c))
      assert.is_false(collections.is_list(v.b))
      assert.is_false(collections.is_list(v.d))
      assert.is_true(collections.is_object(v))
      assert.is_true(collections.is_object(v.b))
      assert.is_true(collections.is_object(v.d))
      assert.is_false(collections.is_object(v.a))
      assert.is_false(collections.is_object(v.c))
    end)

    it("count a plain Lua sequence as a list and reject non-tables", function()
      assert.is_true(collections.is_list({ 1 }))
      assert.is_false(collections.is_object({ 1 }))
      for _, x in ipairs({ "s", 1, true, sluice.null }) do
        assert.is_false(collections.is_list(x))
        assert.is_false(collections.is_object(x))
      end
      assert.is_false(collections.is_list(nil))
    end)
  end)
end)
