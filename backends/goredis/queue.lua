-- queue: helpers every script that touches the waiter queue starts with
-- (prepended by the Go code), and the refusal acquire and relock share. A queue is a list of waiter ids in arrival
-- order (qkey) and a hash of their deadlines in ms (dkey).

local now -- the server's clock in ms, read only when a queue is involved
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end

-- first_waiter returns the first live waiter, dropping the ones whose
-- deadline passed (they stopped retrying), or false when none is left.
local function first_waiter(qkey, dkey)
  local head = redis.call('LINDEX', qkey, 0)
  while head do
    local deadline = tonumber(redis.call('HGET', dkey, head))
    if deadline and deadline > clock() then
      return head
    end
    redis.call('LPOP', qkey)
    redis.call('HDEL', dkey, head)
    head = redis.call('LINDEX', qkey, 0)
  end
  return false
end

-- enqueue puts waiter at the end of the queue, or refreshes its deadline
-- when it is queued already; both keys expire when nobody waits.
local function enqueue(qkey, dkey, waiter, keep)
  if redis.call('HSET', dkey, waiter, clock() + keep) == 1 then
    redis.call('RPUSH', qkey, waiter)
  end
  redis.call('PEXPIRE', qkey, 2 * keep)
  redis.call('PEXPIRE', dkey, 2 * keep)
end

-- refused is the answer to a refused acquire: {0, holder's PTTL}, or {0, 0}
-- when the free key is kept for an earlier waiter. A held key is marked
-- wanted for as long as the current lease may last, so that its holder's
-- release can tell it that others are waiting.
local function refused(lockkey, wantedkey, held)
  local pttl = 0
  if held then
    pttl = redis.call('PTTL', lockkey)
    if pttl > 0 then
      redis.call('SET', wantedkey, '1', 'PX', pttl)
    end
  end
  return {0, pttl}
end
