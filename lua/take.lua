-- take: the entries of an outbox a flusher applies next: its own pending ones (a batch it
-- could not apply yet) with those idle over ARGV[4] ms in another flusher's hands (it
-- crashed or stalled: XAUTOCLAIM), else new ones. A script, so that the call goes to the
-- outbox's cluster node (its key is KEYS[1]) and the consumer group is made on first use.
-- KEYS[1] outbox stream   ARGV[1] consumer group   ARGV[2] consumer   ARGV[3] count
-- ARGV[4] claim idle ms
-- Returns {fresh, entries}: entries as XRANGE gives them ({id, {field, value, ...}}, ...),
-- oldest first, and fresh = 1 if they are new ones (delivered for the first time).
local box, group, me, count, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', box) == 0 then return {0, {}} end
redis.pcall('XGROUP', 'CREATE', box, group, '0') -- BUSYGROUP once it exists

-- Entries deleted since they were delivered (another flusher settled them) come back
-- without fields: acknowledge them and leave them out.
local function live(entries)
  local found = {}
  for _, entry in ipairs(entries) do
    if entry[2] then
      found[#found + 1] = entry
    else
      redis.call('XACK', box, group, entry[1])
    end
  end
  return found
end

-- The entries of a one-stream XREADGROUP reply: {{box, entries}}, or nil when there are
-- none; fakeredis answers {box, entries}.
local function entries_of(reply)
  if not reply then return {} end
  if type(reply[1]) == 'table' then return reply[1][2] end
  return reply[2] or {}
end

-- Idle entries of other flushers become this one's, then all of its own come in id order:
-- a batch it holds may wait on changes before it that another flusher held.
redis.call('XAUTOCLAIM', box, group, me, idle, '0-0', 'COUNT', count)
local mine = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', box, '0')
local entries = live(entries_of(mine))
if #entries > 0 then return {0, entries} end
local new = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', box, '>')
return {1, entries_of(new)}
