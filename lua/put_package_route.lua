-- put_package_route: point a workflow type at a content hash; archives are untouched.
-- KEYS[1] routes {p:pkg}:routes   ARGV[1] workflow type   ARGV[2] content hash
-- Returns 1 if the route is new, 0 if it was re-pointed.
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
