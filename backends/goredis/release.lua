-- release: owner-checked DEL, then PUBLISH on the key's channel to wake waiters.
-- KEYS[1] lock key; KEYS[2] wanted key (same hash slot)
-- ARGV[1] owner; ARGV[2] release channel.
-- Returns 0 when the lock was not owned by ARGV[1], 1 when released, 2 when
-- released and another owner had found it held (the wanted mark).
local v = redis.call('GET', KEYS[1])
if v and (v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '\0') then
  redis.call('DEL', KEYS[1])
  local wanted = redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1 + wanted
end
return 0
