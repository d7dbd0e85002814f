-- uses: _common _cache _trace
-- save_intervention: append an intervention; allowed on completed traces.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] intervention (msgpack)
-- Returns {OK, count}, {DUPLICATE | STALE, ''}, or {NOT_FOUND, ''}.
local m, replay = read_meta('circuit', 'completion', producer)
if replay then return {replay, ''} end
if not m[1] then return {NOT_FOUND, ''} end
local keep = (m[2] and completed_ttl > 0) and completed_ttl or ttl
index(keep)
local count = redis.call('RPUSH', interventions, ARGV[5])
record('i', 'o', count, 'i', idem, 'e', ARGV[5])
applied(keep, m[3], 'ni', count)
return {OK, count}
