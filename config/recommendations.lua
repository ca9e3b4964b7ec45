-- The recommendations job: Snowplow tracker events in, each visitor's product
-- views out. Addresses and secrets come from the environment, so the same file
-- serves a laptop (embedded broker) and production (a real cluster).
--
--   KAFKA_BROKERS      "embedded" (default) or host:port,host:port
--   STORE_URL          the store whose /products/ URLs count
--   SNOWPLOW_APP_ID    the tracker's app id (aid)
--   COLLECTOR_LISTEN   the collector's host:port
--   COLLECTOR_ORIGINS  store origins allowed to post, comma-separated
--   COLLECTOR_IP_SALT  salt of the hashed client IPs (default: random per process)
--   ADMIN_LISTEN       the admin listener (/metrics, /health)
--   STORE_REDIS_URL    redis://host:port/db of the store shared by several
--                      workers (default: in process)

local function list(s)
  local out = {}
  for item in string.gmatch(s, "[^,%s]+") do out[#out + 1] = item end
  return out
end

local store_url = env("STORE_URL", "http://127.0.0.1:8080")

return {
  kafka = {
    brokers = env("KAFKA_BROKERS", "embedded"),
    group = env("SLUICE_GROUP", "sluice-recommendations"),
    input = "http.shopify-events",
    dead_letter = "sluice.dead-letter",
  },
  rules = { path = env("SLUICE_RULES", "lua"), budget = "200ms", watchdog = "5s" },
  collector = {
    listen = env("COLLECTOR_LISTEN", "127.0.0.1:9090"),
    topic = "http.shopify-events",
    allowed_origins = list(env("COLLECTOR_ORIGINS", store_url)),
    ip = "hash",
    ip_salt = env("COLLECTOR_IP_SALT", nil),
  },
  admin = env("ADMIN_LISTEN", "127.0.0.1:9100"),
  pipeline = {
    { lua = "recommendations.extract",
      params = { store_url = store_url, app_id = env("SNOWPLOW_APP_ID", "shopify-nu-recommendations") } },
    -- Each visitor's product views of the last 5 minutes, oldest first; a view
    -- the tracker sent twice (same eventId) counts once.
    { name = "window", window = {
        key = "userId", time = "product.viewTimestamp", length = "5m", dedupe = "eventId",
        aggregate = { slugs = { "list", "product.slug" },
                      viewTimestamps = { "list", "product.viewTimestamp" } },
        as = "aggregatedProducts", max_entries = 50, max_keys = 1000000 } },
    { name = "debug", kafka = { topic = "shopify-found-recommendations", key = "userId",
                                fields = { "userId", "product", "aggregatedProducts" } } },
    -- Each visitor's latest recommendations (recommendationIds, set by the
    -- limit rule from the model's output) for the read API on the
    -- collector: GET /recommendations/<visitor id>.
    { name = "store", store = {
        key = "userId", value = "recommendationIds", max_keys = 100000, ttl = "30m",
        redis = env("STORE_REDIS_URL", nil), catalog = "examples/catalog.json" } },
  },
}
