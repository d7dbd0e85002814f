-- append: append envelopes to one trace, atomically (append_many is a batch of them).
-- KEYS and ARGV[1..4]: see _trace.lua.
-- ARGV[5] circuit   ARGV[6] schematic_version   ARGV[7] call tag   ARGV[8..] envelopes
-- Returns {0, n} with n the trace's envelope count, {0, -1} for a retry already applied,
-- {1, circuit} when the trace is pinned to another circuit, {2, ''} when it is completed.
local m = redis.call('HMGET', KEYS[2], 'circuit', 'completion', 'n', 'tags')
local circuit, tags = ARGV[5], m[4]
if seen(tags, ARGV[7]) then return {0, -1} end
if m[1] and m[1] ~= circuit then return {1, m[1]} end
if m[2] then return {2, ''} end
local keep = index(ttl)
local n = tonumber(m[3]) or 0
for i = 8, #ARGV do
  n = n + 1
  -- Explicit ids 0-<ordinal>: append order is the entry id, so reads by position are cheap.
  redis.call('XADD', KEYS[1], '0-' .. n, 'e', ARGV[i])
end
redis.call('HSET', KEYS[2], 'circuit', circuit, 'version', ARGV[6], 'n', n,
  'updated', now, 'tags', remember(tags, ARGV[7]))
expire(keep)
return {0, n}
