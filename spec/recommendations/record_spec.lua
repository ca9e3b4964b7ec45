-- The debug record rule: the seed's field names for the kafka step.

local record = require "recommendations.record"

describe("recommendations.record", function()
  it("names the model's answer recommendationsOutput, as the seed's record does", function()
    local out = { itemIds = { "gid://shopify/Product/1" } }
    local ctx = { userId = "u1", recommendationsModelOutput = out, sendResult = { metaobject = { id = "x" } } }
    local res = record.record(ctx)
    assert.are.equal(ctx, res)
    assert.are.equal(out, res.recommendationsOutput)
    assert.are.same({ "userId", "product", "aggregatedProducts", "recommendationsOutput", "sendResult" },
      record.FIELDS)
  end)

  it("leaves it absent when no model step ran", function()
    assert.is_nil(record.record({ userId = "u1" }).recommendationsOutput)
  end)
end)
