-- _trace: prepended (after _common) to every trace script. They all take the same KEYS and
-- leading ARGV:
-- KEYS[1] stream {p:<shard>}:t:<id>:s   KEYS[2] meta {p:<shard>}:t:<id>:m (hash; its field
--   "p<producer>" is the producer's retry-dedup state)   KEYS[3] interventions (list)
-- KEYS[4] idempotency keys (zset, key -> applied at ms)
-- KEYS[5] traces {p:<shard>}:traces (zset, id -> updated ms)   KEYS[6] expiry (zset, id -> ms)
-- A write-behind cache's (see _cache.lua) also: KEYS[7] outbox {p:<shard>}:outbox (stream)
-- KEYS[8] its counter (hash: epoch, n)   KEYS[9] the trace's warm lease (string)
-- ARGV[1] producer   ARGV[2] call number (retry dedup, see _common)   ARGV[3] trace id
-- ARGV[4] idempotency key ('' = none)   ARGV[5..] what the operation needs
-- The store's settings come as constants in the script text (fewer arguments to pack):
-- TTL_MS, COMPLETED_TTL_MS (0 = none) and KEY_WINDOW_MS, how long idempotency keys are kept.
local stream, meta, interventions, idem_keys = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local traces, expiry, box, counter, lease = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local producer, seq, id, idem = 'p' .. ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, completed_ttl = TTL_MS, COMPLETED_TTL_MS
local now = now_ms()
local SWEEP = 32 -- expired index entries removed per write: cleanup paid in small steps
local TRACE_FIELDS = {
  'circuit', 'version', 'completion', 'resumed', 'n', 'ni', 'hk', 'created', 'updated',
}
local change -- a write-behind cache's: the outbox number of this call's change (record)

-- A write-behind cache: whether it holds the trace whole. A trace that is not dirty (no
-- unflushed change: no field o) may have lost a key to a volatile-* maxmemory policy,
-- which evicts keys one by one: then it is dropped, and warmed again from the durable store.
local function cache_holds()
  if redis.call('EXISTS', meta) == 0 then return false end
  local m = redis.call('HMGET', meta, 'n', 'ni', 'o', 'hk')
  dirty = m[3] ~= false
  if dirty or (redis.call('XLEN', stream) == (tonumber(m[1]) or 0)
      and redis.call('LLEN', interventions) == (tonumber(m[2]) or 0)
      and (not m[4] or redis.call('EXISTS', idem_keys) == 1)) then -- hk: it had keys
    return true
  end
  redis.call('DEL', stream, meta, interventions, idem_keys)
  return false
end

-- The meta fields a script reads (HMGET meta ... producer), and a reply code if this call
-- was applied before (or is too old to tell), else nil. The state is the last field.
local function read_meta(...)
  if OUTBOX == 1 and not cache_holds() then return {}, MISS end
  local m = redis.call('HMGET', meta, ...)
  local code = dedup(m[#m], seq)
  if code ~= OK then return m, code end
  if idem ~= '' then
    redis.call('ZREMRANGEBYSCORE', idem_keys, '-inf', now - KEY_WINDOW_MS)
    if redis.call('ZSCORE', idem_keys, idem) then return m, DUPLICATE end
  end
  if OUTBOX == 1 then return m, backlogged(box) end
  return m, nil
end

-- A write-behind cache records the change (kind, then field-value pairs) in the outbox.
local function record(kind, ...)
  if OUTBOX == 1 then change = outbox_add(box, counter, 'k', kind, 't', id, ...) end
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
  elseif redis.call('ZREM', expiry, id) == 1 then -- a store with a TTL set one before:
    for i = 1, 4 do redis.call('PERSIST', KEYS[i]) end -- kept forever from now on
  end
end

-- Runs last: writes the meta fields given (with the producer's new dedup state), remembers
-- the idempotency key, then expires every key of the trace together (PEXPIRE on a missing
-- key is a no-op, so keys made later get it from their write).
local function applied(keep_ms, state, ...)
  redis.call('HSET', meta, producer, dedup_next(state, seq), 'updated', now, ...)
  if idem ~= '' then
    redis.call('ZADD', idem_keys, now, idem)
    if OUTBOX == 1 then redis.call('HSET', meta, 'hk', 1) end -- cache_holds checks the keys
  end
  if change then
    hold(meta, {stream, meta, interventions, idem_keys}, change, keep_ms)
  elseif keep_ms > 0 then
    for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], keep_ms) end
  end
end
