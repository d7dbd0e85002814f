-- uses: _common _trace
-- save_intervention: append an intervention; allowed on completed traces.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] intervention (msgpack)
-- Returns {OK, count}, {DUPLICATE | STALE, ''}, or {NOT_FOUND, ''}.
local replay = replayed()
if replay then return {replay, ''} end
local m = redis.call('HMGET', meta, 'circuit', 'completion')
if not m[1] then return {NOT_FOUND, ''} end
local keep = (m[2] and completed_ttl > 0) and completed_ttl or ttl
index(keep)
local count = redis.call('RPUSH', interventions, ARGV[5])
redis.call('HSET', meta, 'updated', now)
applied(keep)
return {OK, count}
