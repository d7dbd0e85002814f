-- _trace: prepended (after _common) to every trace script. They all take the same KEYS and
-- leading ARGV:
-- KEYS[1] stream {p:<shard>}:t:<id>:s   KEYS[2] meta {p:<shard>}:t:<id>:m (hash)
-- KEYS[3] interventions (list)          KEYS[4] dedup {...}:t:<id>:d (hash, per producer)
-- KEYS[5] idempotency keys (zset, key -> applied at ms)
-- KEYS[6] traces {p:<shard>}:traces (zset, id -> updated ms)   KEYS[7] expiry (zset, id -> ms)
-- ARGV[1] producer   ARGV[2] call number (retry dedup, see _common)   ARGV[3] trace id
-- ARGV[4] idempotency key ('' = none)   ARGV[5..] what the operation needs
-- The store's settings come as constants in the script text (fewer arguments to pack):
-- TTL_MS, COMPLETED_TTL_MS (0 = none) and KEY_WINDOW_MS, how long idempotency keys are kept.
local stream, meta, interventions, dedup, idem_keys = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local traces, expiry = KEYS[6], KEYS[7]
local producer, seq, id, idem = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, completed_ttl = TTL_MS, COMPLETED_TTL_MS
local now = now_ms()
local SWEEP = 32 -- expired index entries removed per write: cleanup paid in small steps
local dedup_state

-- A reply code if this call was applied before (or is too old to tell), else nil.
local function replayed()
  local code, state = dedup_check(dedup, producer, seq)
  if code ~= OK then return code end
  dedup_state = state
  if idem ~= '' then
    redis.call('ZREMRANGEBYSCORE', idem_keys, '-inf', now - KEY_WINDOW_MS)
    if redis.call('ZSCORE', idem_keys, idem) then return DUPLICATE end
  end
  return nil
end

-- Index the trace before anything else is written: a corrupt index key fails the call
-- while nothing has changed. Sweeps first, so a stale deadline of this very trace cannot
-- unlist it after the write; only stores with retention have deadlines to sweep.
local function index(keep_ms)
  if ttl > 0 or completed_ttl > 0 then
    for _, dead in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, SWEEP)) do
      redis.call('ZREM', traces, dead)
      redis.call('ZREM', expiry, dead)
    end
  end
  redis.call('ZADD', traces, now, id)
  if keep_ms > 0 then
    redis.call('ZADD', expiry, now + keep_ms, id)
  else -- kept forever now, whatever deadline a store with a TTL set before
    redis.call('ZREM', expiry, id)
  end
end

-- Runs last, after the writes: remembers the call, then expires every key of the trace
-- together (PEXPIRE on a missing key is a no-op, so keys made later get it from their write).
local function applied(keep_ms)
  dedup_mark(dedup, producer, seq, dedup_state)
  if idem ~= '' then redis.call('ZADD', idem_keys, now, idem) end
  if keep_ms > 0 then
    for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], keep_ms) end
  end
end
