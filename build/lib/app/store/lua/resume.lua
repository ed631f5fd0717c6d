-- resume.lua: a PAUSED run runs again; everything held is made due now.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds, [5] who resumes it
--     (the principal's name, written as ``by``)
-- Returns "ok", "not_paused" or "missing".
local ctx = run_context()
local status = redis.call('HGET', ctx.run, 'status')
if status == false then return 'missing' end
if status ~= 'PAUSED' then return 'not_paused' end
redis.call('HSET', ctx.run, 'status', 'RUNNING', 'updatedAt', ctx.now)
ix_move_status(ctx, ctx.flow, 'PAUSED', 'RUNNING')
local held = redis.call('SMEMBERS', ctx.held)
for _, member in ipairs(held) do add_timer(ctx, member, ctx.now) end
redis.call('DEL', ctx.held)
hist(ctx, { event = 'RUN_RESUMED', released = #held, by = ARGV[5] })
return done(ctx, 'ok')
