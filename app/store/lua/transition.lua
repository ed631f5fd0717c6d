-- transition.lua: ends (or retries) one execution of an action and applies the engine's plan
-- for what follows, if the execution is still in the state the engine read.
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set, [7..] queues named by the ops
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] execution seq, [6] expected execution status, [7] expected attempt/generation,
--     [8] timer member that this transition consumes (lease or fired timer) or "",
--     [9] member to keep in the held set when the run is paused, "" when this is
--         itself a held result being applied (it is then held as ARGV[8] if paused),
--     [10] outcome JSON kept with a held worker result, or "",
--     [11] new status: COMPLETED, FAILED, or QUEUED for a retry,
--     [12] output JSON (COMPLETED, or FAILED's {"error": ...}), [13] error text,
--     [14] branch taken, [15] retry delay ms, [16] reason to fail the run or "",
--     [17] the score the timer ARGV[8] was claimed with, or "": if it changed since
--          (a heartbeat extended a lease being expired), nothing happens ("stale"),
--     [18] worker id to lease this transition's user tasks to at once, or "": only ops with
--          a lease ms as their number are leased (see apply_ops),
--     [19] the run's revision the engine planned from, or "" to plan from any: if the
--          run has changed since ("moved"), nothing happens,
--     [20] the lease secret a worker's result names, or "" (a timer's): a result whose
--          secret is not the running attempt's changes nothing ("stale"),
--     [21] lease secrets for the tasks leased at once to ARGV[18], 32 hex digits each,
--     [22..] ops (see apply_ops; an "end" op ends the run, and ARGV[16] is then "")
-- Returns "ok", "held" (run paused: kept for resume), "stale" (not in the expected state,
-- or a result already held), "moved" (see ARGV[19]), "terminal" (run ended) or "missing" (no
-- such run); when tasks
-- were leased to ARGV[18] and the run goes on, {"ok", seq, ...} with their seqs in op order.
-- Raises, changing nothing, when a queue of KEYS[7..] is not a list (see check_queues).
local ctx = run_context()
if ARGV[18] ~= '' then ctx.worker = ARGV[18] end
ctx.secrets = ARGV[21]
ctx.leased = {}
local seq, member, held_member = ARGV[5], ARGV[8], ARGV[9]
-- A fresh result (from a worker or a timer) names its held member; a held result being
-- replayed does not, and is held again as its own timer member if the run paused again.
local fresh = held_member ~= ''
if not fresh then held_member = member end
local exec = redis.call('HMGET', ctx.run, 'status', xf(seq, 's'), xf(seq, 'n'), xf(seq, 'held'),
  xf(seq, 'a'), xf(seq, 'ev'), 'rev', xf(seq, 'k'))
local status = exec[1]
if status == false or TERMINAL[status] then
  if member ~= '' then redis.call('ZREM', ctx.timers, member) end
  if status == false then return 'missing' end
  return 'terminal'
end
if ARGV[19] ~= '' and exec[7] ~= ARGV[19] then return 'moved' end
if ARGV[17] ~= '' and tonumber(redis.call('ZSCORE', ctx.timers, member)) ~= tonumber(ARGV[17]) then
  return 'stale'
end
-- Not the holder of the lease (or a lease since replaced): not even its timer is touched.
if ARGV[20] ~= '' and exec[8] ~= ARGV[20] then return 'stale' end
if exec[2] ~= ARGV[6] or exec[3] ~= ARGV[7] or (fresh and exec[4]) then
  if member ~= '' then redis.call('ZREM', ctx.timers, member) end
  return 'stale'
end
if status == 'PAUSED' and held_member ~= '' then
  if member ~= '' then
    redis.call('ZREM', ctx.timers, member)
    -- A worker's result supersedes its lease expiry if that was held meanwhile.
    if member ~= held_member then redis.call('SREM', ctx.held, member) end
  end
  if ARGV[10] ~= '' then redis.call('HSET', ctx.run, xf(seq, 'held'), ARGV[10]) end
  redis.call('SADD', ctx.held, held_member)
  hist(ctx, { event = 'HELD', seq = tonumber(seq), item = held_member })
  return done(ctx, 'held')
end
check_queues(7)
if member ~= '' then redis.call('ZREM', ctx.timers, member) end
if exec[4] then redis.call('HDEL', ctx.run, xf(seq, 'held')) end
local aid = exec[5]
local action = tonumber(aid)
local new_status = ARGV[11]
if new_status == 'QUEUED' then
  redis.call('HSET', ctx.run, 'updatedAt', ctx.now)
  local attempt = tonumber(ARGV[7]) + 1
  redis.call('HSET', ctx.run, xf(seq, 's'), 'QUEUED', xf(seq, 'n'), attempt, xf(seq, 'e'), ARGV[13])
  if is_latest(ctx, aid, seq) then
    redis.call('HSET', ctx.run, af(aid, 's'), 'QUEUED', af(aid, 'n'), attempt, af(aid, 'e'), ARGV[13])
  end
  add_timer(ctx, timer_member(ctx, 'enq', seq, attempt), ctx.now + tonumber(ARGV[15]))
  hist(ctx, { event = 'RETRY_SCHEDULED', action = action, seq = tonumber(seq),
    attempt = attempt, error = ARGV[13], delayMs = tonumber(ARGV[15]) })
else
  -- The execution ends (the guard saw it open): one write for it and, when it is its
  -- action's latest, for the action.
  local fields = { xf(seq, 's'), new_status, xf(seq, 'e'), ARGV[13], 'updatedAt', ctx.now }
  local latest = is_latest(ctx, aid, seq)
  if latest then
    for _, value in ipairs({ af(aid, 's'), new_status, af(aid, 'o'), ARGV[12] }) do
      table.insert(fields, value)
    end
    if new_status == 'FAILED' then
      table.insert(fields, af(aid, 'e'))
      table.insert(fields, ARGV[13])
    end
  end
  redis.call('HSET', ctx.run, unpack(fields))
  if latest and new_status ~= 'FAILED' then redis.call('HDEL', ctx.run, af(aid, 'e')) end
  -- A for-each item keeps its own output (a:<id>:o is the for-each's); its "item" op counts it.
  if not latest and redis.call('HEXISTS', ctx.run, xf(seq, 'p')) == 1 then
    redis.call('HSET', ctx.run, xf(seq, 'o'), ARGV[12])
  end
  if OPEN[ARGV[6]] then count_active(ctx, -1) end
  if exec[6] then redis.call('LREM', ctx.waiters, 1, seq .. '|' .. exec[6]) end
  hist(ctx, { event = new_status, action = action, seq = tonumber(seq), branch = ARGV[14],
    error = ARGV[13] })
end
apply_ops(ctx, 22)
if ARGV[16] ~= '' then finish_run(ctx, 'FAILED', ARGV[16]) else settle(ctx) end
if #ctx.leased > 0 and redis.call('HGET', ctx.run, 'status') == 'RUNNING' then
  local reply = { 'ok' }
  for _, leased_seq in ipairs(ctx.leased) do table.insert(reply, leased_seq) end
  return done(ctx, reply)
end
return done(ctx, 'ok')
