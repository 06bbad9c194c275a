-- leave: take a waiter out of the key's queue; if the key is free, pass the
-- turn on (publish the next live waiter, or the key's name).
-- KEYS[1] lock key; KEYS[2] queue; KEYS[3] deadlines (same hash slot)
-- ARGV[1] waiter id; ARGV[2] release channel.
local now -- the server's clock in ms, read only when a queue is involved
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local head = redis.call('LINDEX', KEYS[2], 0)
  while head do
    local deadline = tonumber(redis.call('HGET', KEYS[3], head))
    if deadline and deadline > clock() then
      break
    end
    redis.call('LPOP', KEYS[2])
    redis.call('HDEL', KEYS[3], head)
    head = redis.call('LINDEX', KEYS[2], 0)
  end
  redis.call('PUBLISH', ARGV[2], head or KEYS[1])
end
return 1
