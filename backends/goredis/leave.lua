-- leave: take a waiter out of the key's queue, releasing the key if a
-- release had granted it to the waiter; if the key is free, hand it to the
-- next live waiter, or publish the key's name when nobody is queued.
-- KEYS[1] lock key; KEYS[2] queue; KEYS[3] entries; KEYS[4] fence key (same
-- hash slot)
-- ARGV[1] waiter id; ARGV[2] release channel; ARGV[3] the hint window in ms
-- when the queue only hints (WithWaiterHints): the next waiter is told,
-- not granted ("" or absent: none); ARGV[4] "1": only take the waiter out
-- (Dequeue); ARGV[5] WithClockTokens: the fencing counter's TTL in ms ("0":
-- none), for hand_over; absent otherwise.
--#queue.lua
local hints = ARGV[3] ~= '' and ARGV[3]
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[4] == '1' then
  return 1
end
local v = redis.call('GET', KEYS[1])
local granted = v and grant_token(v, ARGV[1])
if not v or granted then
  local head, entry = first_waiter(KEYS[2], KEYS[3])
  if head and not hints then
    -- hand_over overwrites a lease granted to the leaving waiter: a key
    -- deleted here could not be written again while its slot migrates
    -- (see queue.lua).
    hand_over(KEYS[1], KEYS[4], KEYS[2], KEYS[3], ARGV[2], head, entry, ARGV[5])
    return 1
  end
  if granted then
    redis.call('DEL', KEYS[1])
  end
  if head then
    hint(KEYS[3], ARGV[2], head, entry, tonumber(hints))
  else
    redis.call('PUBLISH', ARGV[2], KEYS[1])
  end
end
return 1
