-- child_started.lua: the child run of a sub-workflow execution has been started (or found
-- started): its id is recorded on the execution and the spawn timer that asked for it is
-- removed. Safe to run twice.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] execution seq, [6] child run id, [7] spawn timer member
-- Returns "ok"; "terminal" when the run has ended (the caller ends the child: the kill timer
-- of the run's end may have looked for it before it existed); "missing" when there is no
-- such run or sub-workflow execution (the timer is removed all the same).
local ctx = run_context()
local seq, child = ARGV[5], ARGV[6]
redis.call('ZREM', ctx.timers, ARGV[7])
local exec = redis.call('HMGET', ctx.run, 'status', xf(seq, 'cw'), xf(seq, 'cid'))
local status = exec[1]
if status == false or exec[2] == false then return 'missing' end
if exec[3] ~= child then
  redis.call('HSET', ctx.run, xf(seq, 'cid'), child)
  hist(ctx, { event = 'CHILD_STARTED', action = tonumber(redis.call('HGET', ctx.run, xf(seq, 'a'))),
    seq = tonumber(seq), child = child, workflow = exec[2] })
end
if TERMINAL[status] then return done(ctx, 'terminal') end
return done(ctx, 'ok')
