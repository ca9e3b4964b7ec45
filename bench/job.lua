-- job.lua -- the shipped job (config/recommendations.lua) cut to the steps a
-- benchmark measures, for bench/compare.py and bench/latency.py.
--
-- The extract and window steps, the debug sink and the Kafka properties are
-- the shipped config's own (read from it, not copied), so a change there is
-- measured here. Only addresses, topics and the steps after the window change:
--
--   BENCH_BROKERS     the broker address sluice connects to
--   BENCH_KAFKA_AS    what the shipped config is told KAFKA_BROKERS is:
--                     "embedded" for its embedded-broker settings (the benches
--                     run the embedded broker as its own process, `sluice
--                     broker`, so that its CPU is not sluice's), else the
--                     address (default BENCH_BROKERS)
--   BENCH_STEPS       extract | window | sink: extract alone; extract -> window;
--                     extract -> window -> the debug sink (the shipped job's
--                     shape without the model, limit and store steps)
--   BENCH_FETCH_WAIT  shipped (default): the consumer properties as shipped;
--                     default: without fetch.wait.max.ms (librdkafka's 500 ms);
--                     a number: fetch.wait.max.ms in ms
--   BENCH_FETCH_MIN_BYTES
--                     unset (default): fetch.min.bytes as shipped; a number:
--                     the consumer's fetch.min.bytes (a broker holds a fetch
--                     until that much is there or the fetch wait passes)
--   BENCH_LINGER      shipped (default): the producer properties as shipped
--                     (sinks linger 5 ms unless they say otherwise); a
--                     number: the sink producer's linger.ms
--   BENCH_EXTRACT     shipped (default): the shipped extract rule; noread:
--                     bench/lua/bench/noread.lua, a stand-in that reads
--                     nothing of the record (what the rest of the job costs)
--   BENCH_INPUT, BENCH_OUTPUT, BENCH_GROUP, BENCH_ADMIN
--                     input topic, sink topic, consumer group, admin listener
--
-- Run from the project root: ./sluice run -c bench/job.lua
local real_env = env
local function need(name)
  local v = real_env(name, nil)
  if v == nil or v == "" then error("bench/job.lua: " .. name .. " is not set", 0) end
  return v
end

local brokers = need("BENCH_BROKERS")
local told = { KAFKA_BROKERS = real_env("BENCH_KAFKA_AS", brokers) }
-- The shipped config reads its environment through env(): answer its
-- KAFKA_BROKERS from here, everything else from the real environment.
env = function(name, default)
  if told[name] ~= nil then return told[name] end
  return real_env(name, default)
end
local ok, job = pcall(dofile, "config/recommendations.lua")
env = real_env
if not ok then error("bench/job.lua: config/recommendations.lua: " .. tostring(job), 0) end

local function step(pred, what)
  for _, s in ipairs(job.pipeline) do
    if pred(s) then return s end
  end
  error("bench/job.lua: config/recommendations.lua has no " .. what .. " step", 0)
end
local extract = step(function(s) return s.lua == "recommendations.extract" end, "extract")
local window = step(function(s) return s.window ~= nil end, "window")
local sink = step(function(s) return s.kafka ~= nil end, "kafka sink")

local how = real_env("BENCH_EXTRACT", "shipped")
if how == "noread" then
  extract = { lua = "bench.noread", fn = "extract" }
  local path = job.rules.path
  job.rules.path = type(path) == "table" and path or { path }
  table.insert(job.rules.path, 1, "bench/lua")
elseif how ~= "shipped" then
  error("bench/job.lua: BENCH_EXTRACT must be shipped or noread, not " .. how, 0)
end

local steps = need("BENCH_STEPS")
local pipeline
if steps == "extract" then
  pipeline = { extract }
elseif steps == "window" then
  pipeline = { extract, window }
elseif steps == "sink" then
  sink.kafka.topic = need("BENCH_OUTPUT")
  pipeline = { extract, window, sink }
else
  error("bench/job.lua: BENCH_STEPS must be extract, window or sink, not " .. steps, 0)
end

-- Sets job.kafka[side][prop] from the environment variable name when it holds
-- a number; `keep` (or unset) leaves the shipped value; anything else but the
-- values of `also` (handled by the caller) is an error.
local function number_prop(name, keep, side, prop, unit, also)
  local v = real_env(name, keep)
  if v:match("^%d+$") then
    job.kafka[side] = job.kafka[side] or {}
    job.kafka[side][prop] = v
  elseif v ~= keep and v ~= also then
    local allowed = {}
    if keep ~= "" then allowed[#allowed + 1] = keep end
    if also then allowed[#allowed + 1] = also end
    local last = "a number of " .. unit
    local list = #allowed > 0 and table.concat(allowed, ", ") .. " or " .. last or last
    error(("bench/job.lua: %s must be %s, not %s"):format(name, list, v), 0)
  end
  return v
end

if number_prop("BENCH_FETCH_WAIT", "shipped", "consumer", "fetch.wait.max.ms", "ms", "default")
    == "default" and job.kafka.consumer then
  job.kafka.consumer["fetch.wait.max.ms"] = nil
end
number_prop("BENCH_FETCH_MIN_BYTES", "", "consumer", "fetch.min.bytes", "bytes")
number_prop("BENCH_LINGER", "shipped", "producer", "linger.ms", "ms")

job.kafka.brokers = brokers
job.kafka.input = need("BENCH_INPUT")
job.kafka.group = need("BENCH_GROUP")
job.collector = nil
job.admin = need("BENCH_ADMIN")
job.pipeline = pipeline
job.notes = nil
return job
