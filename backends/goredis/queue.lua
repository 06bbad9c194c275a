-- queue: helpers for the scripts that touch the waiter queue (the Go code
-- puts them in place of a script's "--#queue.lua" line, after its fast
-- path). A queue is a list of waiter ids in arrival
-- order (in id order with WithWaiterHints, see place) (qkey) and a hash (dkey) of waiter id -> "<deadline ms> <TTL ms>
-- <inbox> <metadata>": when the waiter loses its place, the TTL and
-- metadata of the lease a release grants it, and the channel its process
-- hears grants on. With WithWaiterHints the hash also has the field
-- "\0hint": "<waiter> <until ms>", the last waiter hinted (see hint).
-- The granted TTL is at most the keep time, so a waiter that
-- died while queued delays the key no longer than its place would; the
-- waiter's Manager renews a short grant to the TTL it asked for.
--
-- While a key's slot migrates between Cluster nodes, the old node runs a
-- script only if every key it names exists there, and fails any command of
-- it on a key that no longer does ("non local key"), after the commands
-- before it took effect. So the scripts never delete a key and write it
-- again: hand_over overwrites the lease, and a relock queues its caller
-- before the head leaves the queue.

-- The server's clock in ms and in µs, read (TIME) once per script, only
-- when a queue is involved or a token comes from the clock.
local now, now_us
local function read_clock()
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) -- < 2^53: exact
end
local function clock()
  if not now then
    read_clock()
  end
  return now
end

-- next_token issues the key's next fencing token: INCR of the fence key.
-- With WithClockTokens (clocked: the counter's TTL in ms, "0" for none;
-- nil without the option) the token is at least the server's clock in µs,
-- and is stored back in the counter with that TTL (PX, refreshed at every
-- token): an expired counter, or a server restarted empty, goes on from the
-- clock, above every earlier token. (The fast paths of acquire.lua and
-- relock.lua do the same inline, before the helpers are defined.) %d: Lua
-- writes numbers of 15 digits or more as "1e+14" otherwise.
local function next_token(fencekey, clocked)
  local token = redis.call('INCR', fencekey)
  if clocked then
    if not now_us then
      read_clock()
    end
    token = math.max(token, now_us)
    if clocked ~= '0' then
      redis.call('SET', fencekey, string.format('%d', token), 'PX', clocked)
    else
      redis.call('SET', fencekey, string.format('%d', token))
    end
  end
  return token
end

