-- uses: _common _cache _trace
-- delete: remove a trace and its index entries. The meta hash keeps only the producers'
-- dedup state, for DEDUP_KEEP, so a retried delete cannot remove a trace re-created meanwhile.
-- KEYS and ARGV[1..4]: see _trace.lua.
-- Returns {OK, 1} when the trace existed, {OK, 0} when not, {DUPLICATE | STALE, ''}.
local DEDUP_KEEP = 600000
local m, replay = read_meta('circuit', producer)
if replay then return {replay, ''} end
redis.call('UNLINK', stream, interventions, idem_keys)
redis.call('HDEL', meta, unpack(TRACE_FIELDS))
redis.call('ZREM', traces, id)
redis.call('ZREM', expiry, id)
redis.call('HSET', meta, producer, dedup_next(m[2], seq))
if m[1] then record('d') end
if change then -- kept until the delete is flushed: an earlier copy must not be warmed back
  hold(meta, {meta}, change, DEDUP_KEEP)
else
  redis.call('PEXPIRE', meta, DEDUP_KEEP)
end
return {OK, m[1] and 1 or 0}
