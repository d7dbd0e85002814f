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
-- sends them in that order. Per producer, a field of the record's meta hash holds
-- "<high>:<flags>": the highest number applied and, for the WINDOW numbers up to it,
-- whether each was applied (flags[1] is high itself). A copy of an applied call (redis-py
-- re-sends a whole pipeline after a lost connection) finds its flag set: DUPLICATE. A store
-- sends at most WINDOW calls per pipeline, so only a copy its caller gave up on can fall
-- below the window: STALE. The scripts read and write the field with their own HMGET and
-- HSET of the meta hash, so dedup costs no extra command.
local WINDOW = 128

-- OK, DUPLICATE or STALE for call `seq` given the producer's `state` (nil: none yet).
local function dedup(state, seq)
  if not state then return OK end
  local sep = string.find(state, ':', 1, true)
  local back = tonumber(string.sub(state, 1, sep - 1)) - tonumber(seq)
  if back < 0 then return OK end
  if back >= WINDOW then return STALE end
  if string.byte(state, sep + 1 + back) == 49 then return DUPLICATE end
  return OK
end

-- The producer's state once call `seq` is applied.
local function dedup_next(state, seq)
  if not state then return seq .. ':1' end
  local sep = string.find(state, ':', 1, true)
  local high, flags = string.sub(state, 1, sep - 1), string.sub(state, sep + 1)
  local back = tonumber(high) - tonumber(seq)
  if back < 0 then
    return seq .. ':' .. string.sub('1' .. string.rep('0', math.min(-back - 1, WINDOW)) .. flags, 1, WINDOW)
  end
  -- a call below the highest one: pad the flags out to it, then set its own
  if #flags < back then flags = flags .. string.rep('0', back - #flags) end
  return high .. ':' .. string.sub(flags, 1, back) .. '1' .. string.sub(flags, back + 2)
end
