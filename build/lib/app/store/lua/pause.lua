-- pause.lua: a RUNNING run becomes PAUSED; results and timers that arrive are held.
-- KEYS[1] run hash, [2] history list
-- ARGV[1] flow id, [2] who pauses it (the principal's name, written as ``by``)
-- Returns "ok", "not_running" or "missing".
local ctx = { run = KEYS[1], hist = KEYS[2], now = now_ms() }
local status = redis.call('HGET', ctx.run, 'status')
if status == false then return 'missing' end
if status ~= 'RUNNING' then return 'not_running' end
redis.call('HSET', ctx.run, 'status', 'PAUSED', 'updatedAt', ctx.now)
ix_move_status(ctx, ARGV[1], 'RUNNING', 'PAUSED')
hist(ctx, { event = 'RUN_PAUSED', by = ARGV[2] })
return done(ctx, 'ok')
