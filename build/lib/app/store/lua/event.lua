-- event.lua: delivers an event to a run: to its oldest wait for that name, else buffered.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] event name, [6] event data JSON, [7] who sends it (the principal's name, written as
--     ``by`` in EVENT_RECEIVED or EVENT_BUFFERED)
-- Returns "delivered", "held" (delivered to a wait of a PAUSED run: the wait goes on once the
-- run is resumed), "buffered", "terminal" or "missing".
local ctx = run_context()
local name, data, by = ARGV[5], ARGV[6], ARGV[7]
local status = redis.call('HGET', ctx.run, 'status')
if status == false then return 'missing' end
if TERMINAL[status] then return 'terminal' end
redis.call('HSET', ctx.run, 'updatedAt', ctx.now)
for _, entry in ipairs(redis.call('LRANGE', ctx.waiters, 0, -1)) do
  local seq, awaited = string.match(entry, '^(%d+)|(.*)$')
  if awaited == name then
    redis.call('LREM', ctx.waiters, 1, entry)
    consume_event(ctx, seq, name, data)
    hist(ctx, { event = 'EVENT_RECEIVED', name = name, seq = tonumber(seq), by = by })
    if status == 'PAUSED' then return done(ctx, 'held') end
    return done(ctx, 'delivered')
  end
end
redis.call('RPUSH', ctx.events, cjson.encode({ n = name, d = data }))
hist(ctx, { event = 'EVENT_BUFFERED', name = name, by = by })
return done(ctx, 'buffered')
