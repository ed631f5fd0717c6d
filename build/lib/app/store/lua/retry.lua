-- retry.lua: a FAILED or TERMINATED run goes on from what failed or was interrupted, with
-- fresh attempts; everything that completed is kept (app/engine/repair.py plans it).
-- KEYS[1] run hash, [2] history list, [3] partition timers zset, [4] events list,
--     [5] waiters list, [6] held set, [7..] queues named by the ops and the for-eaches
-- ARGV[1] flow id, [2] partition, [3] notify channel, [4] retention seconds,
--     [5] the run's revision the engine planned from: if it has changed since ("moved"),
--         nothing happens,
--     [6] who asks (the principal's name), written as ``by`` in the history,
--     [7] reason to fail the run again at once, or "" (a step planned again failed at once),
--     [8] JSON: {"replaced": [seq, ...], "actions": [id, ...], "forEach": [{"seq": fe,
--         "key": KEYS index of its body's queue (0: a sub-workflow body), "name": the body's
--         queue name or workflow, "pollTimeoutMs": n, "concurrency": n}, ...]}
--         ``replaced``: the executions the ops of ARGV[9..] start afresh; ``forEach``: the
--         for-each executions that go on, their FAILED items started again (new executions
--         of the same index and input) and their items not started yet after them,
--     [9..] ops (see apply_ops): the new executions, each at its first attempt
-- Returns "ok", "missing", "moved", or the run's status when it is neither FAILED nor
-- TERMINATED (nothing happens then).
-- Raises, changing nothing, when a queue of KEYS[7..] is not a list (see check_queues).
local ctx = run_context()
local expected_rev, by, fail_reason = ARGV[5], ARGV[6], ARGV[7]
local plan = cjson.decode(ARGV[8])
local status, rev = unpack(redis.call('HMGET', ctx.run, 'status', 'rev'))
if status == false then return 'missing' end
if status ~= 'FAILED' and status ~= 'TERMINATED' then return status end
if rev ~= expected_rev then return 'moved' end
check_queues(7)

-- The one place this script changes the run's status: it runs again, and keeps its keys.
local function reopen_run()
  redis.call('HSET', ctx.run, 'status', 'RUNNING', 'reason', '', 'updatedAt', ctx.now)
  redis.call('HDEL', ctx.run, 'finishedAt')
  ix_move_status(ctx, ctx.flow, status, 'RUNNING')
  if ix_state(ctx) then redis.call('ZREM', ctx.ix.k .. 'e', ctx.flow) end
  for _, key in ipairs({ ctx.run, ctx.hist, ctx.events, ctx.waiters, ctx.held }) do
    redis.call('PERSIST', key)
  end
end

-- An execution that a new one replaces stays as it ended (FAILED); what it held of the run
-- goes to its replacement: a join that had fired fires again, an event a wait had received
-- is buffered again for the new wait.
local function replace(seq)
  local fields = redis.call('HMGET', ctx.run, xf(seq, 'a'), xf(seq, 'jon'), xf(seq, 'evn'),
    xf(seq, 'evd'))
  if fields[2] then redis.call('HDEL', ctx.run, af(fields[1], 'jf')) end
  if fields[3] and fields[4] then
    redis.call('LPUSH', ctx.events, cjson.encode({ n = fields[3], d = fields[4] }))
  end
  redis.call('HDEL', ctx.run, xf(seq, 'cl'))
end

-- A for-each goes on: WAITING again, its FAILED items started again as new items (the old
-- ones keep their record as x:<seq>:rp instead of x:<seq>:p, out of the for-each's output),
-- then items not started yet, up to its concurrency. Ready at once if nothing is left.
local function reopen_for_each(spec)
  local fe = spec.seq
  local aid = redis.call('HGET', ctx.run, xf(fe, 'a'))
  redis.call('HSET', ctx.run, xf(fe, 's'), 'WAITING', xf(fe, 'n'), 1)
  redis.call('HDEL', ctx.run, xf(fe, 'ff'), xf(fe, 't1'), xf(fe, 'e'), xf(fe, 'o'), xf(fe, 'cl'))
  if is_latest(ctx, aid, fe) then
    redis.call('HSET', ctx.run, af(aid, 's'), 'WAITING')
    redis.call('HDEL', ctx.run, af(aid, 'e'))
  end
  count_active(ctx, 1)
  local key = nil
  if spec.key > 0 then key = KEYS[spec.key] end
  local workflow = redis.call('HGET', ctx.run, xf(fe, 'fw')) or nil
  local again, ended = {}, 0
  local last = tonumber(redis.call('HGET', ctx.run, 'seq'))
  for seq = 1, last do
    if redis.call('HGET', ctx.run, xf(seq, 'p')) == tostring(fe) then
      local item_status = redis.call('HGET', ctx.run, xf(seq, 's'))
      if item_status == 'FAILED' then
        again[#again + 1] = seq
      elseif TERMINAL[item_status] then
        ended = ended + 1
      end
    end
  end
  redis.call('HSET', ctx.run, xf(fe, 'fd'), ended)
  for _, seq in ipairs(again) do
    local index, input = unpack(redis.call('HMGET', ctx.run, xf(seq, 'i'), xf(seq, 'in')))
    redis.call('HSET', ctx.run, xf(seq, 'rp'), fe)
    redis.call('HDEL', ctx.run, xf(seq, 'p'), xf(seq, 'cl'))
    start_item(ctx, fe, aid, index .. ' ' .. input, key, spec.name, spec.pollTimeoutMs, workflow)
  end
  local total = tonumber(redis.call('HGET', ctx.run, xf(fe, 'ft')))
  local next_item = tonumber(redis.call('HGET', ctx.run, xf(fe, 'fn')))
  local open = #again
  while open < spec.concurrency and next_item < total do
    local field = xf(fe, 'pi:' .. next_item)
    local line = redis.call('HGET', ctx.run, field)
    redis.call('HDEL', ctx.run, field)
    next_item = next_item + 1
    redis.call('HSET', ctx.run, xf(fe, 'fn'), next_item)
    start_item(ctx, fe, aid, line, key, spec.name, spec.pollTimeoutMs, workflow)
    open = open + 1
  end
  if open == 0 and ended >= total then for_each_ready(ctx, fe, aid) end
end

reopen_run()
-- Every wait and every held result belonged to executions that ended with the run.
redis.call('DEL', ctx.waiters, ctx.held)
for _, seq in ipairs(plan.replaced) do replace(seq) end
-- cjson writes an empty table as {}: an empty list is left out of the history instead.
local function list_or_nil(list)
  if #list == 0 then return nil end
  return list
end
local reopened = {}
for _, spec in ipairs(plan.forEach) do reopened[#reopened + 1] = spec.seq end
hist(ctx, { event = 'RUN_RETRIED', by = by, actions = list_or_nil(plan.actions),
  replaced = list_or_nil(plan.replaced), forEach = list_or_nil(reopened) })
for _, spec in ipairs(plan.forEach) do reopen_for_each(spec) end
apply_ops(ctx, 9)
if fail_reason ~= '' then finish_run(ctx, 'FAILED', fail_reason) else settle(ctx) end
return done(ctx, 'ok')
