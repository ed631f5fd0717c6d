-- requeue.lua: a retry's back-off is over: the task goes back on its queue.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set, [7] the action's queue
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] execution seq, [6] attempt, [7] the "enq" timer member, [8] queue (action) name,
--     [9] the action's poll timeout ms, or 0 for none
-- Returns "ok", "held", "stale", "terminal" or "missing". Raises, changing nothing, when the
-- queue is not a list (see check_queues).
local ctx = run_context()
local seq, attempt, member = ARGV[5], ARGV[6], ARGV[7]
local status = redis.call('HGET', ctx.run, 'status')
if status == false or TERMINAL[status] then
  redis.call('ZREM', ctx.timers, member)
  if status == false then return 'missing' end
  return 'terminal'
end
local exec = redis.call('HMGET', ctx.run, xf(seq, 's'), xf(seq, 'n'))
check_queues(7)
redis.call('ZREM', ctx.timers, member)
if exec[1] ~= 'QUEUED' or exec[2] ~= attempt then return 'stale' end
if status == 'PAUSED' then
  redis.call('SADD', ctx.held, member)
  return 'held'
end
redis.call('HSET', ctx.run, 'updatedAt', ctx.now)
enqueue(ctx, KEYS[7], ARGV[8], seq, attempt, tonumber(ARGV[9]))
hist(ctx, { event = 'QUEUED', seq = tonumber(seq), attempt = tonumber(attempt) })
return done(ctx, 'ok')
