-- relock: release a lease and take its key again for a new owner, in one
-- step, unless another owner wanted the key while the old lease held it.
-- KEYS[1] lock key; KEYS[2] fence key; KEYS[3] wanted key (same hash slot)
-- ARGV[1] new value (owner, or owner .. "\0" .. metadata); ARGV[2] TTL in ms
-- ARGV[3] old owner; ARGV[4] release channel
-- Returns {1, token} when acquired, {2, 0} when released for the owners
-- waiting (not acquired), {0, pttl} when held by another owner.
local v = redis.call('GET', KEYS[1])
if v and (v == ARGV[3] or string.sub(v, 1, #ARGV[3] + 1) == ARGV[3] .. '\0') then
  if redis.call('DEL', KEYS[3]) == 1 then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', ARGV[4], KEYS[1])
    return {2, 0}
  end
  v = false -- released; nobody waits: take it again below
end
if not v then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, token}
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[3], '1', 'PX', pttl)
end
return {0, pttl}
