-- acquire: take the lock if free, or report the holder's remaining TTL.
-- KEYS[1] lock key    "{<prefix><key>}"
-- KEYS[2] fence key   "{<prefix><key>}:fence"   (same hash slot)
-- KEYS[3] wanted key  "{<prefix><key>}:wanted"  (same hash slot)
-- ARGV[1] value: owner, or owner .. "\0" .. metadata
-- ARGV[2] TTL in milliseconds
-- Returns {1, token} when acquired, {0, pttl} when held by another owner.
-- Every read comes before any write, so a wrong-type key fails the script
-- before anything is written.
local v = redis.call('GET', KEYS[1])
if not v then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, token}
end
if v == ARGV[1] then
  -- A retry of an attempt that already succeeded (same owner, same hold):
  -- nobody else can have acquired since, so the counter is still our token.
  local token = tonumber(redis.call('GET', KEYS[2]))
  if not token then
    token = redis.call('INCR', KEYS[2])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, token}
end
local pttl = redis.call('PTTL', KEYS[1])
-- Mark the key as wanted for as long as the current lease may last, so that
-- its holder's release can tell it that others are waiting.
if pttl > 0 then
  redis.call('SET', KEYS[3], '1', 'PX', pttl)
end
return {0, pttl}
