-- wrk-post.lua -- posts a captured tracker body at a collector, as the
-- Snowplow JS tracker does (keep-alive, Origin, JSON content type).
--   wrk -s scripts/wrk-post.lua http://127.0.0.1:8080
-- BODY names the body file (default: the captured single page view),
-- ORIGIN the Origin header (default the capture's store, "" for none).
-- Ends with "requests/s", "latency p50/p99" and "non-2xx" lines.

local path = os.getenv("BODY") or "spec/fixtures/snowplow/tp2-post-product.body.raw"
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

local origin = os.getenv("ORIGIN") or "http://127.0.0.1:8080"

wrk.method = "POST"
wrk.path = "/com.snowplowanalytics.snowplow/tp2"
wrk.body = body
wrk.headers["Content-Type"] = "application/json; charset=UTF-8"
if origin ~= "" then wrk.headers["Origin"] = origin end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local non2xx = e.status
  io.write(string.format("requests/s %.0f\n", summary.requests / secs))
  io.write(string.format("latency p50 %.2f ms\n", latency:percentile(50) / 1000))
  io.write(string.format("latency p99 %.2f ms\n", latency:percentile(99) / 1000))
  io.write(string.format("requests %d non-2xx %d socket-errors %d\n", summary.requests,
    non2xx, e.connect + e.read + e.write + e.timeout))
end
