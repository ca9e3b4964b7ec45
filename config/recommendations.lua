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
--
-- The model: the built-in one in process unless MODEL_URL names an MLflow server.
--   MODEL_FILE         the built-in model's file (default .cache/demo/recs.model,
--                      which `make run` and `make demo` train when it is missing:
--                      sluice model gen --seed 1 --out .cache/demo/interactions.tsv
--                      sluice model train -i .cache/demo/interactions.tsv \
--                        -c examples/catalog.json -o .cache/demo/recs.model);
--                      reloaded on SIGHUP (a bad file keeps the model in use)
--   CATALOG_FILE       the products (default examples/catalog.json): the model
--                      must have been trained for it; the read API's details
--   MODEL_LEARN        1: the built-in model also learns from every window
--                      (in memory; a reload starts again from the file)
--   MODEL_URL          an MLflow scoring server (POST <url>/invocations) instead
--   MODEL_AUTH         none | bearer | oauth2 (default: oauth2 when
--                      MODEL_CLIENT_ID is set, bearer when MODEL_TOKEN is, else none)
--   MODEL_TOKEN        bearer token (a Databricks personal access token)
--   MODEL_TOKEN_URL    OAuth2 token endpoint, e.g. https://<workspace>/oidc/v1/token
--   MODEL_CLIENT_ID, MODEL_CLIENT_SECRET   OAuth2 client credentials
--   MODEL_SCOPE        OAuth2 scope (default all-apis)
--   MODEL_FORMAT       dataframe_split (default) | dataframe_records | inputs
--   MODEL_TIMESTAMPS   string (default, the seed model's signature) | number | none
-- The Shopify write runs when its variables are set:
--   SHOPIFY_STORE      https://<shop>.myshopify.com (https:// when no scheme is given)
--   SHOPIFY_ADMIN_TOKEN  Admin API access token (X-Shopify-Access-Token)
--   SHOPIFY_API_VERSION  default 2026-07
--   SHOPIFY_METAOBJECT_TYPE  default nu_recommendation

local function list(s)
  local out = {}
  for item in string.gmatch(s, "[^,%s]+") do out[#out + 1] = item end
  return out
end

local store_url = env("STORE_URL", "http://127.0.0.1:8080")
local notes = {}

local catalog = env("CATALOG_FILE", "examples/catalog.json")

-- The built-in model, in process: same input and output as the MLflow step.
local function builtin_step()
  local file = env("MODEL_FILE", ".cache/demo/recs.model")
  local learn = env("MODEL_LEARN", "0") == "1"
  notes[#notes + 1] = "model: built-in, file MODEL_FILE=" .. file
    .. (learn and ", learning from the stream" or "")
    .. " (set MODEL_URL for an MLflow scoring server instead)"
  return { name = "model", model = {
    kind = "builtin", file = file, catalog = catalog, as = "recommendationsModelOutput",
    top_n = 20, learn = learn } }
end

-- The model step: an MLflow endpoint when MODEL_URL is set, else the built-in model.
local function model_step()
  local url = env("MODEL_URL", nil)
  if not url or url == "" then return builtin_step() end
  local kind = env("MODEL_AUTH", env("MODEL_CLIENT_ID", nil) and "oauth2"
    or env("MODEL_TOKEN", nil) and "bearer" or "none")
  local auth = { kind = kind }
  if kind == "bearer" then
    auth.token = env("MODEL_TOKEN", nil)
  elseif kind == "oauth2" then
    auth.token_url = env("MODEL_TOKEN_URL", nil)
    auth.client_id = env("MODEL_CLIENT_ID", nil)
    auth.client_secret = env("MODEL_CLIENT_SECRET", nil)
    auth.scope = env("MODEL_SCOPE", "all-apis")
  end
  notes[#notes + 1] = "model: MLflow at MODEL_URL, auth " .. kind
  return { name = "model", model = {
    kind = "mlflow", url = url, auth = auth, as = "recommendationsModelOutput",
    input = "recommendations.model.input", output = "recommendations.model.output",
    format = env("MODEL_FORMAT", "dataframe_split"), timestamps = env("MODEL_TIMESTAMPS", "string"),
    timeout = "5s", max_in_flight = 32, retries = 3 } }
end

-- The Shopify write when SHOPIFY_STORE and SHOPIFY_ADMIN_TOKEN are set.
local function shopify_step()
  local store, token = env("SHOPIFY_STORE", nil), env("SHOPIFY_ADMIN_TOKEN", nil)
  if not (store and token) then
    notes[#notes + 1] = "shopify: left out (set SHOPIFY_STORE and SHOPIFY_ADMIN_TOKEN)"
    return nil
  end
  if not store:find("^https?://") then store = "https://" .. store end
  local version = env("SHOPIFY_API_VERSION", "2026-07")
  notes[#notes + 1] = "shopify: metaobjectUpsert to SHOPIFY_STORE, API " .. version
  return { name = "shopify", http = {
    url = store:gsub("/+$", "") .. "/admin/api/" .. version .. "/graphql.json", method = "POST",
    headers = { ["X-Shopify-Access-Token"] = token }, timeout = "5s", max_in_flight = 8,
    retries = 3, request = "recommendations.shopify.request",
    response = "recommendations.shopify.response", as = "sendResult", accept = { 200 },
    params = { type = env("SHOPIFY_METAOBJECT_TYPE", "nu_recommendation") } } }
end

local pipeline = {
  { lua = "recommendations.extract",
    params = { store_url = store_url, app_id = env("SNOWPLOW_APP_ID", "shopify-nu-recommendations") } },
  -- Each visitor's product views of the last 5 minutes, oldest first; a view
  -- the tracker sent twice (same eventId) counts once.
  { name = "window", window = {
      key = "userId", time = "product.viewTimestamp", length = "5m", dedupe = "eventId",
      aggregate = { slugs = { "list", "product.slug" },
                    viewTimestamps = { "list", "product.viewTimestamp" } },
      as = "aggregatedProducts", max_entries = 50, max_keys = 1000000 } },
}
pipeline[#pipeline + 1] = model_step()
-- The first 10 product GIDs of the answer.
pipeline[#pipeline + 1] = { lua = "recommendations.limit" }
local shopify = shopify_step()
if shopify then pipeline[#pipeline + 1] = shopify end
-- The seed's debug record: {userId, product, aggregatedProducts,
-- recommendationsOutput, sendResult}; variables of steps left out stay absent.
pipeline[#pipeline + 1] = { lua = "recommendations.record" }
pipeline[#pipeline + 1] = { name = "debug", kafka = { topic = "shopify-found-recommendations", key = "userId",
  fields = { "userId", "product", "aggregatedProducts", "recommendationsOutput", "sendResult" } } }
-- Each visitor's latest recommendations (recommendationIds, set by the limit
-- rule from the model's output) for the read API on the collector:
-- GET /recommendations/<visitor id>.
pipeline[#pipeline + 1] = { name = "store", store = {
  key = "userId", value = "recommendationIds", max_keys = 100000, ttl = "30m",
  redis = env("STORE_REDIS_URL", nil), catalog = catalog } }

local brokers = env("KAFKA_BROKERS", "embedded")

return {
  kafka = {
    brokers = brokers,
    -- The embedded broker answers an empty fetch only after fetch.wait.max.ms
    -- (librdkafka's mock cluster does not cut the wait short when a record
    -- arrives): 500 ms by default, most of a page view's latency in the demo.
    -- A real broker answers as soon as a record arrives, so this is left alone.
    consumer = brokers == "embedded" and { ["fetch.wait.max.ms"] = "20" } or nil,
    -- Sinks batch for 5 ms unless told otherwise. On a real broker 2 ms
    -- costs no more CPU per record than 5 ms in paired runs reading a
    -- backlog (a steady 5k records/s: ~8% more in one run) and keeps a
    -- record's p99 from the input's append to the sink's acknowledgement
    -- under 5 ms at 20k records/s (README, Benchmarks); it is the
    -- collector's linger too (1 ms by default). The embedded broker's topics
    -- have 64 partitions in the benches, where batches that short cost ~7%
    -- more CPU per record.
    producer = brokers ~= "embedded" and { ["linger.ms"] = "2" } or nil,
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
  pipeline = pipeline,
  notes = notes,
}
