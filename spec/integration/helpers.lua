-- helpers.lua -- processes, Kafka and HTTP for the black-box specs.
--
-- Every integration spec drives the built binary (SLUICE_BIN, default
-- ./sluice) and reads what it produced with kcat and curl. SLUICE_TEST_KAFKA
-- is "embedded" (the default: a `sluice broker` process per spec file or per
-- test) or the bootstrap address of a real Kafka broker shared by all tests,
-- so topic and group names are made unique with H.unique().
--
--   local H = dofile("spec/integration/helpers.lua")

local cjson = require "cjson"

local H = {}

H.BIN = os.getenv("SLUICE_BIN") or "./sluice"
H.KAFKA = os.getenv("SLUICE_TEST_KAFKA") or "embedded"
H.embedded = H.KAFKA == "embedded"
H.FIX = "spec/fixtures/snowplow/"
H.STORE_URL = "http://127.0.0.1:8080"
H.APP_ID = "shopify-nu-recommendations"

math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)

-- ==================== Shell and files ====================

function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local q = H.q

function H.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end
local sh = H.sh

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
local read = H.read

function H.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Writes path as an editor saves it: a new file, then one rename over it.
function H.save(path, s)
  H.write(path .. ".new", s)
  assert(os.rename(path .. ".new", path))
end

function H.sleep(s) os.execute("sleep " .. s) end
local sleep = H.sleep

function H.now_ms() return tonumber((sh("date +%s%3N"):gsub("%s", ""))) end

function H.mktemp() return (sh("mktemp -d /tmp/sluice-spec.XXXXXX"):gsub("%s", "")) end

function H.rmrf(dir)
  if dir and dir:match("^/tmp/sluice%-spec%.") then os.execute("rm -rf " .. q(dir)) end
end

-- A spec's teardown: stops its sluice process and its broker (either may be
-- nil) and removes its folder.
function H.stop_all(proc, broker, dir)
  if proc then proc:stop() end
  if broker then broker:stop() end
  H.rmrf(dir)
end

-- A name no other test uses on a shared broker: prefix-<time>-<random>.
function H.unique(prefix)
  return string.format("%s-%d-%06d", prefix, os.time(), math.random(0, 999999))
end

-- Waits until f() returns a true value (polling every `step` seconds, up to
-- `timeout` seconds); returns that value, or nil on timeout.
function H.wait_for(f, timeout, step)
  local deadline = H.now_ms() + (timeout or 10) * 1000
  repeat
    local v = f()
    if v then return v end
    sleep(step or 0.1)
  until H.now_ms() > deadline
  return f()
end

-- A TCP port on 127.0.0.1 that nothing listens on right now (random in
-- 20000-60000; a connection attempt that fails means free).
-- Ports come from below Linux's ephemeral range (32768-60999), so an outgoing
-- connection of kcat or librdkafka cannot take one between the check and the
-- bind.
function H.free_port()
  for _ = 1, 50 do
    local port = math.random(20000, 32000)
    local busy = os.execute(string.format(
      "bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null", port))
    if busy ~= 0 and busy ~= true then return port end
  end
  error("no free port found")
end

