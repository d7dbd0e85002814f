-- append_events: append events to one workflow's history, fenced by its head, atomically.
-- KEYS[1] history   {p:s}:w:<wf>:h   stream, entry id 0-<seq>, field e = event JSON
-- KEYS[2] meta      {p:s}:w:<wf>:m   hash: head, status, type, started, ended, tag
-- KEYS[3] runs      {p:s}:w:<wf>:r   list: seqs of lifecycle events
-- KEYS[4] children  {p:s}:w:<wf>:c   set: child workflow ids
-- KEYS[5] workflows {p:s}:workflows  zset     KEYS[6] active {p:s}:active zset
-- KEYS[7] parents   {p:s}:parents    set: "<child id><parent id>" links
-- ARGV[1] workflow id   ARGV[2] expected head (decimal text)   ARGV[3] completed_ttl_ms (0 = none)
-- ARGV[4] call tag (retry dedup)   ARGV[5] contiguity error ('' = contiguous; checked in
--   Python, where seqs are exact u64s: Lua numbers are doubles)
-- ARGV[6..] per event: seq, kind, recorded_at (µs), extra, event JSON (see codec.projection_fields)
-- Returns {0, head} appended (or a no-op), {1, head} sequence conflict, {2, message} not contiguous.
local meta = KEYS[2]
local head = redis.call('HGET', meta, 'head') or '0'
if head ~= ARGV[2] then
  if redis.call('HGET', meta, 'tag') == ARGV[4] then
    return {0, head} -- this very call landed before its reply was lost: do not apply it twice
  end
  return {1, head}
end
if ARGV[5] ~= '' then return {2, ARGV[5]} end
if #ARGV == 5 then return {0, head} end

-- The first write is an XADD: if it fails (foreign entries, OOM), nothing has been written.
local changed = head == '0'
for i = 6, #ARGV, 5 do
  local seq, kind, at, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('XADD', KEYS[1], '0-' .. seq, 'e', ARGV[i + 4])
  if kind == 'Child' then
    redis.call('SADD', KEYS[4], extra)
    redis.call('SADD', KEYS[7], extra .. ARGV[1])
  elseif kind ~= '' then
    changed = true
    redis.call('RPUSH', KEYS[3], seq)
    if kind == 'Started' then
      redis.call('HSET', meta, 'status', 'Running', 'type', extra, 'started', at)
      redis.call('HDEL', meta, 'ended')
    elseif kind == 'Reopened' then
      redis.call('HSET', meta, 'status', 'Running')
      redis.call('HDEL', meta, 'ended')
    else
      redis.call('HSET', meta, 'status', kind, 'ended', at)
    end
  end
  head = seq
end
redis.call('HSET', meta, 'head', head, 'tag', ARGV[4])
local ttl = tonumber(ARGV[3])
if not changed and ttl == 0 then return {0, head} end -- the common case: no status change
local running = (redis.call('HGET', meta, 'status') or 'Running') == 'Running'
if not running and ttl > 0 then -- a terminal workflow expires, all its keys together
  for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ttl) end
end
if not changed then return {0, head} end

redis.call('ZADD', KEYS[5], 0, ARGV[1])
if running then -- a reopened workflow no longer expires
  for k = 1, 4 do redis.call('PERSIST', KEYS[k]) end
end
if running and redis.call('HEXISTS', meta, 'started') == 1 then
  redis.call('ZADD', KEYS[6], 0, ARGV[1])
else
  redis.call('ZREM', KEYS[6], ARGV[1])
end
return {0, head}
