-- uses: _common _cache _trace
-- complete: set (or overwrite) the completion state of a trace; completed_ttl applies.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] completion ("Success", "Fault", ...)
-- Returns {OK, ''}, {DUPLICATE | STALE, ''}, or {NOT_FOUND, ''}.
local m, replay = read_meta('circuit', producer)
if replay then return {replay, ''} end
if not m[1] then return {NOT_FOUND, ''} end
local keep = completed_ttl > 0 and completed_ttl or ttl
index(keep)
record('c', 's', ARGV[5])
applied(keep, m[2], 'completion', ARGV[5])
return {OK, ''}
