-- record_visibility: upsert a workflow's visibility row (one row per workflow id).
-- KEYS[1] rows {p:vis}:rows   ARGV[1] workflow id   ARGV[2] VisibilityRecord JSON
-- Returns 1 if the row is new, 0 if it was replaced.
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
