-- put_package: upsert a package and point its workflow type's route at it, atomically.
-- KEYS[1] archives {p:pkg}:archives   KEYS[2] deployed {p:pkg}:deployed   KEYS[3] routes {p:pkg}:routes
-- ARGV[1] package field '["<type>","<hash>"]'   ARGV[2] archive   ARGV[3] deployed_at (µs)
-- ARGV[4] workflow type   ARGV[5] content hash
-- Returns 1.
local archives, deployed, routes = KEYS[1], KEYS[2], KEYS[3]
local field, archive, at, workflow_type, content_hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('HSET', archives, field, archive)
redis.call('HSET', deployed, field, at)
redis.call('HSET', routes, workflow_type, content_hash)
return 1
