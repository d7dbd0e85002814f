-- _cache: prepended (after _common) to the scripts a tiered store's cache runs.
-- A store is a write-behind cache when its constant OUTBOX is 1 (MAX_BACKLOG set with it):
-- * a write to a record the cache does not hold is refused with MISS, before anything is
--   read or written: the tiered store warms the record from the durable store (under a
--   lease, lua/warm.lua) and sends the write again;
-- * every change is also recorded in its shard's outbox stream, by this same script, so the
--   cache and the outbox cannot disagree. Entry ids are <epoch>-<n>: n counts the shard's
--   changes 1, 2, 3..., so the durable store tells a batch that follows on from one that
--   does not; the epoch (ms) starts anew if the counter is lost (FLUSHDB);
-- * a record with changes not yet flushed keeps no expiry: the flusher arms it
--   (lua/settle.lua, from meta fields o = its last change, x = the expiry to arm, ms).
local MISS, BACKPRESSURE, LEASE_LOST = 8, 9, 10
local ABSENT_MS = 60000 -- how long a marker "the durable store has no such record" lives

-- BACKPRESSURE when the outbox holds MAX_BACKLOG unflushed changes, else nil.
local function backlogged(box)
  if redis.call('XLEN', box) >= MAX_BACKLOG then return BACKPRESSURE end
  return nil
end

-- Record one change (field-value pairs) in outbox `box`; returns its n.
local function outbox_add(box, counter, ...)
  local n = redis.call('HINCRBY', counter, 'n', 1)
  local epoch = redis.call('HGET', counter, 'epoch')
  if not epoch then
    epoch = tostring(now_ms())
    redis.call('HSET', counter, 'epoch', epoch)
  end
  redis.call('XADD', box, epoch .. '-' .. n, 'w', now_ms(), ...)
  return n
end

-- Record a batch's items, ARGV[i + offset] for i = from, from + step, ... #ARGV, as changes
-- of up to 1,000 items each (unpack's limit), after the fields `head`; the batch's item j
-- (from 0) is the record's item `first + j`. Returns the last change's n.
local function outbox_batch(box, counter, head, first, from, step, offset)
  local n
  for chunk = from, #ARGV, 1000 * step do
    local fields = {unpack(head)}
    fields[#fields + 1], fields[#fields + 2] = 'o', first + (chunk - from) / step
    for i = chunk, math.min(chunk + 1000 * step - 1, #ARGV), step do
      fields[#fields + 1], fields[#fields + 2] = 'e', ARGV[i + offset]
    end
    n = outbox_add(box, counter, unpack(fields))
  end
  return n
end

local dirty = false -- the record had unflushed changes already (set by the scripts' checks)

-- Keys holding a record with a change to flush: no expiry until the flusher arms `keep_ms`
-- (a record that was dirty already has none to remove).
local function hold(meta, keys, change, keep_ms)
  if not dirty then
    for _, key in ipairs(keys) do redis.call('PERSIST', key) end
  end
  redis.call('HSET', meta, 'o', change, 'x', keep_ms)
end

-- Before a warm writes the durable store's copy: nil to go on, else the reply (nothing
-- written). A cache that holds the record whole (`holds`) wins: a warm or a write got there
-- first. A lease that is not `token` any more means a write invalidated the record since
-- the durable store was read.
local function warm_refusal(holds, lease, token)
  local mine = redis.call('GET', lease) == token
  if mine then redis.call('DEL', lease) end -- refused or not, the next miss may take it
  if holds or not mine then return {LEASE_LOST, ''} end
  return nil
end
