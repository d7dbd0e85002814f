-- _trace: shared prelude, prepended to every trace script by scripts.py (Lua has no include).
-- Every trace script takes the same KEYS and leading ARGV:
-- KEYS[1] stream   {p:<shard>}:t:<id>:s      KEYS[2] meta    {p:<shard>}:t:<id>:m
-- KEYS[3] interventions {p:<shard>}:t:<id>:i KEYS[4] traces  {p:<shard>}:traces (zset)
-- KEYS[5] expiry   {p:<shard>}:expiry (zset of expiry deadlines)
-- ARGV[1] trace id (index member)   ARGV[2] now_ms   ARGV[3] ttl_ms (0 = none)
-- ARGV[4] completed_ttl_ms (0 = none)   ARGV[5..] what the operation needs
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local completed_ttl = tonumber(ARGV[4])
local SWEEP = 32      -- expired index entries removed per write: cleanup paid in small steps
local TAGS = 16 * 8   -- the last 16 call tags (8 bytes each) of the trace, for retry dedup

-- Index the trace before anything else is written: a corrupt index key fails the call
-- while nothing has changed yet. Returns the expiry (ms) the caller applies with expire().
-- Sweeps first, so a stale deadline of this very trace cannot unlist it after the write.
-- Only stores with retention sweep: the expiry index is empty without it.
local function index(keep_ms)
  if ttl > 0 or completed_ttl > 0 then
    local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, SWEEP)
    for _, id in ipairs(dead) do
      redis.call('ZREM', KEYS[4], id)
      redis.call('ZREM', KEYS[5], id)
    end
  end
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  if keep_ms > 0 then
    redis.call('ZADD', KEYS[5], now + keep_ms, ARGV[1])
  end
  return keep_ms
end

-- Runs last, after the keys exist: PEXPIRE on a missing key would be a silent no-op.
local function expire(keep_ms)
  if keep_ms > 0 then
    for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep_ms) end
  end
end

-- A retried call carries the tag of its first attempt; a seen tag means already applied.
local function seen(tags, tag)
  return string.find(tags or '', tag, 1, true) ~= nil
end

local function remember(tags, tag)
  return string.sub(tag .. (tags or ''), 1, TAGS)
end
