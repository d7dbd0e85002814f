-- _common: prepended to every write script by scripts.py (Lua has no include).
-- Reply codes (scripts.Reply mirrors them), the server's clock, and retry dedup.
local OK, MISMATCH, COMPLETED, NOT_FOUND, CONFLICT, NOT_CONTIGUOUS, DUPLICATE, STALE =
  0, 1, 2, 3, 4, 5, 6, 7

-- The server's clock in ms: index deadlines must agree with PEXPIRE, whatever clients think.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Retry dedup. A store numbers its write calls 1, 2, 3... under a random producer id and
-- sends them in that order. Per producer, hash `key` field `field` holds "<high>:<flags>":
-- the highest number applied and, for the WINDOW numbers up to it, whether each was applied
-- (flags[1] is high itself). A copy of an applied call (redis-py re-sends a whole pipeline
-- after a lost connection) finds its flag set: DUPLICATE. A store sends at most WINDOW calls
-- per pipeline, so only a copy its caller gave up on can fall below the window: STALE.
local WINDOW = 128

local function dedup_check(key, field, seq)
  local state = redis.call('HGET', key, field)
  if not state then return OK, nil end
  local sep = string.find(state, ':', 1, true)
  local back = tonumber(string.sub(state, 1, sep - 1)) - tonumber(seq)
  if back < 0 then return OK, state end
  if back >= WINDOW then return STALE, state end
  if string.byte(state, sep + 1 + back) == 49 then return DUPLICATE, state end
  return OK, state
end

local function dedup_mark(key, field, seq, state)
  local high, flags = seq, '1'
  if state then
    local sep = string.find(state, ':', 1, true)
    local back = tonumber(string.sub(state, 1, sep - 1)) - tonumber(seq)
    flags = string.sub(state, sep + 1)
    if back < 0 then
      flags = string.sub('1' .. string.rep('0', math.min(-back - 1, WINDOW)) .. flags, 1, WINDOW)
    else -- a call below the highest one: pad the flags out to it, then set its own
      high = string.sub(state, 1, sep - 1)
      if #flags < back then flags = flags .. string.rep('0', back - #flags) end
      flags = string.sub(flags, 1, back) .. '1' .. string.sub(flags, back + 2)
    end
  end
  redis.call('HSET', key, field, high .. ':' .. flags)
end
