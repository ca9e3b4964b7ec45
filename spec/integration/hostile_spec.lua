-- hostile_spec.lua -- what a hostile client or an unlucky operator can do to
-- `sluice run`, and what must hold then (issue 13):
--
-- - an idle worker stays in its group (max.poll.interval.ms shortened here,
--   so that the idle period is seconds, not five minutes).
--
-- In embedded mode a `sluice broker` process per test stands in for Kafka.

local H = dofile("spec/integration/helpers.lua")

local dir, brokers, broker

before_each(function()
  dir = H.mktemp()
  brokers, broker = H.kafka(dir, "broker")
end)

after_each(function()
  if broker then broker:stop() end
  -- HOSTILE_SPEC_KEEP=1 keeps the logs for a look after a failure.
  if os.getenv("HOSTILE_SPEC_KEEP") == "1" then print("# kept " .. dir) else H.rmrf(dir) end
end)

-- Topics and group of one job.
local function job(prefix)
  return {
    brokers = brokers, input = H.unique(prefix .. "-in"), output = H.unique(prefix .. "-out"),
    dead_letter = H.unique(prefix .. "-dlq"), group = H.unique(prefix .. "-g"),
    state_dir = dir .. "/state", admin_port = H.free_port(),
  }
end

describe("an idle worker", function()
  it("stays in its group past max.poll.interval.ms and takes records after the quiet spell", function()
    local j = job("idle")
    local cfg = H.pipeline_config(j)
    -- librdkafka wants max.poll.interval.ms >= session.timeout.ms.
    cfg.kafka.consumer = { ["session.timeout.ms"] = "6000", ["heartbeat.interval.ms"] = "1000",
      ["max.poll.interval.ms"] = "7000" }
    local w = H.start_sluice(dir, "idle", cfg, { admin_port = j.admin_port })
    H.produce(brokers, j.input, { H.page_view(1) })
    assert.are.equal(1, #H.wait_records(brokers, j.output, 1), "the first record flowed")
    local mark = #w:stderr()

    H.sleep(12)   -- nothing arrives for longer than max.poll.interval.ms

    local quiet = w:stderr():sub(mark + 1)
    for _, bad in ipairs({ "maximum poll interval", "leaving group", "revoking", "assigned" }) do
      assert.is_nil(quiet:lower():find(bad, 1, true),
        "nothing about the group while idle, but the log says '" .. bad .. "':\n" .. quiet)
    end
    H.produce(brokers, j.input, { H.page_view(2) })
    local recs = H.wait_records(brokers, j.output, 2, 5)
    assert.are.equal(2, #recs, "the record after the quiet spell flowed within 5 s")
    assert.are.equal(0, w:stop(10), "exit 0 on SIGTERM")
  end)
end)
