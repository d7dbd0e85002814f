-- complete: set (or overwrite) the completion state of a trace; completed_ttl applies.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] completion ("Success", "Fault", ...)
-- Returns {0, ''}, or {3, ''} when the trace does not exist.
if redis.call('HEXISTS', KEYS[2], 'circuit') == 0 then return {3, ''} end
local keep = index(completed_ttl > 0 and completed_ttl or ttl)
redis.call('HSET', KEYS[2], 'completion', ARGV[5], 'updated', now)
expire(keep)
return {0, ''}