-- The Lua source of a value (tables with sorted keys), to write configs.
function H.lua(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  assert(t == "table", "cannot write a " .. t .. " into a config")
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = indent .. "  " .. H.lua(v[i], indent .. "  ") end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local name = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k
      or "[" .. H.lua(k) .. "]"
    parts[#parts + 1] = indent .. "  " .. name .. " = " .. H.lua(v[k], indent .. "  ")
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, ",\n") .. ",\n" .. indent .. "}"
end

-- Writes `return <cfg>` to path; returns path.
function H.write_config(path, cfg)
  H.write(path, "return " .. H.lua(cfg) .. "\n")
  return path
end

-- Copies the shipped rules (lua/) into dir/rules so a test may change them.
function H.copy_rules(dir)
  local to = dir .. "/rules"
  os.execute("rm -rf " .. q(to) .. " && cp -r lua " .. q(to))
  assert(read(to .. "/recommendations/extract.lua"), "rules not copied to " .. to)
  return to
end

-- ==================== Processes ====================

-- A started process: {pid, name, dir, out = path, err = path}. The shell
-- around it records its exit status in dir/name.rc once it ended.
local Proc = {}
Proc.__index = Proc

-- Starts cmd in the background; stdout and stderr go to dir/name.{out,err}.
function H.spawn(dir, name, cmd, env)
  local base = dir .. "/" .. name
  os.remove(base .. ".rc")
  os.remove(base .. ".pid")
  local inner = string.format("echo $$ >%s; exec %s%s", q(base .. ".pid"), env or "", cmd)
  os.execute(string.format("( sh -c %s >%s 2>%s </dev/null; echo $? >%s ) >/dev/null 2>&1 &",
    q(inner), q(base .. ".out"), q(base .. ".err"), q(base .. ".rc")))
  local pid = H.wait_for(function()
    local s = read(base .. ".pid")
    return s and tonumber((s:gsub("%s", "")))
  end, 5, 0.02)
  assert(pid, "could not start " .. cmd)
  return setmetatable({ pid = pid, name = name, dir = dir, out = base .. ".out",
    err = base .. ".err", rcfile = base .. ".rc" }, Proc)
end

function Proc:stderr() return read(self.err) or "" end
function Proc:stdout() return read(self.out) or "" end

-- The exit status once the process ended (128+N after signal N), else nil.
function Proc:status()
  local s = read(self.rcfile)
  return s and tonumber((s:gsub("%s", "")))
end

function Proc:alive() return self:status() == nil end

function Proc:signal(sig)
  if self:alive() then os.execute(string.format("kill -%s %d 2>/dev/null", sig or "TERM", self.pid)) end
end

-- Waits up to timeout seconds for the exit; returns the status or nil.
function Proc:wait(timeout)
  return H.wait_for(function() return self:status() end, timeout or 10, 0.05)
end

-- SIGTERM, then SIGKILL after `grace` seconds; safe to call twice.
function Proc:stop(grace)
  if not self:alive() then return self:status() end
  self:signal("CONT")
  self:signal("TERM")
  local rc = self:wait(grace or 10)
  if rc then return rc end
  self:signal("KILL")
  return self:wait(5)
end

-- Waits until stderr matches pattern (from byte `from` on); returns the
-- captures (or the match) or nil after timeout seconds.
function Proc:wait_log(pattern, timeout, from)
  local caps
  H.wait_for(function()
    local text = self:stderr():sub(from or 1)
    caps = { text:match(pattern) }
    return #caps > 0 or not self:alive()
  end, timeout or 10, 0.1)
  if #caps == 0 then
    caps = { self:stderr():sub(from or 1):match(pattern) }
  end
  return unpack(caps)
end

-- Starts `sluice broker`; returns the process and its bootstrap address.
-- topics (a list) are created up front with `partitions` partitions; others
-- get the broker's default of 4 when first used.
function H.start_broker(dir, name, partitions, topics)
  name = name or "broker"
  local create = topics and " --topics " .. q(table.concat(topics, ",")) or ""
  local p = H.spawn(dir, name, string.format("%s broker --partitions %d%s", q(H.BIN),
    partitions or 4, create))
  local addr = H.wait_for(function()
    return (p:stdout()):match("^([^\n]+)\n") or (not p:alive() and "")
  end, 10)
  if not addr or addr == "" then
    p:stop()
    error("sluice broker printed no address; stderr: " .. p:stderr())
  end
  p.addr = addr
  return p, addr
end

-- The brokers to use: a fresh `sluice broker` in dir (embedded mode) or the
-- real Kafka of SLUICE_TEST_KAFKA. Returns the address and the broker
-- process (nil for a real Kafka).
function H.kafka(dir, name)
  if H.embedded then
    local p, addr = H.start_broker(dir, name or "broker")
    return addr, p
  end
  return H.KAFKA, nil
end

-- Makes sure topic exists (a metadata request for it makes a broker with
-- auto.create.topics.enable create it); waits until it has partitions. A
-- consumer never creates its topics, and a worker subscribed to a topic
-- that does not exist yet only gets partitions at its next metadata refresh.
function H.create_topic(brokers, topic)
  local ok = H.wait_for(function()
    local out = sh(string.format("kcat -b %s -L -t %s -m 5 2>&1", q(brokers), q(topic)))
    local parts = tonumber(out:match("with (%d+) partitions"))
    return parts and parts > 0
  end, 15, 0.2)
  assert(ok, "topic " .. topic .. " was not created on " .. brokers)
end

-- Starts `sluice run -c config` (cfg is a table written to dir/name.lua, or
-- a path); creates its input topic first, waits until it logs its partition
-- assignment and, when opts.admin_port is given, until its admin answers
-- /health. Returns the process.
function H.start_sluice(dir, name, cfg, opts)
  opts = opts or {}
  if type(cfg) == "table" and cfg.kafka and cfg.kafka.input and cfg.kafka.brokers ~= "embedded" then
    local inputs = type(cfg.kafka.input) == "table" and cfg.kafka.input or { cfg.kafka.input }
    for _, t in ipairs(inputs) do H.create_topic(cfg.kafka.brokers, t) end
  end
  local path = type(cfg) == "table" and H.write_config(dir .. "/" .. name .. ".lua", cfg) or cfg
  local p = H.spawn(dir, name, string.format("%s run -c %s", q(H.BIN), q(path)), opts.env)
  p.config = path
  if opts.wait_assigned ~= false then
    local n = p:wait_log("assigned (%d+) partition", opts.timeout or 30)
    if not n then
      local err = p:stderr()
      p:stop(2)
      error(string.format("sluice run %s got no partitions within %ds; stderr:\n%s",
        name, opts.timeout or 30, err))
    end
  end
  if opts.admin_port then
    local ok = H.wait_for(function() return H.http(opts.admin_port, "GET", "/health") == 200 end, 10)
    if not ok then
      local err = p:stderr()
      p:stop(2)
      error("sluice run did not answer /health; stderr:\n" .. err)
    end
  end
  return p
end

-- Runs a command to its end; returns exit status, stdout, stderr.
function H.run(cmd)
  local dir = H.mktemp()
  local rc = os.execute(string.format("%s >%s/out 2>%s/err", cmd, dir, dir))
  if type(rc) == "boolean" then rc = rc and 0 or 1 end -- Lua 5.2+ returns true/"exit",n
  -- LuaJIT returns the raw wait status
  if rc > 255 then rc = math.floor(rc / 256) end
  local out, err = read(dir .. "/out") or "", read(dir .. "/err") or ""
  H.rmrf(dir)
  return rc, out, err
end

-- ==================== Kafka ====================

-- Produces records to topic: each a {key, value} pair or a bare value
-- (no key). Values are strings (one line) or tables (JSON-encoded).
function H.produce(brokers, topic, recs)
  local dir = H.mktemp()
  local keyed, plain = {}, {}
  for _, r in ipairs(recs) do
    local k, v = nil, r
    if type(r) == "table" and r.value ~= nil then k, v = r.key, r.value end
    if type(v) ~= "string" then v = cjson.encode(v) end
    assert(not v:find("\n"), "a produced value must be one line")
    if k then keyed[#keyed + 1] = k .. "\t" .. v else plain[#plain + 1] = v end
  end
  local function send(lines, opt)
    if #lines == 0 then return end
    H.write(dir .. "/in", table.concat(lines, "\n") .. "\n")
    local rc, _, err = H.run(string.format("kcat -b %s -P -t %s %s <%s", q(brokers), q(topic),
      opt, q(dir .. "/in")))
    assert(rc == 0, "kcat produce to " .. topic .. " failed: " .. err)
  end
  -- Keyed records first would reorder a mixed list; keep it simple: callers
  -- give all keyed or all plain.
  assert(#keyed == 0 or #plain == 0, "produce: mix of keyed and unkeyed records")
  send(keyed, "-K '\t'")
  send(plain, "")
  H.rmrf(dir)
end

-- Starts a background producer of recs ({key, value} pairs) to topic,
-- `per` records every `tick` seconds (default 100 per 0.1 s), so that the
-- stream is still flowing while a spec signals the worker. Returns the
-- process; its status is kcat's.
function H.produce_slowly(dir, name, brokers, topic, recs, per, tick)
  local lines = {}
  for i, r in ipairs(recs) do
    assert(not r.value:find("\n") and not r.key:find("\t"), "one line per record")
    lines[i] = r.key .. "\t" .. r.value
  end
  local file = dir .. "/" .. name .. ".txt"
  H.write(file, table.concat(lines, "\n") .. "\n")
  return H.spawn(dir, name, "sh -c " .. q(string.format(
    "i=0; while IFS= read -r l; do printf '%%s\\n' \"$l\"; i=$((i+1)); "
      .. "[ $((i %% %d)) -eq 0 ] && sleep %s; done <%s | kcat -b %s -P -t %s -K '\t' -X linger.ms=5",
    per or 100, tostring(tick or 0.1), q(file), q(brokers), q(topic))))
end

-- Every record of topic: {key = s or nil, ts = ms, partition, offset,
-- value = s, json = decoded or nil}, partition after partition, each in
-- offset order.
function H.records(brokers, topic)
  local out = sh(string.format("kcat -C -b %s -t %s -o beginning -e -q -m 10 -X fetch.wait.max.ms=20 "
    .. "-f '%%K %%T %%p %%o\\t%%k\\n%%s\\n' 2>/dev/null", q(brokers), q(topic)))
  local recs = {}
  local it = out:gmatch("([^\n]*)\n")
  for head in it do
    local value = it()
    local klen, ts, part, off, key = head:match("^(%-?%d+) (%-?%d+) (%d+) (%d+)\t(.*)$")
    assert(klen, "unexpected kcat line: " .. head)
    local ok, json = pcall(cjson.decode, value)
    recs[#recs + 1] = {
      key = tonumber(klen) >= 0 and key or nil, ts = tonumber(ts), partition = tonumber(part),
      offset = tonumber(off), value = value, json = ok and json or nil,
    }
  end
  return recs
end

-- Waits (up to timeout seconds, default 20) until topic holds at least n
-- records; returns them (fewer on timeout).
function H.wait_records(brokers, topic, n, timeout)
  local recs
  H.wait_for(function()
    recs = H.records(brokers, topic)
    return #recs >= n
  end, timeout or 20, 0.3)
  return recs
end

-- Waits until the number of records in topic has not changed for `quiet`
-- seconds (or timeout); returns them.
function H.settle(brokers, topic, quiet, timeout)
  local deadline = H.now_ms() + (timeout or 30) * 1000
  local recs = H.records(brokers, topic)
  local last, since = #recs, H.now_ms()
  while H.now_ms() < deadline do
    sleep(0.3)
    recs = H.records(brokers, topic)
    if #recs ~= last then last, since = #recs, H.now_ms()
    elseif H.now_ms() - since >= (quiet or 2) * 1000 then break end
  end
  return recs
end

-- ==================== HTTP ====================

-- http(port, method, path, {headers = {"Name: value"}, body = s})
--   -> code, body, headers (lower-case names)
function H.http(port, method, path, opts)
  opts = opts or {}
  local http_dir = H.mktemp()
  local cmd = { "curl -s -m 30 -X", method, "-D", q(http_dir .. "/resp.h"), "-o",
    q(http_dir .. "/resp.b"), "-w '%{http_code}'" }
  for _, h in ipairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. q(h) end
  if opts.body then
    H.write(http_dir .. "/req.b", opts.body)
    cmd[#cmd + 1] = "--data-binary @" .. q(http_dir .. "/req.b")
  end
  cmd[#cmd + 1] = q("http://127.0.0.1:" .. port .. path)
  local code = tonumber(sh(table.concat(cmd, " ") .. " 2>/dev/null"))
  local headers = {}
  for line in (read(http_dir .. "/resp.h") or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  local body = read(http_dir .. "/resp.b") or ""
  H.rmrf(http_dir)
  return code, body, headers
end

-- JSON of a request body: a table with string keys is an object (sorted
-- keys), any other table an array, so an empty list stays [] (cjson 2.1.0
-- would write {}, which a scoring server does not read as a list).
function H.json(v)
  if type(v) ~= "table" then
    if type(v) == "number" and v % 1 == 0 then return string.format("%d", v) end
    return cjson.encode(v)
  end
  local keys = {}
  for k in pairs(v) do if type(k) == "string" then keys[#keys + 1] = k end end
  local parts = {}
  if #keys == 0 then
    for i, x in ipairs(v) do parts[i] = H.json(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. H.json(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- n increasing epoch-millisecond timestamps as strings, one second apart (the
-- seed model's signature has them as strings).
function H.stamps(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%d", 1795667676496 + i * 1000) end
  return t
end

-- post_json(url, body, content_type or false) -> status, decoded JSON or
-- nil, raw body. body is a string or a table (H.json); content_type
-- defaults to application/json, false sends no Content-Type header at all.
function H.post_json(url, body, content_type)
  local dir = H.mktemp()
  H.write(dir .. "/req", type(body) == "string" and body or H.json(body))
  local ct = content_type == false and "-H 'Content-Type:'"
    or "-H " .. q("Content-Type: " .. (content_type or "application/json"))
  local code = tonumber(sh(string.format(
    "curl -s -m 30 -o %s -w '%%{http_code}' %s --data-binary @%s %s 2>/dev/null",
    q(dir .. "/resp"), ct, q(dir .. "/req"), q(url))))
  local raw = read(dir .. "/resp") or ""
  H.rmrf(dir)
  local ok, decoded = pcall(cjson.decode, raw)
  return code, ok and decoded or nil, raw
end

-- The Prometheus text of /metrics on the admin port.
function H.metrics(port)
  local code, text = H.http(port, "GET", "/metrics")
  assert(code == 200, "GET /metrics answered " .. tostring(code))
  return text
end

-- The value of one sample, e.g. metric(text, 'sluice_filtered_total{step="extract",reason="x"}');
-- nil when absent.
function H.metric(text, sample)
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #sample + 1) == sample .. " " then return tonumber(line:sub(#sample + 2)) end
  end
  return nil
end

-- ==================== Tracker records ====================

-- The collector records of a *.requests.jsonl capture's POSTs, as the
-- collector writes them: {key = first duid, value = '{"message":<body>,
-- "collector":{...}}', events = the body's data list}.
function H.tracker_records(name)
  local out = {}
  for line in assert(read(H.FIX .. name), "fixture missing: " .. name):gmatch("[^\n]+") do
    local req = cjson.decode(line)
    if req.method == "POST" then
      local body = req.body
      local events = cjson.decode(body).data
      out[#out + 1] = {
        key = events[1].duid,
        value = '{"message":' .. body .. ',"collector":{"receivedAt":' .. H.now_ms()
          .. ',"origin":"' .. H.STORE_URL .. '"}}',
        events = events,
      }
    end
  end
  return out
end

-- count page views (H.page_view) with ids first, first + 1, ..., each given opts.
function H.page_views(first, count, opts)
  local out = {}
  for i = 0, count - 1 do out[#out + 1] = H.page_view(first + i, opts) end
  return out
end

-- A synthetic tracker record with one product page view: id names the event
-- (eid "00000000-0000-4000-8000-<id as 12 digits>") and the visitor (duid).
function H.page_view(id, opts)
  opts = opts or {}
  local eid = string.format("00000000-0000-4000-8000-%012d", id)
  local duid = opts.duid or string.format("11111111-1111-4111-8111-%012d", id % 97)
  local ev = {
    e = "pv", aid = H.APP_ID, duid = duid, eid = eid,
    url = H.STORE_URL .. "/products/" .. (opts.slug or ("product-" .. id)),
    dtm = tostring(opts.dtm or (1795667677389 + id)), stm = tostring(1795667677400 + id),
    p = "web", tv = "js-4.10.1",
  }
  local value = cjson.encode({ message = {
    schema = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
    data = { ev } }, collector = { receivedAt = 1795667677500 + id } })
  return { key = duid, value = value, eid = eid }
end

-- Consumer properties that let a restarted worker get the partitions of
-- one that died (kill -9, watchdog) within seconds instead of librdkafka's
-- default 45 s session timeout (6 s is the broker's minimum by default).
H.FAST_GROUP = { ["session.timeout.ms"] = "6000", ["heartbeat.interval.ms"] = "1000" }

-- Topics, group, admin port and state folder (in dir) of one worker, named
-- after prefix, for H.pipeline_config.
function H.job_names(prefix, brokers, dir)
  return {
    input = H.unique(prefix .. "-in"), output = H.unique(prefix .. "-out"),
    dead_letter = H.unique(prefix .. "-dlq"), group = H.unique(prefix .. "-g"),
    admin_port = H.free_port(), brokers = brokers,
    state_dir = dir .. "/" .. H.unique("state"),
  }
end

-- The config of a pipeline: extract (rules from rules_path) then a kafka
-- step writing {userId, product} (or opts.fields) to `output`.
function H.pipeline_config(t)
  local cfg = {
    kafka = { brokers = t.brokers, group = t.group, input = t.input, dead_letter = t.dead_letter,
      properties = t.properties, consumer = t.consumer or H.FAST_GROUP },
    rules = { path = t.rules or "lua", budget = t.budget or "200ms", watchdog = t.watchdog or "5s",
      state_dir = t.state_dir },
    admin = t.admin_port and ("127.0.0.1:" .. t.admin_port) or nil,
    shutdown_timeout = t.shutdown_timeout,
    max_inflight = t.max_inflight,
    pipeline = t.pipeline or {
      { lua = t.extract or "recommendations.extract",
        params = { store_url = H.STORE_URL, app_id = H.APP_ID } },
      { name = "debug", kafka = { topic = t.output, key = "userId",
        fields = t.fields or { "userId", "product", "eventId" } } },
    },
  }
  return cfg
end


-- ==================== Real Kafka cluster (scripts/kafka.sh) ====================

-- Runs `scripts/kafka.sh ARGS` (env: extra "NAME=value " words); returns
-- exit status, stdout, stderr.
function H.kafka_sh(args, env)
  return H.run((env or "") .. "scripts/kafka.sh " .. args)
end

-- Creates topic on the cluster of scripts/kafka.sh with `partitions`
-- partitions (default 4) and replication factor `rf` (default 3), and waits
-- until brokers list it.
function H.create_replicated_topic(brokers, topic, partitions, rf)
  local rc, out, err = H.kafka_sh(string.format("topic create %s --partitions %d --replication-factor %d",
    q(topic), partitions or 4, rf or 3))
  assert(rc == 0, "kafka.sh topic create " .. topic .. " failed: " .. out .. err)
  H.create_topic(brokers, topic)
end

-- kill -9 of node n of the cluster of scripts/kafka.sh.
function H.kill_kafka_node(n)
  local rc, out, err = H.kafka_sh("kill-broker " .. n)
  assert(rc == 0, "kafka.sh kill-broker " .. n .. " failed: " .. out .. err)
end

-- Starts the killed nodes of `nodes` again, in order, and waits until the
-- cluster lists them all. Every node is a KRaft controller too, so after all
-- of them were killed the first restarted one cannot answer before a second
-- one gives the quorum a majority: `kafka.sh restart-broker` then gives up
-- waiting for it (after `alone` seconds, default 5) while the node keeps
-- starting; the next restart is the one that waits for both.
function H.restart_kafka_nodes(brokers, nodes, alone)
  local total = #H.split_brokers(brokers)
  for i, n in ipairs(nodes) do
    local live = total - (#nodes - i) -- nodes running once this one is up
    local quorum = live * 2 > total
    local rc, out, err = H.kafka_sh("restart-broker " .. n,
      quorum and "" or string.format("KAFKA_START_TIMEOUT=%d ", alone or 5))
    assert(rc == 0 or not quorum, "kafka.sh restart-broker " .. n .. " failed: " .. out .. err)
  end
  local ok = H.wait_for(function()
    local out = sh(string.format("kcat -b %s -L -m 3 2>/dev/null", q(brokers)))
    return tonumber(out:match("(%d+) brokers:")) == total
  end, 60, 0.5)
  assert(ok, "the cluster " .. brokers .. " does not list its " .. total .. " brokers again")
  local rc, _, err = H.kafka_sh("status")
  assert(rc == 0 and not err:find("not running"), "kafka.sh status after the restart: " .. err)
end

-- The addresses of a bootstrap list "host:port,host:port".
function H.split_brokers(brokers)
  local out = {}
  for a in tostring(brokers):gmatch("[^,]+") do out[#out + 1] = a end
  return out
end

return H
