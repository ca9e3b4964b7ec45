-- drain_spec.lua -- the admin HTTP is answered while the worker drains a
-- backlog.
--
-- 100k realistic tracker records (scripts/gen-events.lua, ~1.4 KB) wait in
-- the input topic before `sluice run` starts; while it works through them,
-- /metrics is polled back to back. Every answer must come within
-- BOUND_S: the consumer's batches leave room for the loop's other events.

local H = dofile("spec/integration/helpers.lua")

local N = 100000
local BOUND_S = 0.15    -- the most a /metrics request may take during the drain (the
                        -- unfair drain took 0.22 to 0.6 s here, the fair one under 0.06 s)
local MIN_POLLS = 10    -- polls that must land while records are still being done

describe("a worker draining a backlog", function()
  local dir, t, broker, worker

  setup(function()
    dir = H.mktemp()
    t = H.job_names("drain", H.KAFKA, dir)
    if H.embedded then
      -- 64 partitions: the embedded broker keeps 5 MiB of each; the backlog
      -- is 140 MB.
      broker, t.brokers = H.start_broker(dir, "broker", 64, { t.input })
    end
  end)

  teardown(function()
    if worker then worker:stop() end
    if broker then broker:stop() end
    H.rmrf(dir)
  end)

  it("answers every /metrics request within 150 ms while it works", function()
    local rc, events, err = H.run(string.format("KEYED=1 luajit scripts/gen-events.lua %d 10", N))
    assert.equal(0, rc, "gen-events.lua failed: " .. err)
    H.write(dir .. "/events.tsv", events)
    local out
    rc, out, err = H.run(string.format("kcat -b %s -P -t %s -K'\t' <%s", H.q(t.brokers),
      H.q(t.input), H.q(dir .. "/events.tsv")))
    assert.equal(0, rc, "kcat could not load the backlog: " .. out .. err)

    worker = H.start_sluice(dir, "worker", H.pipeline_config(t), { admin_port = t.admin_port })

    -- Back-to-back polls, timed by curl itself: "<code> <seconds> <done>".
    local url = "http://127.0.0.1:" .. t.admin_port .. "/metrics"
    out = H.sh(string.format([[
      end=$(( $(date +%%s) + 120 ))
      while [ "$(date +%%s)" -lt "$end" ]; do
        r=$(curl -s -m 5 -o %s -w '%%{http_code} %%{time_total}' %s)
        d=$(awk '$1 == "sluice_records_done_total" { print $2 }' %s 2>/dev/null)
        echo "$r ${d:-0}"
        [ "${d:-0}" -ge %d ] 2>/dev/null && break
      done]], H.q(dir .. "/m"), H.q(url), H.q(dir .. "/m"), N))

    local during, worst, done, failed = 0, 0, 0, nil
    for code, secs, d in out:gmatch("(%d+) ([%d.]+) (%d+)") do
      code, secs, d = tonumber(code), tonumber(secs), tonumber(d)
      if code ~= 200 and not failed then failed = string.format("answered %d", code) end
      if d > 0 and d < N then
        during = during + 1
        if secs > worst then worst = secs end
      end
      done = d
    end
    assert.is_nil(failed, "a /metrics request failed during the drain: " .. tostring(failed))
    assert.equal(N, done, "the worker did not finish the backlog; stderr:\n" .. worker:stderr())
    assert.is_true(worst <= BOUND_S, string.format(
      "the slowest of %d /metrics requests during the drain took %.3f s, over %.3f s",
      during, worst, BOUND_S))
    assert.is_true(during >= MIN_POLLS, string.format(
      "only %d polls landed during the drain; the spec needs %d to mean anything", during,
      MIN_POLLS))
  end)
end)
