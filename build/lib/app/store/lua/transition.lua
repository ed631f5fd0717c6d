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
-- The script names its arguments at its top: seq, expected_status, expected_attempt,
-- member, held_member, held_outcome, new_status, output_json, error_text, branch,
-- retry_delay_ms, fail_reason, claimed_score, lease_to, expected_rev, lease_secret.
-- Returns "ok", "held" (run paused: kept for resume), "stale" (not in the expected state,
-- or a result already held), "moved" (see ARGV[19]), "terminal" (run ended) or "missing" (no
-- such run); when tasks
-- were leased to ARGV[18] and the run goes on, {"ok", seq, ...} with their seqs in op order.
-- Raises, changing nothing, when a queue of KEYS[7..] is not a list (see check_queues).
local ctx = run_context()
local seq, expected_status, expected_attempt = ARGV[5], ARGV[6], ARGV[7]
local member, held_member, held_outcome = ARGV[8], ARGV[9], ARGV[10]
local new_status, output_json, error_text, branch = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local retry_delay_ms, fail_reason, claimed_score = ARGV[15], ARGV[16], ARGV[17]
local lease_to, expected_rev, lease_secret = ARGV[18], ARGV[19], ARGV[20]
if lease_to ~= '' then ctx.worker = lease_to end
ctx.secrets = ARGV[21]
ctx.leased = {}
-- A fresh result (from a worker or a timer) names its held member; a held result being
-- replayed does not, and is held again as its own timer member if the run paused again.
local fresh = held_member ~= ''
if not fresh then held_member = member end
local status, exec_status, exec_attempt, held_result, aid, awaited_event, run_rev, running_secret =
  unpack(redis.call('HMGET', ctx.run, 'status', xf(seq, 's'), xf(seq, 'n'), xf(seq, 'held'),
    xf(seq, 'a'), xf(seq, 'ev'), 'rev', xf(seq, 'k')))
if status == false or TERMINAL[status] then
  if member ~= '' then redis.call('ZREM', ctx.timers, member) end
  if status == false then return 'missing' end
  return 'terminal'
end
if expected_rev ~= '' and run_rev ~= expected_rev then return 'moved' end
if claimed_score ~= '' and tonumber(redis.call('ZSCORE', ctx.timers, member)) ~= tonumber(claimed_score) then
  return 'stale'
end
-- Not the holder of the lease (or a lease since replaced): not even its timer is touched.
if lease_secret ~= '' and running_secret ~= lease_secret then return 'stale' end
if exec_status ~= expected_status or exec_attempt ~= expected_attempt or (fresh and held_result) then
  if member ~= '' then redis.call('ZREM', ctx.timers, member) end
  return 'stale'
end
if status == 'PAUSED' and held_member ~= '' then
  if member ~= '' then
    redis.call('ZREM', ctx.timers, member)
    -- A worker's result supersedes its lease expiry if that was held meanwhile.
    if member ~= held_member then redis.call('SREM', ctx.held, member) end
  end
  if held_outcome ~= '' then redis.call('HSET', ctx.run, xf(seq, 'held'), held_outcome) end
  redis.call('SADD', ctx.held, held_member)
  hist(ctx, { event = 'HELD', seq = tonumber(seq), item = held_member })
  return done(ctx, 'held')
end
check_queues(7)
if member ~= '' then redis.call('ZREM', ctx.timers, member) end
if held_result then redis.call('HDEL', ctx.run, xf(seq, 'held')) end
local action = tonumber(aid)
if new_status == 'QUEUED' then
  redis.call('HSET', ctx.run, 'updatedAt', ctx.now)
  local attempt = tonumber(expected_attempt) + 1
  redis.call('HSET', ctx.run, xf(seq, 's'), 'QUEUED', xf(seq, 'n'), attempt, xf(seq, 'e'), error_text)
  if is_latest(ctx, aid, seq) then
    redis.call('HSET', ctx.run, af(aid, 's'), 'QUEUED', af(aid, 'n'), attempt, af(aid, 'e'), error_text)
  end
  add_timer(ctx, timer_member(ctx, 'enq', seq, attempt), ctx.now + tonumber(retry_delay_ms))
  hist(ctx, { event = 'RETRY_SCHEDULED', action = action, seq = tonumber(seq),
    attempt = attempt, error = error_text, delayMs = tonumber(retry_delay_ms) })
else
  -- The execution ends (the guard saw it open): one write for it (its output too: the
  -- action's output is its latest execution's) and, when it is its action's latest, for
  -- the action. What only an open execution needs (its lease's worker and secret, an empty
  -- error) is dropped: a run keeps every execution, so each field counts.
  local fields = { xf(seq, 's'), new_status, xf(seq, 'o'), output_json, xf(seq, 't1'), ctx.now,
    'updatedAt', ctx.now }
  local dropped = { xf(seq, 'w'), xf(seq, 'k') }
  if error_text == '' then
    table.insert(dropped, xf(seq, 'e'))
  else
    table.insert(fields, xf(seq, 'e'))
    table.insert(fields, error_text)
  end
  local latest = is_latest(ctx, aid, seq)
  if latest then
    table.insert(fields, af(aid, 's'))
    table.insert(fields, new_status)
    if new_status == 'FAILED' then
      table.insert(fields, af(aid, 'e'))
      table.insert(fields, error_text)
    end
  end
  redis.call('HSET', ctx.run, unpack(fields))
  redis.call('HDEL', ctx.run, unpack(dropped))
  if latest and new_status ~= 'FAILED' then redis.call('HDEL', ctx.run, af(aid, 'e')) end
  if OPEN[expected_status] then count_active(ctx, -1) end
  if awaited_event then redis.call('LREM', ctx.waiters, 1, seq .. '|' .. awaited_event) end
  hist(ctx, { event = new_status, action = action, seq = tonumber(seq), branch = branch,
    error = error_text })
end
apply_ops(ctx, 22)
if fail_reason ~= '' then finish_run(ctx, 'FAILED', fail_reason) else settle(ctx) end
if #ctx.leased > 0 and redis.call('HGET', ctx.run, 'status') == 'RUNNING' then
  local reply = { 'ok' }
  for _, leased_seq in ipairs(ctx.leased) do table.insert(reply, leased_seq) end
  return done(ctx, reply)
end
return done(ctx, 'ok')
