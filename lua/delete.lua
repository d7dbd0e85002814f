-- uses: _common _trace
-- delete: remove a trace and its index entries. The dedup hash stays for DEDUP_KEEP, so a
-- retried delete cannot remove a trace re-created meanwhile.
-- KEYS and ARGV[1..4]: see _trace.lua.
-- Returns {OK, 1} when the trace existed, {OK, 0} when not, {DUPLICATE | STALE, ''}.
local DEDUP_KEEP = 600000
local replay = replayed()
if replay then return {replay, ''} end
local existed = redis.call('EXISTS', meta)
redis.call('UNLINK', stream, meta, interventions, idem_keys)
redis.call('ZREM', traces, id)
redis.call('ZREM', expiry, id)
idem = '' -- the keys' set is gone with the trace
applied(0)
redis.call('PEXPIRE', dedup, DEDUP_KEEP)
return {OK, existed}
