-- correlate_forget.lua: a correlated wait that no longer waits (it timed out, got an event
-- by its run id, or its run ended) leaves its index: its registration goes, and a kept
-- event it took without receiving it is given back (a firstOnly one is free again).
-- KEYS[1] index waiters zset, [2] index events hash
-- ARGV[1] takers prefix, [2] flow id, [3] seq of the wait, [4] the token of the event the
--     wait received ("k:<id>" for a kept event), or ""
-- Returns how many registrations and takes were dropped.
local waiters, events = KEYS[1], KEYS[2]
local prefix, flow, seq, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local dropped = redis.call('ZREM', waiters, flow .. '|' .. seq)
for _, id in ipairs(kept_ids(events)) do
  local takers = prefix .. id
  if redis.call('HGET', takers, flow) == seq and token ~= 'k:' .. id then
    dropped = dropped + redis.call('HDEL', takers, flow)
  end
end
drop_if_empty(waiters, events)
return dropped
