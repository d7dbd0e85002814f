-- uses: _common _trace
-- resume: record the step a trace resumes from.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] step (decimal u64, stored verbatim)
-- Returns {OK, ''}, {DUPLICATE | STALE, ''}, {NOT_FOUND, ''}, {COMPLETED, ''}.
local replay = replayed()
if replay then return {replay, ''} end
local m = redis.call('HMGET', meta, 'circuit', 'completion')
if not m[1] then return {NOT_FOUND, ''} end
if m[2] then return {COMPLETED, ''} end
index(ttl)
redis.call('HSET', meta, 'resumed', ARGV[5], 'updated', now)
applied(ttl)
return {OK, ''}
