-- requeue: give back a lease that a quorum backend's attempt took on this
-- server but not on a quorum, and put the attempt's waiter back in the place
-- it left as it took the key (WithWaiterHints: the queue is in the order of
-- waiter ids), so that the waiter keeps its turn. If that frees the key, the queue's first live
-- waiter is told (hint), unless it is the caller's waiter, which retries on
-- its own; with nobody queued the key's channel is, and the waiter that
-- marked the key wanted (see queue.lua's wake_marked).
-- KEYS[1] lock key; KEYS[2] wanted key; KEYS[3] queue; KEYS[4] entries
-- (same hash slot)
-- ARGV[1] owner; ARGV[2] release channel; ARGV[3] hint window (ms);
-- ARGV[4] waiter ("" for none); ARGV[5] waiter keep (ms); ARGV[6] TTL (ms);
-- ARGV[7] the channel the waiter's process hears hints on.
-- Returns 1 when the lease was released, 0 when it was not owned.
--#queue.lua
local v = redis.call('GET', KEYS[1])
if not (v and owned(v, ARGV[1])) then
  -- The attempt did not take the key here, so the waiter kept its place;
  -- or its lease lapsed, and the waiter's next refusal puts it back in the
  -- same place (the queue is in id order).
  return 0
end
local _, mark = take_mark(KEYS[2])
redis.call('DEL', KEYS[1])
if ARGV[4] ~= '' then
  enqueue(KEYS[3], KEYS[4], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], '', true)
end
local head, entry = first_waiter(KEYS[3], KEYS[4])
if not head then
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  wake_marked(mark, ARGV[4])
elseif head ~= ARGV[4] then
  hint(KEYS[4], ARGV[2], head, entry, tonumber(ARGV[3]))
end
return 1
