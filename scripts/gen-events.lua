-- gen-events.lua -- writes realistic collector records, one JSON per line,
-- for benchmarks and load tests: the real tracker capture of a product page
-- view with a fresh visitor, event id, product and time per record, wrapped in
-- the collector's envelope; every third record is a batched POST of two page
-- views (about 1.4 KB a record on average).
--
--   luajit scripts/gen-events.lua N [FILTERED_PERCENT] [VISITORS] > events.jsonl
--
-- FILTERED_PERCENT (default 10) of the records are page views of another app
-- id or of a non-product page, which the rules filter out. Output lines are
-- "key<TAB>value" when KEYED=1 (for kcat -K'\t'). SLUGS_FROM=examples/catalog.json
-- takes the product handles of that catalog (so a model knows them) instead
-- of 240 made-up ones.
local n = tonumber(arg[1]) or 10000
local filtered = tonumber(arg[2]) or 10
local visitors = tonumber(arg[3]) or math.max(1, math.floor(n / 10))
local keyed = os.getenv("KEYED") == "1"

local f = assert(io.open("spec/fixtures/snowplow/tp2-post-product.body.raw", "rb"))
local body = f:read("*a")
f:close()

math.randomseed(42)
local hex = "0123456789abcdef"
local function uuid(seed)
  local t = {}
  local x = seed
  for i = 1, 32 do
    x = (x * 1103515245 + 12345) % 2147483648
    local d = math.floor(x / 65536) % 16 + 1
    t[i] = hex:sub(d, d)
  end
  local s = table.concat(t)
  return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-4" .. s:sub(14, 16) .. "-a" ..
         s:sub(18, 20) .. "-" .. s:sub(21, 32)
end

local slugs = {}
local from = os.getenv("SLUGS_FROM")
if from and from ~= "" then
  local cf = assert(io.open(from, "rb"))
  for h in cf:read("*a"):gmatch('"handle"%s*:%s*"([^"]+)"') do slugs[#slugs + 1] = h end
  cf:close()
  assert(#slugs > 0, from .. ": no product handles")
else
  for i = 1, 240 do slugs[i] = "product-" .. i .. "-classic-leather-sneaker" end
end

local ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " ..
           "HeadlessChrome/156.0.0.0 Safari/537.36"
local t0 = 1795667677389
local out = {}
for i = 1, n do
  local v = (i * 7919) % visitors + 1
  local duid = uuid(v)
  local eid = uuid(1000003 * i + 17)
  local dtm = t0 + i * 37
  local slug = slugs[(i * 31) % #slugs + 1]
  local b = body:gsub("4f1195b8%-6b68%-4cd6%-a7eb%-925bd120e8ad", duid)
              :gsub("54c9981f%-b499%-4873%-be0b%-64fbb2baf6ed", eid)
              :gsub("1795667677389", tostring(dtm))
  if (i % 100) < filtered then
    if i % 2 == 0 then
      b = b:gsub("shopify%-nu%-recommendations", "another-app")
    else
      b = b:gsub("/products/classic%-leather%-sneaker", "/collections/all")
    end
  else
    b = b:gsub("classic%-leather%-sneaker", slug)
  end
  if i % 3 == 0 then
    -- A batch: the same visitor's next page view in the same POST.
    local ev = b:match('"data":%[(.*)%]}$')
    local ev2 = ev:gsub(eid:gsub("%-", "%%-"), uuid(1000003 * i + 29))
                  :gsub(tostring(dtm), tostring(dtm + 11))
                  :gsub("/products/[%w%-]+", "/products/" .. slugs[(i * 17) % #slugs + 1])
    b = b:sub(1, #b - 2) .. "," .. ev2 .. "]}"
  end
  local rec = '{"message":' .. b .. ',"collector":{"receivedAt":' .. (dtm + 15) ..
    ',"origin":"http://127.0.0.1:8080","userAgent":"' .. ua .. '","ip":"' ..
    uuid(v + 7):gsub("-", "") .. uuid(v + 9):gsub("-", "") .. '",' ..
    '"referer":"http://127.0.0.1:8080/","path":"/com.snowplowanalytics.snowplow/tp2"}}'
  out[#out + 1] = keyed and (duid .. "\t" .. rec) or rec
  if #out == 1000 then
    io.write(table.concat(out, "\n"), "\n")
    out = {}
  end
end
if #out > 0 then io.write(table.concat(out, "\n"), "\n") end
