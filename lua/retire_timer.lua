-- retire_timer: delete a timer row only if it still fires at the given time.
-- KEYS[1] timers {p:s}:timers   ARGV[1] member   ARGV[2] fire_at (µs)
-- Returns 1 if retired, 0 if absent or re-armed meanwhile (the newer arming wins).
local timers, member, fire_at = KEYS[1], ARGV[1], tonumber(ARGV[2])
local score = redis.call('ZSCORE', timers, member)
if not score or tonumber(score) ~= fire_at then return 0 end
return redis.call('ZREM', timers, member)
