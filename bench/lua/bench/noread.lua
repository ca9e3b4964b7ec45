-- bench.noread -- a stand-in for recommendations.extract that reads nothing
-- of the record: the context shape the window and the sink read (userId,
-- eventId, product.slug, product.viewTimestamp), made from the record's
-- Kafka metadata, one record in ten filtered as the bench's mix is. With it
-- (bench/job.lua, BENCH_EXTRACT=noread) the bench measures the whole job
-- but for the extract rule and its reads of the record.
local M = {}

function M.extract(ctx)
  local k = ctx.kafka
  if k.offset % 10 == 0 then return nil, "no_page_view" end
  return { input = ctx.input, kafka = k, userId = k.key, eventId = k.offset,
    product = { slug = "classic-leather-sneaker", viewTimestamp = k.timestamp } }
end

return M
