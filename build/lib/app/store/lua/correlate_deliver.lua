-- correlate_deliver.lua: a correlated event reaches one wait of a run: it is consumed (as
-- event.lua consumes one: the step timer completes the wait) only if that execution still
-- waits for it and has received nothing (its registration timer then goes); delivered
-- again, the same token answers "already" and changes nothing.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] seq of the wait, [6] event name, [7] key, [8] data JSON, [9] the event's token
--     ("d:<delivery id>" for a publication, "k:<id>" for a kept event), [10] who published
--     it (the principal's name, written as ``by`` in EVENT_RECEIVED; "" when not known)
-- Returns {answer, action id or ""}: "delivered", "held" (the run is paused: the wait goes
-- on once it is resumed), "already", "stale" (the wait no longer waits for it), "terminal"
-- or "missing".
local ctx = run_context()
local seq, name, key, data, token = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local by = ARGV[10] ~= '' and ARGV[10] or nil
local status = redis.call('HGET', ctx.run, 'status')
if status == false then return { 'missing', '' } end
local exec = redis.call('HMGET', ctx.run, xf(seq, 'a'), xf(seq, 's'), xf(seq, 'n'),
  xf(seq, 'ev'), xf(seq, 'ck'), xf(seq, 'cev'))
local aid = exec[1] or ''
if TERMINAL[status] then return { 'terminal', aid } end
if exec[6] == token then return { 'already', aid } end
if exec[2] ~= 'WAITING' or exec[3] ~= '1' or exec[4] ~= name or exec[5] ~= key then
  return { 'stale', aid }
end
redis.call('LREM', ctx.waiters, 1, seq .. '|' .. name)
consume_event(ctx, seq, name, data)
redis.call('HSET', ctx.run, xf(seq, 'cev'), token, 'updatedAt', ctx.now)
-- The wait has its event: its registration timer has nothing left to renew.
redis.call('ZREM', ctx.timers, timer_member(ctx, 'creg', seq, 1))
hist(ctx, { event = 'EVENT_RECEIVED', name = name, seq = tonumber(seq), key = key,
  action = tonumber(aid), by = by })
if status == 'PAUSED' then return done(ctx, { 'held', aid }) end
return done(ctx, { 'delivered', aid })
