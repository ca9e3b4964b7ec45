--- Recommendations, the debug record: what the seed wrote to
-- shopify-found-recommendations for every window,
--
--   {userId, product, aggregatedProducts, recommendationsOutput, sendResult}
--
-- The kafka step writes variables under their own names, and the seed's
-- record calls the model's answer `recommendationsOutput` where the context
-- calls it `recommendationsModelOutput`; record(ctx) adds that name, so the
-- step after it is
--
--   { lua = "recommendations.record" },
--   { name = "debug", kafka = { topic = "shopify-found-recommendations", key = "userId",
--       fields = { "userId", "product", "aggregatedProducts", "recommendationsOutput", "sendResult" } } }
--
-- A variable the pipeline did not set (no model step configured, no
-- Shopify step) stays absent from the record.

local M = {}

--- record(ctx) -> ctx with recommendationsOutput = recommendationsModelOutput.
function M.record(ctx)
  ctx.recommendationsOutput = ctx.recommendationsModelOutput
  return ctx
end

--- The fields of the seed's record, in its order, for the kafka step.
M.FIELDS = { "userId", "product", "aggregatedProducts", "recommendationsOutput", "sendResult" }

return M
