-- uses: _common
-- append_events: append events to one workflow's history, fenced by its head, atomically.
-- KEYS[1] history   {p:s}:w:<wf>:h   stream, entry id 0-<seq>, field c = compact event
-- KEYS[2] meta      {p:s}:w:<wf>:m   hash: head, status, type, started, ended, p<producer>
-- KEYS[3] runs      {p:s}:w:<wf>:r   list: seqs of lifecycle events
-- KEYS[4] children  {p:s}:w:<wf>:c   set: child workflow ids
-- KEYS[5] workflows {p:s}:workflows  zset     KEYS[6] active {p:s}:active zset
-- KEYS[7] parents   {p:s}:parents    zset: "<child id><parent id>" links
-- ARGV[1] producer   ARGV[2] call number (retry dedup, see _common)   ARGV[3] workflow id
-- ARGV[4] expected head (decimal text)
-- ARGV[5] contiguity error ('' = contiguous; checked in Python, where seqs are exact u64s)
-- ARGV[6..] per event: seq, kind, recorded_at (µs), extra, stored event (see encoding.py)
-- Returns {OK, head}, {DUPLICATE | STALE, ''}, {CONFLICT, head}, {NOT_CONTIGUOUS, message}.
local history, meta, runs, children = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local workflows, active, parents = KEYS[5], KEYS[6], KEYS[7]
local producer, call, wf, expected = 'p' .. ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, contiguity = COMPLETED_TTL_MS, ARGV[5] -- the store's setting: a constant
local m = redis.call('HMGET', meta, 'head', producer)
local replay, state = dedup(m[2], call), m[2]
if replay ~= OK then return {replay, ''} end
local head = m[1] or '0'
if head ~= expected then return {CONFLICT, head} end
if contiguity ~= '' then return {NOT_CONTIGUOUS, contiguity} end
if #ARGV == 5 then return {OK, head} end

-- The first write is an XADD: if it fails (foreign entries, OOM), nothing has been written.
local changed = head == '0'
for i = 6, #ARGV, 5 do
  local seq, kind, at, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('XADD', history, '0-' .. seq, 'c', ARGV[i + 4])
  if kind == 'Child' then
    redis.call('SADD', children, extra)
    redis.call('ZADD', parents, 0, extra .. wf)
  elseif kind ~= '' then
    changed = true
    redis.call('RPUSH', runs, seq)
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
redis.call('HSET', meta, 'head', head, producer, dedup_next(state, call))
if not changed and ttl == 0 then return {OK, head} end -- the common case: no status change
local running = (redis.call('HGET', meta, 'status') or 'Running') == 'Running'
if not running and ttl > 0 then -- a terminal workflow expires, all its keys together
  for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ttl) end
end
if not changed then return {OK, head} end

redis.call('ZADD', workflows, 0, wf)
if running then -- a reopened workflow no longer expires
  for k = 1, 4 do redis.call('PERSIST', KEYS[k]) end
end
if running and redis.call('HEXISTS', meta, 'started') == 1 then
  redis.call('ZADD', active, 0, wf)
else
  redis.call('ZREM', active, wf)
end
return {OK, head}
