-- retire_timer: delete a timer row only if it still fires at the given time.
-- KEYS[1] timers {p:s}:timers   ARGV[1] member   ARGV[2] fire_at (µs)
-- Returns 1 if retired, 0 if absent or re-armed meanwhile (the newer arming wins).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
