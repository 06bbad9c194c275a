-- leave: take a waiter out of the key's queue; if the key is free, pass the
-- turn on (publish the next live waiter, or the key's name).
-- KEYS[1] lock key; KEYS[2] queue; KEYS[3] deadlines (same hash slot)
-- ARGV[1] waiter id; ARGV[2] release channel.
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local head = first_waiter(KEYS[2], KEYS[3])
  redis.call('PUBLISH', ARGV[2], head or KEYS[1])
end
return 1
