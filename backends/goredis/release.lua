-- release: owner-checked DEL, then PUBLISH on the key's channel: the id of
-- the first live waiter, or the key's name when nobody is queued.
-- KEYS[1] lock key; KEYS[2] wanted key; KEYS[3] queue; KEYS[4] deadlines
-- (all in the same hash slot)
-- ARGV[1] owner; ARGV[2] release channel.
-- Returns 0 when the lock was not owned by ARGV[1], 1 when released, 2 when
-- released and another owner had found it held (the wanted mark).
local v = redis.call('GET', KEYS[1])
if v and (v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '\0') then
  redis.call('DEL', KEYS[1])
  local wanted = redis.call('DEL', KEYS[2])
  local head = first_waiter(KEYS[3], KEYS[4])
  redis.call('PUBLISH', ARGV[2], head or KEYS[1])
  if head then
    wanted = 1
  end
  return 1 + wanted
end
return 0
