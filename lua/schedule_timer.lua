-- schedule_timer: upsert one timer row; rescheduling the same timer replaces its fire time.
-- KEYS[1] timers {p:s}:timers   zset, member "<wf><timer id JSON>", score fire_at (µs)
-- ARGV[1] member   ARGV[2] fire_at (µs, exact: |µs| <= 2^53)
-- Returns 1 if the row is new, 0 if it was rescheduled.
return redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
