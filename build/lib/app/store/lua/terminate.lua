-- terminate.lua: ends a run now; its queued tasks are never delivered, its timers do nothing.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds, [5] reason,
--     [6] who terminates it (the principal's name, written as ``by`` in RUN_TERMINATED)
-- Returns "ok", "terminal" or "missing".
local ctx = run_context()
ctx.by = ARGV[6]
local status = redis.call('HGET', ctx.run, 'status')
if status == false then return 'missing' end
if TERMINAL[status] then return 'terminal' end
finish_run(ctx, 'TERMINATED', ARGV[5])
return done(ctx, 'ok')
