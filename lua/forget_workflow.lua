-- forget_workflow: drop an expired workflow from its shard's indexes, if it is still gone.
-- KEYS[1] meta {p:s}:w:<wf>:m   KEYS[2] workflows {p:s}:workflows   KEYS[3] active {p:s}:active
-- ARGV[1] workflow id
-- Returns 1 if the entries were removed, 0 if the workflow exists (re-created meanwhile).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
