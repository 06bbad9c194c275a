-- raise: lift a key's fencing counter to at least ARGV[1] (never lower it).
-- KEYS[1] fence key "{<prefix><key>}:fence"; ARGV[1] token; ARGV[2] with
-- goredis.WithClockTokens the counters' TTL in ms ("0": none), absent
-- otherwise: a raised counter gets it, as the nodes' scripts give it.
-- Returns the counter's value afterwards.
-- Run on the granting nodes whose counter lagged the hold's token (the max
-- over the quorum), so that a quorum of nodes carries the token forward.
local want = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur == nil then
  return redis.error_reply('ERR fence counter is not an integer')
end
if cur < want then
  if ARGV[2] and ARGV[2] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  return want
end
return cur
