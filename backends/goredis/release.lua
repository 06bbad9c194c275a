-- release: owner-checked DEL; then the key goes to the first live waiter
-- (hand_over), or, when nobody is queued, the key's name is published on
-- its channel for every watcher.
-- KEYS[1] lock key; KEYS[2] wanted key; KEYS[3] queue; KEYS[4] entries;
-- KEYS[5] fence key (all in the same hash slot)
-- ARGV[1] owner; ARGV[2] release channel; ARGV[3] the hint window in ms when
-- the queue only hints (WithWaiterHints): the first live waiter is told,
-- not granted; "" (no hints) when ARGV[4] follows. ARGV[4] WithClockTokens:
-- the fencing counter's TTL in ms ("0": none), for hand_over; absent
-- otherwise.
-- Returns 0 when the lock was not owned by ARGV[1], 1 when released, 2 when
-- released and another owner wanted it (the wanted mark, or a waiter it was
-- handed to).
local v = redis.call('GET', KEYS[1])
-- The common case first, before the queue helpers are defined: nobody
-- wants the key or queues for it.
if v and (v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '\0')
    and redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
--#queue.lua
local hints = ARGV[3] ~= '' and ARGV[3]
if v and owned(v, ARGV[1]) then
  local wanted, mark = take_mark(KEYS[2])
  local head, entry = first_waiter(KEYS[3], KEYS[4])
  if head and not hints then
    -- hand_over overwrites the lease: a key deleted here could not be
    -- written again while its slot migrates (see queue.lua).
    hand_over(KEYS[1], KEYS[5], KEYS[3], KEYS[4], ARGV[2], head, entry, ARGV[4])
    return 2
  end
  redis.call('DEL', KEYS[1])
  if head then
    hint(KEYS[4], ARGV[2], head, entry, tonumber(hints))
    return 2
  end
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  wake_marked(mark)
  return 1 + wanted
end
return 0
