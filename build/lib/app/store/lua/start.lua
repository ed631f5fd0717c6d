-- start.lua: creates a run and applies the engine's plan for its root action.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set, [7] partition index of all runs, [8] partition index
--     of the runs of this workflow name, [9..] queues named by the ops
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] workflow name, [6] version, [7] input JSON, [8] idempotency key or "",
--     [9] reason to fail the run at once or "", [10] who starts it (the principal's name,
--     written as ``by`` in RUN_STARTED), [11..] ops (see apply_ops; an "end" op ends the run,
--     and ARGV[9] is then "")
-- Returns "created", or "exists" when a run with this id (same idempotency key) exists.
-- Raises, changing nothing, when a queue of KEYS[9..] is not a list (see check_queues). Any
-- other error midway is raised after removing the run's keys and index entries: Redis does
-- not roll a script back, and a start is all or nothing. Queue entries and timers it made
-- before the error point at a missing run, and are dropped when met.
local ctx = run_context()
if redis.call('EXISTS', ctx.run) == 1 then return 'exists' end
check_queues(9)
local started, error_message = pcall(function()
  redis.call('HSET', ctx.run, 'id', ctx.flow, 'name', ARGV[5], 'version', ARGV[6],
    'status', 'RUNNING', 'reason', '', 'input', ARGV[7], 'idempotencyKey', ARGV[8],
    'createdAt', ctx.now, 'updatedAt', ctx.now, 'seq', 0, 'active', 0, 'joins', '')
  redis.call('ZADD', KEYS[7], ctx.now, ctx.flow)
  redis.call('ZADD', KEYS[8], ctx.now, ctx.flow)
  hist(ctx, { event = 'RUN_STARTED', name = ARGV[5], version = tonumber(ARGV[6]), by = ARGV[10] })
  apply_ops(ctx, 11)
  if ARGV[9] ~= '' then finish_run(ctx, 'FAILED', ARGV[9]) else settle(ctx) end
  flush(ctx)
end)
if not started then
  ix_remove(ctx, ctx.flow)
  redis.call('DEL', ctx.run, ctx.hist, ctx.events, ctx.waiters, ctx.held)
  redis.call('ZREM', KEYS[7], ctx.flow)
  redis.call('ZREM', KEYS[8], ctx.flow)
  error(error_message, 0)
end
return 'created'
