-- uses: _common _cache _trace
-- resume: record the step a trace resumes from.
-- KEYS and ARGV[1..4]: see _trace.lua.   ARGV[5] step (decimal u64, stored verbatim)
-- Returns {OK, ''}, {DUPLICATE | STALE, ''}, {NOT_FOUND, ''}, {COMPLETED, ''}.
local m, replay = read_meta('circuit', 'completion', producer)
if replay then return {replay, ''} end
if not m[1] then return {NOT_FOUND, ''} end
if m[2] then return {COMPLETED, ''} end
index(ttl)
record('r', 's', ARGV[5])
applied(ttl, m[3], 'resumed', ARGV[5])
return {OK, ''}
