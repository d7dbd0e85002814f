-- forget: drop the index entries of an id whose record has gone (expired), if it is still
-- gone; listings of both stores call it for what they find dead.
-- KEYS[1] the record that proves the id live (its meta hash)   KEYS[2..] sorted-set indexes
-- ARGV[i] the member to remove from KEYS[i + 1]
-- Returns 1 if the entries were removed, 0 if the record exists (re-created meanwhile).
local record = KEYS[1]
if redis.call('EXISTS', record) == 1 then return 0 end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i - 1]) end
return 1
