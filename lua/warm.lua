-- uses: _common _cache _trace
-- warm: put the durable store's copy of a trace into the cache, if the cache holds none and
-- the lease taken before the durable store was read still stands (see _cache.lua).
-- KEYS and ARGV[1..4]: see _trace.lua (all nine KEYS).   ARGV[5] the lease's token
-- ARGV[6] circuit ('' = the durable store has no such trace)   ARGV[7] schematic_version
-- ARGV[8] completion ('' = none)   ARGV[9] resumed ('' = none)   ARGV[10] created ms
-- ARGV[11] updated ms   ARGV[12] envelope count k   ARGV[13] intervention count j
-- ARGV[14..13+k] envelopes, then the j interventions, in append order, then the recent
-- idempotency keys: key, applied ms, ...
-- Returns {OK, ''}, or {LEASE_LOST, ''} when it wrote nothing: the cache holds the trace
-- (warmed or written meanwhile), or a write invalidated it since the lease was taken.
local refused = warm_refusal(cache_holds(), lease, ARGV[5])
if refused then return refused end
redis.call('DEL', stream, interventions, idem_keys) -- what a partial eviction left
if ARGV[6] == '' then
  redis.call('HSET', meta, 'absent', 1)
  redis.call('PEXPIRE', meta, ABSENT_MS)
  return {OK, ''}
end
local k, j = tonumber(ARGV[12]), tonumber(ARGV[13])
for i = 1, k do redis.call('XADD', stream, '0-' .. i, 'e', ARGV[13 + i]) end
for i = 14 + k, 13 + k + j do redis.call('RPUSH', interventions, ARGV[i]) end
for i = 14 + k + j, #ARGV, 2 do redis.call('ZADD', idem_keys, ARGV[i + 1], ARGV[i]) end
if #ARGV > 13 + k + j then redis.call('HSET', meta, 'hk', 1) end
redis.call('HSET', meta, 'circuit', ARGV[6], 'version', ARGV[7], 'n', k, 'ni', j,
  'created', ARGV[10], 'updated', ARGV[11])
if ARGV[8] ~= '' then redis.call('HSET', meta, 'completion', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', meta, 'resumed', ARGV[9]) end
local keep = (ARGV[8] ~= '' and completed_ttl > 0) and completed_ttl or ttl
index(keep)
if keep > 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], keep) end
end
return {OK, ''}
