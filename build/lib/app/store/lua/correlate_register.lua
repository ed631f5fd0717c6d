-- correlate_register.lua: a correlated wait reached its index (its run's "creg" timer):
-- it takes the oldest kept event it may take, or is registered as a waiter. Handled again
-- (a server died before the run got the event), it takes the same event again.
-- KEYS[1] index waiters zset, [2] index events hash
-- ARGV[1] takers prefix, [2] flow id, [3] seq of the wait, [4] how long the registration
--     is kept, ms (it is renewed while the wait waits: a registration again keeps its place)
-- Returns {"taken", event id, data JSON, who published it ("" if the event does not say)} or
-- {"waiting"}.
local waiters, events = KEYS[1], KEYS[2]
local prefix, flow, seq, keep_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local waiter = flow .. '|' .. seq
local function taken(id, kept)
  return { 'taken', tostring(id), redis.call('HGET', events, 'd:' .. id), kept.b or '' }
end
local ids = live_ids(events, prefix, now)
for _, id in ipairs(ids) do
  if redis.call('HGET', prefix .. id, flow) == seq then
    return taken(id, cjson.decode(redis.call('HGET', events, id)))
  end
end
for _, id in ipairs(ids) do
  local kept = cjson.decode(redis.call('HGET', events, id))
  local takers = prefix .. id
  -- Each run takes a kept event once; a firstOnly event goes to its first taker only.
  if kept.x > now and redis.call('HEXISTS', takers, flow) == 0
      and (kept.f == 0 or redis.call('EXISTS', takers) == 0) then
    redis.call('HSET', takers, flow, seq)
    redis.call('PEXPIREAT', takers, kept.g)
    redis.call('ZREM', waiters, waiter)
    return taken(id, kept)
  end
end
if redis.call('ZSCORE', waiters, waiter) == false then
  redis.call('ZADD', waiters, redis.call('HINCRBY', events, 'n', 1), waiter)
end
keep_for(waiters, events, keep_ms)
return { 'waiting' }
