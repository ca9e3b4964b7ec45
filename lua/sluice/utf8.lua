--- UTF-8 validation as RFC 3629 defines it: no overlong forms, no UTF-16
-- surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
-- Uses nothing but string functions; sluice/init.lua and the rules share it.

local byte = string.byte

local M = {}

--- valid(s) -> true | false, offset
-- True when the string s is valid UTF-8. Otherwise false and the 1-based
-- byte offset where the first bad sequence starts. O(#s), a byte loop that
-- LuaJIT compiles.
function M.valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local k = i
      local more                              -- continuation bytes
      local lo, hi = 0x80, 0xBF               -- range of the second byte
      if c >= 0xC2 and c <= 0xDF then more = 1
      elseif c >= 0xE0 and c <= 0xEF then more = 2
      elseif c >= 0xF0 and c <= 0xF4 then more = 3
      else return false, k end                -- stray continuation, C0/C1, F5..FF
      if c == 0xE0 then lo = 0xA0             -- overlong 3-byte form
      elseif c == 0xED then hi = 0x9F         -- surrogates
      elseif c == 0xF0 then lo = 0x90         -- overlong 4-byte form
      elseif c == 0xF4 then hi = 0x8F end     -- above U+10FFFF
      local c1 = byte(s, k + 1)
      if not c1 or c1 < lo or c1 > hi then return false, k end
      for m = 2, more do
        local cm = byte(s, k + m)
        if not cm or cm < 0x80 or cm > 0xBF then return false, k end
      end
      i = k + more + 1
    end
  end
  return true
end

--- encode(cp) -> string
-- The UTF-8 bytes of code point cp (0..0x10FFFF, surrogates excluded by the
-- caller).
function M.encode(cp)
  local char, floor = string.char, math.floor
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then
    return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
              0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

return M
