-- delete: remove a trace and its index entries.
-- KEYS and ARGV[1..4]: see _trace.lua (the clock and TTLs are unused).
-- Returns {0, 1} when the trace existed, {0, 0} when it did not.
local existed = redis.call('EXISTS', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return {0, existed}
