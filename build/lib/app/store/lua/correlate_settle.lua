-- correlate_settle.lua: what became of a delivery's receivers (correlate_deliver answered
-- for each). While receivers are pending it waits for them; when none got the event (their
-- waits had ended) it goes to the next waiters, and with none left it is kept for its TTL;
-- then the delivery ends: its record and its timer go. A kept event keeps the record's
-- publisher (``by``, see correlate_publish.lua). Idempotent: a result for a receiver
-- no longer pending changes nothing, and a delivery that has ended answers "gone".
-- KEYS[1] index waiters zset, [2] index events hash, [3] delivery record hash,
--     [4] timers zset of the index's partition
-- ARGV[1] delivery id, [2] the index's partition, [3] notify channel, [4] grace ms of a
--     kept event's record, [5..] results, three values each: flow id, seq, and the action
--     id of the wait that got the event ("" when it did not get it)
-- Returns {"pending", receivers JSON}, {"done", kept (1|0), delivered JSON ([[flow, seq,
-- action id], ...])} or {"gone"}.
local waiters, events, record = KEYS[1], KEYS[2], KEYS[3]
local ctx = { timers = KEYS[4], partition = ARGV[2], channel = ARGV[3], now = now_ms() }
local timer = 'cdel|' .. ARGV[1] .. '|' .. ctx.partition .. '|1'
local grace_ms = tonumber(ARGV[4])
if redis.call('EXISTS', record) == 0 then
  redis.call('ZREM', ctx.timers, timer)
  return { 'gone' }
end
local rec = redis.call('HMGET', record, 'd', 'ttl', 'first', 'pending', 'delivered', 'tried',
  'by')
local first = rec[3] == '1'
local pending, delivered, tried = cjson.decode(rec[4]), cjson.decode(rec[5]), cjson.decode(rec[6])
for i = 5, #ARGV, 3 do
  local flow, seq, aid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  for at, receiver in ipairs(pending) do
    if receiver[1] == flow and receiver[2] == seq then
      table.remove(pending, at)
      if aid ~= '' then table.insert(delivered, { flow, seq, tonumber(aid) }) end
      break
    end
  end
end
if #pending == 0 and #delivered == 0 then
  pending = pick_waiters(waiters, first, tried)
  for _, receiver in ipairs(pending) do tried[receiver[1]] = true end
end
if #pending > 0 then
  redis.call('HSET', record, 'pending', cjson.encode(pending), 'delivered',
    cjson.encode(delivered), 'tried', cjson.encode(tried))
  drop_if_empty(waiters, events)
  return { 'pending', cjson.encode(pending) }
end
local kept = false
if #delivered == 0 then
  kept = keep_event(waiters, events, rec[1], tonumber(rec[2]), first, ctx.now, grace_ms,
    rec[7] or nil)
end
redis.call('DEL', record)
redis.call('ZREM', ctx.timers, timer)
drop_if_empty(waiters, events)
return { 'done', kept and 1 or 0, cjson.encode(delivered) }
