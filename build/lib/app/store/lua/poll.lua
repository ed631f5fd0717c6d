-- poll.lua: leases up to ARGV[3] queued tasks from this partition's queues.
-- KEYS[1] partition timers zset, [2..] the partition's queues to take from, in order
-- ARGV[1] run key prefix (run key = prefix .. flow id), [2] history key prefix,
--     [3] most tasks to lease, [4] worker id, [5] partition, [6] notify channel,
--     [7] lease secrets: ARGV[3] of them, 32 hex digits each, end to end,
--     [8..] lease ms for each queue of KEYS[2..]
-- Returns a list of {task id, flow id, action id, attempt, input JSON, action name}, the task
-- id naming the lease's secret (and ending with ".i" for a for-each item). Entries of ended
-- runs, stale entries and malformed entries are dropped. A leased attempt's poll timeout
-- timer, if it has one, is removed.
local now = now_ms()
local wanted = tonumber(ARGV[3])
local leased = {}
for q = 2, #KEYS do
  while #leased < wanted do
    local task = redis.call('LPOP', KEYS[q])
    if not task then break end
    local flow, seq, attempt = string.match(task, '^(.+)%.(%d+)%.(%d+)$')
    if flow then
    local ctx = { run = ARGV[1] .. flow, hist = ARGV[2] .. flow, timers = KEYS[1],
      channel = ARGV[6], partition = ARGV[5], flow = flow, now = now, secrets = ARGV[7],
      secrets_used = #leased }
    local status = redis.call('HGET', ctx.run, 'status')
    if status == 'RUNNING' or status == 'PAUSED' then
      local exec = redis.call('HMGET', ctx.run, xf(seq, 's'), xf(seq, 'n'), xf(seq, 'a'),
        xf(seq, 'in'), xf(seq, 'q'), xf(seq, 'p'))
      if exec[1] == 'QUEUED' and exec[2] == attempt then
        set_exec_status(ctx, seq, 'RUNNING')
        redis.call('ZREM', KEYS[1], timer_member(ctx, 'pto', seq, attempt))
        local task_id = lease(ctx, seq, attempt, ARGV[4], tonumber(ARGV[6 + q]), exec[6])
        hist(ctx, { event = 'RUNNING', action = tonumber(exec[3]), seq = tonumber(seq),
          attempt = tonumber(attempt), worker = ARGV[4] })
        flush(ctx)
        table.insert(leased, { task_id, flow, exec[3], attempt, exec[4], exec[5] })
      end
    end
    end
  end
end
return leased
