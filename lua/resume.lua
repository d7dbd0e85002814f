-- resume: record the step a trace resumes from.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] step (decimal u64, stored verbatim)
-- Returns {0, ''}, {3, ''} when the trace does not exist, {2, ''} when it is completed.
local m = redis.call('HMGET', KEYS[2], 'circuit', 'completion')
if not m[1] then return {3, ''} end
if m[2] then return {2, ''} end
local keep = index(ttl)
redis.call('HSET', KEYS[2], 'resumed', ARGV[5], 'updated', now)
expire(keep)
return {0, ''}
