-- extend: owner-checked PEXPIRE.
-- KEYS[1] lock key; ARGV[1] owner; ARGV[2] TTL in milliseconds.
-- Returns 1 when extended, 0 when the lock is not owned by ARGV[1].
local v = redis.call('GET', KEYS[1])
if v and (v == ARGV[1] or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '\0') then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
