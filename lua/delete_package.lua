-- delete_package: delete one package; absent is fine; routes are left alone.
-- KEYS[1] archives {p:pkg}:archives   KEYS[2] deployed {p:pkg}:deployed
-- ARGV[1] package field '["<type>","<hash>"]'
-- Returns 1 if it existed, else 0.
local archives, deployed, field = KEYS[1], KEYS[2], ARGV[1]
redis.call('HDEL', deployed, field)
return redis.call('HDEL', archives, field)
