-- testservers.lua -- starts and steers the HTTP test servers of
-- scripts/testservers/ (MLflow protocol, OAuth token endpoint, Shopify Admin
-- GraphQL) from integration specs.
--
--   local TS = dofile("spec/integration/testservers.lua")
--   local ml = TS.start(dir, "mlflow", "--oauth --expires-in 2")
--   ml.url, ml.port; ml:control({mode = "500", times = 2}); ml:received(); ml:stats()
--   ml:post(path, body_table_or_string, headers) -> code, body, headers
--   ml:stop()

local cjson = require "cjson"
local H = dofile("spec/integration/helpers.lua")

local TS = {}

local Server = {}
Server.__index = Server

-- Starts scripts/testservers/<kind>.py with args in dir; waits for the URL it
-- prints first.
function TS.start(dir, kind, args, name)
  name = name or kind
  local p = H.spawn(dir, name, string.format("python3 -B scripts/testservers/%s.py %s", kind, args or ""))
  local url = H.wait_for(function()
    return p:stdout():match("^(http://[^\n]+)\n") or (not p:alive() and "")
  end, 10, 0.05)
  if not url or url == "" then
    local err = p:stderr()
    p:stop(2)
    error(kind .. " test server printed no URL; stderr:\n" .. err)
  end
  return setmetatable({ proc = p, url = url, port = tonumber(url:match(":(%d+)$")) }, Server)
end

-- code, decoded JSON (or nil), raw body, headers of a request.
function Server:request(method, path, body, headers)
  local opts = { headers = headers or {} }
  if body ~= nil then
    opts.body = type(body) == "string" and body or cjson.encode(body)
  end
  local code, raw, hdrs = H.http(self.port, method, path, opts)
  local ok, doc = pcall(cjson.decode, raw)
  return code, ok and doc or nil, raw, hdrs
end

function Server:post(path, body, headers)
  return self:request("POST", path, body, headers)
end

function Server:get(path) return self:request("GET", path) end

function Server:control(t)
  local code, doc, raw = self:post("/_control", t, { "Content-Type: application/json" })
  assert(code == 200, "POST /_control answered " .. tostring(code) .. ": " .. raw)
  return doc
end

-- The requests received (decoded /_received lines), after seq `since`.
function Server:received(since)
  local code, _, raw = self:get("/_received?since=" .. (since or 0))
  assert(code == 200, "GET /_received answered " .. tostring(code))
  local out = {}
  for line in raw:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

function Server:stats()
  local code, doc = self:get("/_stats")
  assert(code == 200, "GET /_stats answered " .. tostring(code))
  return doc
end

function Server:stop() return self.proc:stop(5) end

return TS
