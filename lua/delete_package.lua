-- delete_package: delete one package; absent is fine; routes are left alone.
-- KEYS[1] archives {p:pkg}:archives   KEYS[2] deployed {p:pkg}:deployed
-- ARGV[1] package field '["<type>","<hash>"]'
-- Returns 1 if it existed, else 0.
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