-- owned reports whether the lock value v (owner, or owner .. "\0" ..
-- metadata) belongs to owner.
local function owned(v, owner)
  return v == owner or string.sub(v, 1, #owner + 1) == owner .. '\0'
end

-- metadata returns the "\0" .. metadata part of a lock value, or "".
local function metadata(value)
  local i = string.find(value, '\0', 1, true)
  if i then
    return string.sub(value, i)
  end
  return ''
end

-- grant_token returns the token of the lease v if a release granted it to
-- waiter (its owner is "<waiter>:<token>", unique per grant), else nil.
local function grant_token(v, waiter)
  if string.sub(v, 1, #waiter + 1) ~= waiter .. ':' then
    return nil
  end
  local rest = string.sub(v, #waiter + 2)
  local digits = string.match(rest, '^(%d+)$') or string.match(rest, '^(%d+)%z')
  return digits and tonumber(digits)
end

-- first_waiter returns the first live waiter and its entry, dropping the
-- ones whose deadline passed (they stopped retrying), or false when none
-- is left.
local function first_waiter(qkey, dkey)
  local head = redis.call('LINDEX', qkey, 0)
  while head do
    local entry = redis.call('HGET', dkey, head)
    local deadline = entry and tonumber(string.match(entry, '^%d+'))
    if deadline and deadline > clock() then
      return head, entry
    end
    redis.call('LPOP', qkey)
    redis.call('HDEL', dkey, head)
    head = redis.call('LINDEX', qkey, 0)
  end
  return false
end

-- place puts waiter into the queue in the order of waiter ids, looking
-- from the end (a new waiter's id usually sorts last). With WithWaiterHints
-- every server of a quorum backend then has its waiters in one order, and
-- the same first waiter wherever it is queued. (Lua compares strings with
-- strcoll, and Redis takes LC_COLLATE from its environment: the Manager's
-- ids begin with fixed-width lowercase hex, which every locale orders as
-- bytes.)
local function place(qkey, waiter)
  local i = redis.call('LLEN', qkey) - 1
  local last = i
  while i >= 0 do
    local id = redis.call('LINDEX', qkey, i)
    if id < waiter then
      if i == last then
        redis.call('RPUSH', qkey, waiter)
      else
        redis.call('LINSERT', qkey, 'AFTER', id, waiter)
      end
      return
    end
    i = i - 1
  end
  redis.call('LPUSH', qkey, waiter)
end

-- enqueue puts waiter at the end of the queue (in its place by id when
-- sorted, see place), or refreshes its entry when it is queued already;
-- both keys expire when nobody waits.
local function enqueue(qkey, dkey, waiter, keep, ttl, inbox, meta, sorted)
  local entry = string.format('%d %d ', clock() + keep, math.min(ttl, keep)) .. inbox .. ' ' .. meta
  if redis.call('HSET', dkey, waiter, entry) == 1 then
    if sorted then
      place(qkey, waiter)
    else
      redis.call('RPUSH', qkey, waiter)
    end
  end
  redis.call('PEXPIRE', qkey, 2 * keep)
  redis.call('PEXPIRE', dkey, 2 * keep)
end

-- hand_over gives the key, free or still holding the lease being
-- released (which it overwrites), to head, the first live waiter (with its
-- entry, from first_waiter): a lease owned by "<waiter>:<token>" with a new
-- fencing token (next_token, clocked as there), announced as "<token> <TTL
-- ms> <waiter>" on the waiter's inbox, a channel only its process listens
-- to. An entry without a lease
-- (written by an older version) only has the key freed and its channel
-- told the waiter's id.
local function hand_over(lockkey, fencekey, qkey, dkey, channel, head, entry, clocked)
  redis.call('LPOP', qkey)
  redis.call('HDEL', dkey, head)
  local ttl, inbox, meta = string.match(entry, '^%d+ (%d+) (%S+) (.*)$')
  if meta and string.sub(meta, 1, 1) ~= '\0' then
    -- Not written by enqueue ("" or "\0" .. metadata): dropped, or digits
    -- in it would change the token grant_token reads back.
    meta = ''
  end
  if not ttl then
    -- Callers leave the lease for hand_over to overwrite: free it here.
    redis.call('DEL', lockkey)
    redis.call('PUBLISH', channel, head)
    return
  end
  local token = next_token(fencekey, clocked)
  if token >= 9007199254740992 then
    -- Past 2^53 tokens would repeat (Lua numbers are doubles): free the
    -- key instead of granting it; the acquires then fail (acquire.lua).
    redis.call('DEL', lockkey)
    redis.call('PUBLISH', channel, head)
    return
  end
  -- %d: Lua writes numbers of 15 digits or more as "1e+14" otherwise.
  token = string.format('%d', token)
  redis.call('SET', lockkey, head .. ':' .. token .. meta, 'PX', ttl)
  redis.call('PUBLISH', inbox, token .. ' ' .. ttl .. ' ' .. head)
end

-- hint tells head, the first live waiter (with its entry, from
-- first_waiter), that the key is free, without granting it: "0 0 <waiter>"
-- on the waiter's inbox. For window ms the free key is kept for head
-- (kept_for_other); after that it goes to whoever asks first. The waiter
-- keeps its place until it takes the key or leaves (WithWaiterHints: for
-- quorum backends, where a grant by one node would mean nothing, and nodes
-- keeping the key for different waiters for long could leave no one with a
-- quorum). An entry without an inbox (an older version) has the key's
-- channel told the waiter's id.
local function hint(dkey, channel, head, entry, window)
  redis.call('HSET', dkey, '\0hint', head .. ' ' .. (clock() + window))
  local inbox = string.match(entry, '^%d+ %d+ (%S+)')
  if inbox then
    redis.call('PUBLISH', inbox, '0 0 ' .. head)
  else
    redis.call('PUBLISH', channel, head)
  end
end

-- take_mark deletes the wanted mark and returns 1 and the mark's value
-- (false when it is not a string), or 0 when the key was not wanted.
local function take_mark(wantedkey)
  local mark = redis.pcall('GET', wantedkey)
  if type(mark) ~= 'string' then
    mark = false
  end
  return redis.call('DEL', wantedkey), mark
end

-- wake_marked tells the waiter the wanted mark names (see refused and
-- to_tell) to retry now, with a zero hand-off on its inbox. The key was freed
-- without a hand-over, and that waiter may not be in this queue: it may
-- queue in the other kind of queue (a Backend with WithWaiterHints beside
-- one without, during a rolling upgrade), or, with hints, not at all (a
-- refused relock). Without this it would sleep until its retry, and a
-- holder that takes the key again at once could keep it from the waiter
-- for good. A mark without a waiter ('1': TryLock, or an older version)
-- tells nobody, nor does one of the caller's own waiter (except), nor a
-- string in the wanted key that names no Backend's inbox ("<prefix>
-- ctxlock:inbox:<hex>", see goredis.go's inboxPrefix): garbage. The
-- PUBLISH is best effort: a channel the caller's ACL user may not publish
-- on must not fail a script that has freed the key.
local function wake_marked(mark, except)
  local inbox, waiter = string.match(mark or '', '^(%S*ctxlock:inbox:%x+) (.+)$')
  if inbox and waiter ~= except then
    redis.pcall('PUBLISH', inbox, '0 0 ' .. waiter)
  end
end

-- to_tell returns whom a refusal's wanted mark names (see refused and
-- wake_marked), and its inbox: the waiter that can take the key when a
-- release of the other kind frees it. In a granting queue that is the
-- queue's first live waiter (head, with its entry, from first_waiter; the
-- free key is refused to the others), whoever the caller is; with hints
-- (anyone may take a free key no hint keeps) the caller if it waits, else
-- the first waiter. An entry without an inbox (an older version, which
-- hears the key's channel) names nobody (a nil inbox).
local function to_tell(head, entry, waiter, inbox, hints)
  if head and (not hints or waiter == '') then
    return head, string.match(entry, '^%d+ %d+ (%S+)')
  end
  return waiter, inbox
end

-- dequeue takes waiter out of the queue, if it is in it.
local function dequeue(qkey, dkey, waiter)
  if waiter ~= '' and redis.call('HDEL', dkey, waiter) == 1 then
    redis.call('LREM', qkey, 1, waiter)
  end
end

-- kept_for_other returns how long (ms) the free key is still kept for head,
-- the first live waiter, because a hint told it less than the hint's window
-- ago, when the caller (waiter, or '') is someone else; false otherwise.
local function kept_for_other(dkey, head, waiter)
  if not head or head == waiter then
    return false
  end
  local h = redis.call('HGET', dkey, '\0hint')
  local hinted, till = string.match(h or '', '^(.*) (%d+)$')
  local left = hinted == head and tonumber(till) - clock()
  return left and left > 0 and left
end

-- refused is the answer to a refused acquire: {0, holder's PTTL, fencing
-- counter}, PTTL 0 when the free key is kept for an earlier waiter, or how
-- long it is still kept (kept, in ms) when a hint keeps it. A held
-- key is marked wanted for as long as the current lease may last, so that
-- its holder's release can tell it that others are waiting; the mark names
-- waiter and its inbox (from to_tell), or nobody ('1'). PTTL rounds
-- down: a lease in its last millisecond reads 0, and 0 would tell the waiter
-- "unknown, back off", so it is reported as 1. With WithClockTokens
-- (clocked, as next_token's) a counter that expired, possibly during the
-- hold (Extend keeps a hold past counterTTL), is reported as the server's
-- clock in µs, which no token issued before is above: a grant to the waiter
-- made before this refusal must not look newer than it (ctxlock.Handoff).
local function refused(lockkey, wantedkey, fencekey, held, kept, waiter, inbox, clocked)
  local pttl = kept or 0
  if held then
    pttl = redis.call('PTTL', lockkey)
    if pttl == 0 then
      pttl = 1
    end
    if pttl > 0 then
      local mark = '1'
      if waiter ~= '' and inbox then
        mark = inbox .. ' ' .. waiter
      end
      redis.call('SET', wantedkey, mark, 'PX', pttl)
    end
  end
  local fence = tonumber(redis.call('GET', fencekey))
  if not fence and clocked then
    if not now_us then
      read_clock()
    end
    fence = now_us
  end
  return {0, pttl, fence or 0}
end
