-- relock: release a lease and take its key again for a new owner, in one
-- step, unless other owners want the key (a queued waiter, or the wanted
-- mark left by a refused acquire).
-- KEYS[1] lock key; KEYS[2] fence key; KEYS[3] wanted key; KEYS[4] queue;
-- KEYS[5] entries (all in the same hash slot)
-- ARGV[1] new value (owner, or owner .. "\0" .. metadata); ARGV[2] TTL in ms
-- ARGV[3] old owner; ARGV[4] release channel
-- ARGV[5] waiter id ("" if none); ARGV[6] how long a queued waiter keeps its
-- place without retrying (ms); ARGV[7] the channel the waiter's process
-- hears grants on; ARGV[8] the hint window in ms when the queue only hints
-- (WithWaiterHints, see acquire.lua), "" (no hints) when ARGV[9] follows;
-- ARGV[9] WithClockTokens: the fencing counter's TTL in ms ("0": none),
-- absent otherwise (see acquire.lua). A relock that hands the key to the
-- first queued waiter queues the waiter behind the others (if the waiter is
-- that first one, the key is handed to it). With hints, a
-- relock by the queue's first waiter takes the key: its turn comes before a
-- wanted mark (which it clears).
-- Returns {1, token} when acquired, {3, token} when the key was granted to
-- the caller's waiter (see acquire.lua), {2, 1} when released for the queued
-- waiters (not acquired; the caller's waiter queued behind them), {2, 0}
-- when released for owners that wanted the key but do not queue (not
-- acquired, not queued), {0, pttl, fence} when refused (the caller's
-- waiter queued, as acquire.lua queues it, unless with hints).
local v = redis.call('GET', KEYS[1])
-- The common case first, before the queue helpers are defined (defining
-- them costs the server more than this path's four calls): the old owner
-- holds the key and nobody wants it or queues for it.
if v and (v == ARGV[3] or string.sub(v, 1, #ARGV[3] + 1) == ARGV[3] .. '\0')
    and redis.call('EXISTS', KEYS[3], KEYS[4]) == 0 then
  local token = redis.call('INCR', KEYS[2])
  if ARGV[9] then
    -- WithClockTokens, as queue.lua's next_token (not defined yet here).
    local t = redis.call('TIME')
    token = math.max(token, tonumber(t[1]) * 1000000 + tonumber(t[2]))
    if ARGV[9] ~= '0' then
      redis.call('SET', KEYS[2], string.format('%d', token), 'PX', ARGV[9])
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
local hints = ARGV[8] ~= '' and ARGV[8]
local head, entry = first_waiter(KEYS[4], KEYS[5])
-- With hints, the caller's own waiter first in line is next: no one to
-- yield to.
local mine = hints and head == ARGV[5]
if v and owned(v, ARGV[3]) then
  local wanted, mark = take_mark(KEYS[3])
  if not mine and (wanted == 1 or head) then
    if head then
      -- The caller queues before the head leaves the queue, and
      -- hand_over overwrites the lease: a key emptied or deleted here
      -- could not be written again while its slot migrates (see
      -- queue.lua).
      local queued = 0
      if ARGV[5] ~= '' then
        enqueue(KEYS[4], KEYS[5], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[2]), ARGV[7], metadata(ARGV[1]), hints)
        queued = 1
      end
      if hints then
        redis.call('DEL', KEYS[1])
        hint(KEYS[5], ARGV[4], head, entry, tonumber(hints))
      else
        hand_over(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ARGV[4], head, entry, ARGV[9])
      end
      return {2, queued}
    else
      -- Only wanted (by callers that do not queue): free it for them,
      -- without getting ahead of them.
      redis.call('DEL', KEYS[1])
      redis.call('PUBLISH', ARGV[4], KEYS[1])
      wake_marked(mark, ARGV[5])
    end
    return {2, 0}
  end
  v = false -- released; nobody waits: take it again below
end
-- From here on, what acquire.lua would answer the same waiter: old was not
-- the holder (it lapsed, or this retries an attempt that timed out).
local granted = v and ARGV[5] ~= '' and grant_token(v, ARGV[5])
if granted then
  -- Granted to the caller's waiter by a release.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {3, granted}
end
local kept = not v and hints and kept_for_other(KEYS[5], head, ARGV[5])
if not v and (not head or (ARGV[5] ~= '' and head == ARGV[5]) or (hints and not kept)) then
  if head then
    dequeue(KEYS[4], KEYS[5], ARGV[5])
  end
  local token = next_token(KEYS[2], ARGV[9])
  if token >= 9007199254740992 then
    return redis.error_reply('ctxlock: fencing counter reached 2^53 (Lua numbers are doubles): tokens would repeat')
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, token}
end
if v == ARGV[1] then
  -- A retry of a relock that already succeeded (its reply lost; go-redis
  -- retries on network errors): the lease is the new owner's, and nobody
  -- can have acquired since, so the counter is still its token; a counter
  -- gone since (expired with WithClockTokens, or evicted) gets a new one,
  -- as in acquire.lua.
  local token = tonumber(redis.call('GET', KEYS[2]))
  if not token then
    token = next_token(KEYS[2], ARGV[9])
    if token >= 9007199254740992 then
      return redis.error_reply('ctxlock: fencing counter reached 2^53 (Lua numbers are doubles): tokens would repeat')
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, token}
end
if ARGV[5] ~= '' and not hints then
  -- Refused as acquire.lua would refuse it: the waiter queues (or keeps its
  -- place) as it would there, rather than a retry delay later. With hints
  -- (redlock's nodes) it does not: see redlock's queues.
  enqueue(KEYS[4], KEYS[5], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[2]), ARGV[7], metadata(ARGV[1]), hints)
end
local tell, inbox = to_tell(head, entry, ARGV[5], ARGV[7], hints)
return refused(KEYS[1], KEYS[3], KEYS[2], v, kept, tell, inbox, ARGV[9])
