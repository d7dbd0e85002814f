-- put_package: upsert a package and point its workflow type's route at it, atomically.
-- KEYS[1] archives {p:pkg}:archives   KEYS[2] deployed {p:pkg}:deployed   KEYS[3] routes {p:pkg}:routes
-- ARGV[1] package field '["<type>","<hash>"]'   ARGV[2] archive   ARGV[3] deployed_at (µs)
-- ARGV[4] workflow type   ARGV[5] content hash
-- Returns 1.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
return 1
