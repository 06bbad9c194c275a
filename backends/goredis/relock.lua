-- relock: release a lease and take its key again for a new owner, in one
-- step, unless other owners want the key (a queued waiter, or the wanted
-- mark left by a refused acquire).
-- KEYS[1] lock key; KEYS[2] fence key; KEYS[3] wanted key; KEYS[4] queue;
-- KEYS[5] deadlines (all in the same hash slot)
-- ARGV[1] new value (owner, or owner .. "\0" .. metadata); ARGV[2] TTL in ms
-- ARGV[3] old owner; ARGV[4] release channel
-- ARGV[5] waiter id ("" if none); ARGV[6] how long a queued waiter keeps its
-- place without retrying (ms). A relock that gives the key up to queued
-- waiters queues the waiter behind them.
-- Returns {1, token} when acquired, {2, 0} when released for the owners
-- waiting (not acquired), {0, pttl} when refused.
local v = redis.call('GET', KEYS[1])
local head = first_waiter(KEYS[4], KEYS[5])
if v and (v == ARGV[3] or string.sub(v, 1, #ARGV[3] + 1) == ARGV[3] .. '\0') then
  local wanted = redis.call('DEL', KEYS[3])
  if wanted == 1 or head then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', ARGV[4], head or KEYS[1])
    -- Behind the queued waiters, if any; with none queued (the key was only
    -- wanted) the releaser must not get ahead of the owners who want it.
    if head and ARGV[5] ~= '' then
      enqueue(KEYS[4], KEYS[5], ARGV[5], tonumber(ARGV[6]))
    end
    return {2, 0}
  end
  v = false -- released; nobody waits: take it again below
end
if not v and not head then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, token}
end
return refused(KEYS[1], KEYS[3], v)
