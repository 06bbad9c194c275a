-- raise: lift a key's fencing counter to at least ARGV[1] (never lower it).
-- KEYS[1] fence key "{<prefix><key>}:fence"; ARGV[1] token.
-- Returns the counter's value afterwards.
-- Run on the granting nodes whose counter lagged the hold's token (the max
-- over the quorum), so that a quorum of nodes carries the token forward.
local want = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur == nil then
  return redis.error_reply('ERR fence counter is not an integer')
end
if cur < want then
  redis.call('SET', KEYS[1], ARGV[1])
  return want
end
return cur
