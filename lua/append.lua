-- uses: _common _cache _trace
-- append: append envelopes to one trace, atomically (append_many is a batch of them).
-- KEYS and ARGV[1..4]: see _trace.lua.
-- ARGV[5] circuit   ARGV[6] schematic_version   ARGV[7..] envelopes (msgpack)
-- Returns {OK, n} (n = the trace's envelope count), {DUPLICATE | STALE, ''},
-- {MISMATCH, circuit} when pinned to another circuit, {COMPLETED, ''} when completed.
local circuit, version = ARGV[5], ARGV[6]
local m, replay = read_meta('circuit', 'completion', 'n', producer)
if replay then return {replay, ''} end
if m[1] and m[1] ~= circuit then return {MISMATCH, m[1]} end
if m[2] then return {COMPLETED, ''} end
index(ttl)
local n = tonumber(m[3]) or 0
for i = 7, #ARGV do
  n = n + 1
  -- Explicit ids 0-<ordinal>: append order is the entry id, so reads by position are cheap.
  redis.call('XADD', stream, '0-' .. n, 'e', ARGV[i])
end
if OUTBOX == 1 then
  local head = {'k', 'a', 't', id, 'c', circuit, 'v', version, 'i', idem}
  change = outbox_batch(box, counter, head, n - #ARGV + 7, 7, 1, 0)
end
if not m[1] then -- a new trace; dedup state a delete left to expire now lives with it
  redis.call('HSET', meta, 'created', now)
  redis.call('HDEL', meta, 'absent') -- a warm's marker: it exists now
  if ttl == 0 then redis.call('PERSIST', meta) end
end
applied(ttl, m[4], 'circuit', circuit, 'version', version, 'n', n)
return {OK, n}
