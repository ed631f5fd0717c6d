-- timer_failed.lua: handling a due timer raised. The failure is counted on the timer's
-- execution and written to the history; below the limit the timer is made due again after a
-- pause, at the limit it is left for the engine to fail the execution and the run.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] timer member, [6] execution seq, [7] error, [8] ms until it is tried again,
--     [9] most failed attempts
-- Returns the number of failed attempts so far, or 0 when the run is gone or has ended (the
-- timer is dropped: nothing can use it).
local ctx = run_context()
local member, seq = ARGV[5], ARGV[6]
local status = redis.call('HGET', ctx.run, 'status')
if status == false or TERMINAL[status] then
  redis.call('ZREM', ctx.timers, member)
  return 0
end
local failures = redis.call('HINCRBY', ctx.run, xf(seq, 'tf'), 1)
-- Still claimed (pushed far ahead): made due sooner, unless a transition removed it meanwhile.
if failures < tonumber(ARGV[9]) and redis.call('ZSCORE', ctx.timers, member) then
  add_timer(ctx, member, ctx.now + tonumber(ARGV[8]))
end
hist(ctx, { event = 'TIMER_FAILED', seq = tonumber(seq), timer = member, attempt = failures,
  error = ARGV[7] })
return done(ctx, failures)
