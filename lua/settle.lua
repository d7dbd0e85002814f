-- uses: _common
-- settle: once the durable store has committed a batch of an outbox's changes, acknowledge
-- and delete their entries (acknowledging is not deleting), and arm the expiry of each
-- record whose last change the batch held (see _cache.lua: meta fields o and x).
-- KEYS[1] outbox stream   KEYS[2..] four keys per record, its meta hash second
--   (a trace: stream, meta, interventions, idempotency keys; a workflow: history, meta,
--   runs, children)
-- ARGV[1] consumer group   ARGV[2] entry count m   ARGV[3..2+m] entry ids
-- ARGV[3+m..] per record, the n of its last change in the batch
-- Returns the number of entries deleted.
local box, group, m = KEYS[1], ARGV[1], tonumber(ARGV[2])
local deleted = 0
for i = 3, 2 + m, 1000 do -- unpack's limit
  local last = math.min(i + 999, 2 + m)
  redis.call('XACK', box, group, unpack(ARGV, i, last))
  deleted = deleted + redis.call('XDEL', box, unpack(ARGV, i, last))
end
for r = 0, (#KEYS - 1) / 4 - 1 do
  local meta = KEYS[3 + 4 * r]
  if redis.call('HGET', meta, 'o') == ARGV[3 + m + r] then
    local keep = tonumber(redis.call('HGET', meta, 'x')) or 0
    redis.call('HDEL', meta, 'o', 'x')
    if keep > 0 then
      for k = 2 + 4 * r, 5 + 4 * r do redis.call('PEXPIRE', KEYS[k], keep) end
    end
  end
end
return deleted
