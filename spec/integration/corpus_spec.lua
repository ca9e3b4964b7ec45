-- corpus_spec.lua -- malformed tracker payloads through collector and
-- pipeline (issue 12): every kind of scripts/soak-load.py's corpus
-- (truncated JSON, deep nesting, huge strings and bodies, invalid UTF-8,
-- wrong types in every field) is sent three times to one `sluice run` with
-- the collector and the extract rule; each is counted under its reason (the
-- collector's sluice_collector_requests_total{result}, the pipeline's
-- sluice_filtered_total{step="extract",reason}), the valid one reaches the
-- sink, and the process lives on. `make soak` sends the same corpus at rate.

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local TP2 = "/com.snowplowanalytics.snowplow/tp2"
local TIMES = 3

describe("corpus of malformed tracker payloads", function()
  local dir, n, worker, broker, port

  lazy_setup(function()
    dir = H.mktemp()
    local brokers
    brokers, broker = H.kafka(dir, "broker")
    n = H.job_names("corpus", brokers, dir)
    port = H.free_port()
    local cfg = H.pipeline_config(n)
    cfg.collector = { listen = "127.0.0.1:" .. port, topic = n.input,
      allowed_origins = { H.STORE_URL }, max_body = "64KB" }
    worker = H.start_sluice(dir, "corpus", cfg, { admin_port = n.admin_port })
  end)

  lazy_teardown(function() H.stop_all(worker, broker, dir) end)

  it("counts each kind under its reason and stays alive", function()
    local rc, _, err = H.run("python3 scripts/soak-load.py dump " .. H.q(dir .. "/corpus"))
    assert.are.equal(0, rc, err)
    local kinds = cjson.decode((assert(H.read(dir .. "/corpus/kinds.json"))))
    local want_collector, want_filtered, want_views, nkinds = {}, {}, 0, 0
    for kind, w in pairs(kinds) do
      nkinds = nkinds + 1
      local body = (assert(H.read(dir .. "/corpus/" .. kind .. ".body")))
      for _ = 1, TIMES do
        local code = H.http(port, "POST", TP2, { body = body, headers = { "Origin: " .. H.STORE_URL,
          "Content-Type: application/json; charset=UTF-8" } })
        local want_code = ({ ok = 200, bad_json = 400, bad_payload = 400, too_large = 413 })[w[1]]
        assert.are.equal(want_code, code, kind)
      end
      want_collector[w[1]] = (want_collector[w[1]] or 0) + TIMES
      if w[2] == "ok" then want_views = want_views + TIMES
      elseif w[2] ~= "-" then want_filtered[w[2]] = (want_filtered[w[2]] or 0) + TIMES end
    end
    assert.is_true(nkinds >= 20, "the corpus has its kinds: " .. nkinds)

    local text
    H.wait_for(function()
      text = H.metrics(n.admin_port)
      return (H.metric(text, 'sluice_step_in_total{step="extract"}') or 0) >= want_collector.ok
    end, 20, 0.3)
    for result, count in pairs(want_collector) do
      assert.are.equal(count, H.metric(text, 'sluice_collector_requests_total{result="' .. result .. '"}'),
        "collector result " .. result)
    end
    for reason, count in pairs(want_filtered) do
      assert.are.equal(count, H.metric(text, 'sluice_filtered_total{step="extract",reason="' .. reason .. '"}'),
        "extract reason " .. reason)
    end
    local recs = H.wait_records(n.brokers, n.output, want_views)
    assert.are.equal(want_views, #recs, "the valid deep event reaches the sink each time")
    assert.are.equal(0, #H.records(n.brokers, n.dead_letter), "nothing dead-lettered")
    assert.is_true(worker:alive(), "sluice still runs; stderr:\n" .. worker:stderr())
    assert.are.equal(200, H.http(port, "GET", "/health"))
  end)
end)
