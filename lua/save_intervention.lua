-- save_intervention: append an intervention; allowed on completed traces.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] call tag   ARGV[6] intervention (msgpack)
-- Returns {0, count}, {0, -1} for a retry already applied, {3, ''} when there is no trace.
local m = redis.call('HMGET', KEYS[2], 'circuit', 'completion', 'tags')
if not m[1] then return {3, ''} end
if seen(m[3], ARGV[5]) then return {0, -1} end
local keep = index((m[2] and completed_ttl > 0) and completed_ttl or ttl)
local count = redis.call('RPUSH', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[2], 'updated', now, 'tags', remember(m[3], ARGV[5]))
expire(keep)
return {0, count}
