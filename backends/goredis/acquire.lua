-- acquire: take the lock if free and not kept for an earlier waiter, adopt
-- a lease a release granted to the caller's waiter, or report the holder's
-- remaining TTL (and queue the caller, when it waits).
-- KEYS[1] lock key    "{<prefix><key>}"
-- KEYS[2] fence key   "{<prefix><key>}:fence"   (same hash slot)
-- KEYS[3] wanted key  "{<prefix><key>}:wanted"  (same hash slot)
-- KEYS[4] queue       "{<prefix><key>}:q"       list of waiter ids, arrival order
--                     (":hq", in waiter id order, with WithWaiterHints)
-- KEYS[5] entries     "{<prefix><key>}:qd"      hash waiter id -> entry (":hqd")
-- ARGV[1] value: owner, or owner .. "\0" .. metadata
-- ARGV[2] TTL in milliseconds
-- ARGV[3] waiter id, "" for a caller that does not wait (TryLock)
-- ARGV[4] how long a queued waiter keeps its place without retrying (ms)
-- ARGV[5] the channel the waiter's process hears grants on
-- ARGV[6] the hint window in ms when the queue only hints (WithWaiterHints,
-- see queue.lua's hint), absent otherwise: a free key goes to whoever asks
-- unless it is kept for a waiter just hinted, and waiters queue in the
-- order of their ids; "" (no hints) when ARGV[7] follows
-- ARGV[7] WithClockTokens: the fencing counter's TTL in ms ("0": none),
-- absent otherwise: a token is then at least the server's clock in µs (see
-- queue.lua's next_token)
-- Returns {1, token} when acquired, {3, token} when the key was granted to
-- the waiter (the lease's owner is "<waiter>:<token>"; its TTL is renewed),
-- {0, pttl, fence} when refused (pttl 0: the free key is kept for an
-- earlier waiter; with hints, how long it is still kept for one).
-- The lock key is read first, so a wrong-type lock key fails the script
-- before anything is written.
local v = redis.call('GET', KEYS[1])
-- The common case first, before the queue helpers are defined (defining
-- them costs the server more than this path's four calls): a free key that
-- nobody queues for.
if not v and redis.call('EXISTS', KEYS[4]) == 0 then
  local token = redis.call('INCR', KEYS[2])
  if ARGV[7] then
    -- WithClockTokens, as queue.lua's next_token (not defined yet here).
    local t = redis.call('TIME')
    token = math.max(token, tonumber(t[1]) * 1000000 + tonumber(t[2]))
    if ARGV[7] ~= '0' then
      redis.call('SET', KEYS[2], string.format('%d', token), 'PX', ARGV[7])
    else
      redis.call('SET', KEYS[2], string.format('%d', token))
    end
  end
  if token >= 9007199254740992 then
    return redis.error_reply('ctxlock: fencing counter reached 2^53 (Lua numbers are doubles): tokens would repeat')
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, token}
end
--#queue.lua
local hints = ARGV[6] ~= '' and ARGV[6]
-- The first live waiter, dropping the ones that stopped retrying.
local head, entry = first_waiter(KEYS[4], KEYS[5])
if v == ARGV[1] then
  -- A retry of an attempt that already succeeded (same owner, same hold):
  -- nobody else can have acquired since, so the counter is still our token.
  local token = tonumber(redis.call('GET', KEYS[2]))
  if not token then
    token = next_token(KEYS[2], ARGV[7])
    if token >= 9007199254740992 then
      return redis.error_reply('ctxlock: fencing counter reached 2^53 (Lua numbers are doubles): tokens would repeat')
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, token}
end
local granted = v and ARGV[3] ~= '' and grant_token(v, ARGV[3])
if granted then
  -- Granted to this waiter by a release (its notification may be late or
  -- lost).
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {3, granted}
end
local kept = not v and hints and kept_for_other(KEYS[5], head, ARGV[3])
if not v and (not head or head == ARGV[3] or (hints and not kept)) then
  if head == ARGV[3] then
    redis.call('LPOP', KEYS[4])
    redis.call('HDEL', KEYS[5], head)
  elseif head and hints then
    dequeue(KEYS[4], KEYS[5], ARGV[3])
  end
  local token = next_token(KEYS[2], ARGV[7])
  if token >= 9007199254740992 then
    return redis.error_reply('ctxlock: fencing counter reached 2^53 (Lua numbers are doubles): tokens would repeat')
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, token}
end
if ARGV[3] ~= '' then
  enqueue(KEYS[4], KEYS[5], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[2]), ARGV[5], metadata(ARGV[1]), hints)
end
-- The caller, if it waits, is queued now: first when nobody was.
local tell, inbox = to_tell(head, entry, ARGV[3], ARGV[5], hints)
return refused(KEYS[1], KEYS[3], KEYS[2], v, kept, tell, inbox, ARGV[7])
