-- correlate_publish.lua: an event for (event, key) (POST /events/{event}) takes the waiters
-- it goes to off the index and records its delivery to them, with a "cdel" timer that
-- resumes the delivery if the server that began it does not finish it (correlate_settle
-- ends it). With no waiter the event is kept for its TTL instead.
-- KEYS[1] index waiters zset, [2] index events hash, [3] delivery record hash,
--     [4] timers zset of the index's partition
-- ARGV[1] delivery id, [2] the index's partition, [3] notify channel, [4] event name,
--     [5] key, [6] data JSON, [7] TTL ms, [8] "1" for firstOnly, [9] ms before the timer
--     resumes the delivery, [10] grace ms of a kept event's record, [11] who publishes it
--     (the principal's name: kept in the delivery record, or the kept event, for the
--     ``by`` of the EVENT_RECEIVED entries of the runs that get it)
-- Returns {"pending", receivers JSON ([[flow, seq], ...])} or {"done", kept (1|0), "[]"}.
local waiters, events, record = KEYS[1], KEYS[2], KEYS[3]
local ctx = { timers = KEYS[4], partition = ARGV[2], channel = ARGV[3], now = now_ms() }
local id, name, key, data = ARGV[1], ARGV[4], ARGV[5], ARGV[6]
local ttl_ms, first, retry_ms, grace_ms = tonumber(ARGV[7]), ARGV[8] == '1', tonumber(ARGV[9]),
  tonumber(ARGV[10])
local by = ARGV[11]
local receivers = pick_waiters(waiters, first, {})
if #receivers == 0 then
  local kept = keep_event(waiters, events, data, ttl_ms, first, ctx.now, grace_ms, by)
  drop_if_empty(waiters, events)
  return { 'done', kept and 1 or 0, '[]' }
end
local tried = {}
for _, receiver in ipairs(receivers) do tried[receiver[1]] = true end
redis.call('HSET', record, 'ev', name, 'key', key, 'd', data, 'ttl', ttl_ms,
  'first', first and 1 or 0, 'pending', cjson.encode(receivers), 'delivered', '[]',
  'tried', cjson.encode(tried), 'by', by)
add_timer(ctx, 'cdel|' .. id .. '|' .. ctx.partition .. '|1', ctx.now + retry_ms)
drop_if_empty(waiters, events)
return { 'pending', cjson.encode(receivers) }
