-- uses: _common _cache
-- append_events: append events to one workflow's history, fenced by its head, atomically.
-- KEYS[1] history   {p:s}:w:<wf>:h   stream, entry id 0-<seq>, field c = compact event
-- KEYS[2] meta      {p:s}:w:<wf>:m   hash: head, status, type, started, ended, p<producer>
-- KEYS[3] runs      {p:s}:w:<wf>:r   list: seqs of lifecycle events
-- KEYS[4] children  {p:s}:w:<wf>:c   set: child workflow ids
-- KEYS[5] workflows {p:s}:workflows  zset     KEYS[6] active {p:s}:active zset
-- KEYS[7] parents   {p:s}:parents    zset: "<child id><parent id>" links
-- A tiered store's cache's (see _cache.lua) also: KEYS[8] outbox   KEYS[9] its counter
-- KEYS[10] the workflow's warm lease
-- ARGV[1] producer   ARGV[2] call number (retry dedup, see _common)   ARGV[3] workflow id
-- ARGV[4] expected head (decimal text)
-- ARGV[5] contiguity error ('' = contiguous; checked in Python, where seqs are exact u64s)
-- ARGV[6] '' for a write, or a warm's lease token (the events are the durable store's)
-- ARGV[7..] per event: seq, kind, recorded_at (µs), extra, stored event (see encoding.py)
-- Returns {OK, head}, {DUPLICATE | STALE, ''}, {CONFLICT, head}, {NOT_CONTIGUOUS, message},
-- and a cache's {MISS | BACKPRESSURE | LEASE_LOST, ''}.
local history, meta, runs, children = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local workflows, active, parents = KEYS[5], KEYS[6], KEYS[7]
local box, counter, lease = KEYS[8], KEYS[9], KEYS[10]
local producer, call, wf, expected = 'p' .. ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, contiguity, warm = COMPLETED_TTL_MS, ARGV[5], ARGV[6] -- the store's setting: a constant
local logged = OUTBOX == 1 and warm == '' -- a write-behind write: the change goes to the outbox

-- A cache: whether it holds the workflow whole; a part left by a volatile-* maxmemory
-- policy (it evicts keys one by one) of one with nothing to flush (no field o) is dropped.
local function holds()
  local c = redis.call('HMGET', meta, 'head', 'o', 'absent')
  dirty = c[2] ~= false
  if dirty or c[3] or (c[1] and redis.call('XLEN', history) == tonumber(c[1])) then
    return true
  end
  redis.call('DEL', history, meta, runs, children)
  return false
end

if warm ~= '' then
  local refused = warm_refusal(holds(), lease, warm)
  if refused then return refused end
  if #ARGV == 6 then -- the durable store has no such workflow either
    redis.call('HSET', meta, 'absent', 1)
    redis.call('PEXPIRE', meta, ABSENT_MS)
    return {OK, '0'}
  end
elseif logged and not holds() then
  return {MISS, ''}
end
local m = redis.call('HMGET', meta, 'head', producer)
local replay, state = dedup(m[2], call), m[2]
if replay ~= OK then return {replay, ''} end
local head = m[1] or '0'
if head ~= expected then return {CONFLICT, head} end
if contiguity ~= '' then return {NOT_CONTIGUOUS, contiguity} end
if #ARGV == 6 then return {OK, head} end
if logged and backlogged(box) then return {BACKPRESSURE, ''} end

-- The first write is an XADD: if it fails (foreign entries, OOM), nothing has been written.
local changed = head == '0'
for i = 7, #ARGV, 5 do
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
if expected == '0' then redis.call('HDEL', meta, 'absent') end -- a warm's marker: it exists now
if logged then
  local change = outbox_batch(box, counter, {'k', 'e', 't', wf}, tonumber(expected) + 1, 7, 5, 4)
  local running = (redis.call('HGET', meta, 'status') or 'Running') == 'Running'
  hold(meta, {history, meta, runs, children}, change, running and 0 or ttl)
  ttl = 0 -- the flusher arms the expiry
end
if not changed and ttl == 0 then return {OK, head} end -- the common case: no status change
local running = (redis.call('HGET', meta, 'status') or 'Running') == 'Running'
if not running and ttl > 0 then -- a terminal workflow expires, all its keys together
  for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ttl) end
end
if not changed then return {OK, head} end

redis.call('ZADD', workflows, 0, wf)
if running and not logged then -- a reopened workflow no longer expires
  for k = 1, 4 do redis.call('PERSIST', KEYS[k]) end
end
if running and redis.call('HEXISTS', meta, 'started') == 1 then
  redis.call('ZADD', active, 0, wf)
else
  redis.call('ZREM', active, wf)
end
return {OK, head}
