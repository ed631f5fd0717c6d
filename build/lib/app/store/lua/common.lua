-- common.lua: helpers shared by every script that changes a run. The loader puts this text
-- in front of each such script, so each one is still a single atomic EVAL.
--
-- A run is one hash (``ctx.run``) holding:
--   id, name, version, status, reason, input, createdAt, updatedAt, finishedAt,
--   rev (revision: up by one with each script that changes the run),
--   seq (last execution number), active (executions queued, running or waiting),
--   joins (comma list of join action ids still waiting),
--   output (the run's output JSON when a terminate action gave one),
--   x:<seq>:a|s|n|in|q|w|k|e|ev|evn|evd|jon|held|tf  one execution of an action
--                                     (action id, status, attempt or generation, input,
--                                      queue name, worker, lease secret, error, awaited
--                                      event, event name and data received, join ids,
--                                      held outcome, failed attempts at handling its timers)
--   x:<seq>:o|t0|t1                   that execution's output JSON (once it ends with one:
--                                      COMPLETED, or FAILED's {"error": ...}), ms when it was
--                                      created and when it ended
--   a:<id>:s|n|e|x|c|jw|jf            the latest execution of action <id> (status,
--                                      attempts, error, its seq, the number of executions of
--                                      <id> so far, waiting join seq, join fired); its output
--                                      is that execution's: x:<a:<id>:x>:o (kept once)
--   v:<name>                          a workflow variable's JSON value
--   ix                                the run's search state (JSON: see ix_state below)
--   lim                               the run's limit of executions (ORCHY_MAX_RUN_EXECUTIONS),
--                                      written at its start; none for runs started before
--   a:<id>:jp                         the seq a while's pass started at, for join <id> in its
--                                      loop: the join waits for executions after it
--   x:<seq>:ck|cev                    a correlated wait's key, and the token of the
--                                      correlated event it received (correlation.lua)
--   x:<seq>:cw|cid|cs|co|ce           a sub-workflow execution: the child's workflow name,
--                                      the child run's id (once started), and once the
--                                      child has ended its status, output JSON and reason
--   parent, pseq, paid, depth         a child run: its parent run's id, the seq and action
--                                      id of the parent's execution waiting for it, and how
--                                      many parents it has (a run started by a client: none)
--   x:<seq>:p|i                       a for-each item: the for-each's seq, the item's index
--   x:<fe>:ft|fd|fn|fm|ff|pi:<k>      a for-each execution: items in all, items ended, the
--                                      ordinal of the next item to start, "fail" or
--                                      "collect", the seq of the first failed item ("fail"),
--                                      the k-th item not started yet ("<index> <payload>")
--   x:<fe>:fw                         a for-each whose body is a sub-workflow: its workflow
--                                      (each item is then a sub-workflow execution, x:<seq>:cw)
--   x:<seq>:cl                        an execution closed (FAILED) because the run ended while
--                                      it was open: retry.lua starts it afresh
--   x:<seq>:rp                        a FAILED for-each item that a retry started again as a
--                                      new item: the for-each's seq (its x:<seq>:p before)
--   rerunOf                           a rerun: the id of the run it reruns
-- A timer member is "<kind>|<flowId>|<seq>|<n>", scored by its due time in ms.
-- A queue entry is "<flowId>.<seq>.<attempt>"; the task id a lease hands out adds the lease
-- secret, "<flowId>.<seq>.<attempt>.<secret>", which only the lease's holder is told: it is
-- kept in x:<seq>:k and never written to the history.

-- Raises, before a script writes anything, when a queue key from KEYS[first] on holds
-- something other than a list: Redis does not undo what a script wrote before an error, so a
-- transition either finds every queue it pushes to usable or changes nothing.
local function check_queues(first)
  local checked = {}
  for i = first, #KEYS do
    local key = KEYS[i]
    if not checked[key] then
      local kind = redis.call('TYPE', key)['ok']
      if kind ~= 'none' and kind ~= 'list' then
        error('queue key ' .. key .. ' holds a ' .. kind .. ', not a list', 0)
      end
      checked[key] = true
    end
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local TERMINAL = { COMPLETED = true, FAILED = true, TERMINATED = true }
local OPEN = { QUEUED = true, RUNNING = true, WAITING = true }

local function xf(seq, field) return 'x:' .. seq .. ':' .. field end
local function af(aid, field) return 'a:' .. aid .. ':' .. field end
-- Lua's ``unpack`` fails past about 8,000 values (the C stack), so a command whose values
-- come from a table that grows with the run (a fan-out's history entries) is sent in chunks.
-- Only for commands whose effect is the same in one call or several (RPUSH, HSET, SADD).
local UNPACK_CHUNK = 1000
local function call_chunked(command, key, values)
  for first = 1, #values, UNPACK_CHUNK do
    local last = math.min(first + UNPACK_CHUNK - 1, #values)
    redis.call(command, key, unpack(values, first, last))
  end
end

-- Every change of a run writes history, so this is also where the run's revision goes up
-- (once per script): a server that planned from a copy of the run checks it (transition.lua).
-- A script's entries are gathered and written by ``flush`` with one RPUSH, so that the AOF
-- and replicas receive one command for them.
local function hist(ctx, entry, ...)
  if not ctx.revised then
    redis.call('HINCRBY', ctx.run, 'rev', 1)
    ctx.revised = true
  end
  local entries = ctx.entries
  if not entries then
    entries = {}
    ctx.entries = entries
  end
  entry.at = ctx.now
  entries[#entries + 1] = cjson.encode(entry)
  for _, extra in ipairs({ ... }) do
    extra.at = ctx.now
    entries[#entries + 1] = cjson.encode(extra)
  end
end

-- The run's count of open executions changes by ``by``; the sum of a script's changes is
-- written by ``flush`` (a task that ends and leases the next one changes it by 0).
local function count_active(ctx, by)
  ctx.active_change = (ctx.active_change or 0) + by
end

-- Writes what the script gathered: its history entries and its change of the open count.
local function flush(ctx)
  if ctx.entries then
    call_chunked('RPUSH', ctx.hist, ctx.entries)
    ctx.entries = nil
  end
  if ctx.active_change and ctx.active_change ~= 0 then
    redis.call('HINCRBY', ctx.run, 'active', ctx.active_change)
  end
  ctx.active_change = nil
end

-- Every run-changing script returns through here.
local function done(ctx, result)
  flush(ctx)
  return result
end

local function open_count(ctx)
  flush(ctx)
  return tonumber(redis.call('HGET', ctx.run, 'active'))
end

-- Adds a timer and, when it becomes the earliest one of the partition, wakes the sweepers.
local function add_timer(ctx, member, due)
  local first = redis.call('ZRANGE', ctx.timers, 0, 0, 'WITHSCORES')
  redis.call('ZADD', ctx.timers, due, member)
  if first[2] == nil or tonumber(first[2]) > due then
    redis.call('PUBLISH', ctx.channel, 't|' .. ctx.partition .. '|' .. due)
  end
end

local function timer_member(ctx, kind, seq, n)
  return kind .. '|' .. ctx.flow .. '|' .. seq .. '|' .. n
end

-- Execution ``seq`` waits for a run of ``workflow``: the spawn timer, due now, starts that
-- run (the engine's children.py), wherever its id puts it; when it ends, its "cend" timer
-- tells this run, and if this run ends first a "kill" timer ends the child.
local function spawn_child(ctx, seq, workflow)
  redis.call('HSET', ctx.run, xf(seq, 'cw'), workflow)
  add_timer(ctx, timer_member(ctx, 'spawn', seq, 1), ctx.now)
end

local function is_latest(ctx, aid, seq)
  return redis.call('HGET', ctx.run, af(aid, 'x')) == tostring(seq)
end

-- A new execution of action ``aid``; ``more`` lists further field names and values of its
-- own (``more(seq)`` returns them, since they name the seq).
local function new_exec(ctx, aid, status, n, more)
  local seq = tonumber(redis.call('HGET', ctx.run, 'seq') or '0') + 1
  local fields = { 'seq', seq, xf(seq, 'a'), aid, xf(seq, 's'), status, xf(seq, 'n'), n,
    af(aid, 's'), status, af(aid, 'n'), n, af(aid, 'x'), seq }
  if more then
    for _, value in ipairs(more(seq)) do table.insert(fields, value) end
  end
  table.insert(fields, xf(seq, 't0'))
  table.insert(fields, ctx.now)
  if TERMINAL[status] then
    table.insert(fields, xf(seq, 't1'))
    table.insert(fields, ctx.now)
  end
  redis.call('HSET', ctx.run, unpack(fields))
  redis.call('HINCRBY', ctx.run, af(aid, 'c'), 1)
  if OPEN[status] then count_active(ctx, 1) end
  return seq
end

-- Sets an execution's status (and its action's, when it is the latest execution); an
-- execution that ends gets its end time.
local function set_exec_status(ctx, seq, status)
  local aid = redis.call('HGET', ctx.run, xf(seq, 'a'))
  local was = redis.call('HGET', ctx.run, xf(seq, 's'))
  redis.call('HSET', ctx.run, xf(seq, 's'), status)
  if TERMINAL[status] then redis.call('HSET', ctx.run, xf(seq, 't1'), ctx.now) end
  if is_latest(ctx, aid, seq) then redis.call('HSET', ctx.run, af(aid, 's'), status) end
  if OPEN[was] and not OPEN[status] then count_active(ctx, -1) end
  return aid
end

-- The run's first buffered event called ``name``, removed from the buffer; nil if none.
local function take_event(ctx, name)
  local entries = redis.call('LRANGE', ctx.events, 0, -1)
  for _, entry in ipairs(entries) do
    local decoded = cjson.decode(entry)
    if decoded.n == name then
      redis.call('LREM', ctx.events, 1, entry)
      return decoded.d
    end
  end
  return nil
end

-- A wait execution receives its event: the step timer completes it with the data.
local function consume_event(ctx, seq, name, data)
  redis.call('HSET', ctx.run, xf(seq, 'evn'), name, xf(seq, 'evd'), data, xf(seq, 'n'), 2)
  redis.call('ZREM', ctx.timers, timer_member(ctx, 'wto', seq, 1))
  add_timer(ctx, timer_member(ctx, 'step', seq, 2), ctx.now)
end

-- A correlated wait (its key ``key``) is registered in the index of (event, key) by its
-- "creg" timer, due now (app/engine/correlation.py): the index is in another slot.
local function correlate(ctx, seq, key)
  redis.call('HSET', ctx.run, xf(seq, 'ck'), key)
  add_timer(ctx, timer_member(ctx, 'creg', seq, 1), ctx.now)
end

-- The fields recording what a system action's execution received (``input``, JSON, or ""
-- for nothing): a user action's input is its payload, recorded with its queue.
local function received(input)
  if input == '' then return nil end
  return function(seq) return { xf(seq, 'in'), input } end
end

-- The next of the lease secrets the caller passed (``ctx.secrets``: 32 hex digits each, end
-- to end), for the next task this script leases.
local function next_secret(ctx)
  local at = ctx.secrets_used or 0
  ctx.secrets_used = at + 1
  local secret = string.sub(ctx.secrets, at * 32 + 1, at * 32 + 32)
  if #secret ~= 32 then error('not enough lease secrets for the tasks leased') end
  return secret
end

-- Leases execution ``seq`` (queued, attempt ``attempt``) to ``worker`` for ``lease_ms``: its
-- lease timer starts and it gets a fresh secret. Returns the task id; a for-each ``item``'s
-- ends with ".i" (app/engine/ids.py ITEM_SUFFIX), so that its result is planned from its
-- execution's fields rather than from the whole run.
local function lease(ctx, seq, attempt, worker, lease_ms, item)
  local secret = next_secret(ctx)
  redis.call('HSET', ctx.run, xf(seq, 'w'), worker, xf(seq, 'k'), secret, 'updatedAt', ctx.now)
  add_timer(ctx, timer_member(ctx, 'lease', seq, attempt), ctx.now + lease_ms)
  local task_id = ctx.flow .. '.' .. seq .. '.' .. attempt .. '.' .. secret
  if item then return task_id .. '.i' end
  return task_id
end

-- Puts attempt ``attempt`` of execution ``seq`` on the queue ``key`` (action ``name``) and
-- wakes the polls; with ``poll_timeout_ms`` > 0 it fails if no poll has taken it by then.
local function enqueue(ctx, key, name, seq, attempt, poll_timeout_ms)
  redis.call('RPUSH', key, ctx.flow .. '.' .. seq .. '.' .. attempt)
  -- One notification per queue wakes every poll of it: a fan-out sends one, not 10,000.
  ctx.announced = ctx.announced or {}
  if not ctx.announced[name] then
    redis.call('PUBLISH', ctx.channel, 'q|' .. ctx.partition .. '|' .. name)
    ctx.announced[name] = true
  end
  if poll_timeout_ms > 0 then
    add_timer(ctx, timer_member(ctx, 'pto', seq, attempt), ctx.now + poll_timeout_ms)
  end
end

-- Marks every open execution FAILED with ``reason`` (the run has ended without them).
local function close_open_execs(ctx, reason)
  local last = tonumber(redis.call('HGET', ctx.run, 'seq') or '0')
  for seq = 1, last do
    if OPEN[redis.call('HGET', ctx.run, xf(seq, 's'))] then
      local aid = set_exec_status(ctx, seq, 'FAILED')
      redis.call('HSET', ctx.run, xf(seq, 'e'), reason, xf(seq, 'cl'), 1)
      redis.call('HDEL', ctx.run, af(aid, 'jw'))
      if is_latest(ctx, aid, seq) then redis.call('HSET', ctx.run, af(aid, 'e'), reason) end
      -- A sub-workflow's child (started or about to be) ends with it.
      if redis.call('HEXISTS', ctx.run, xf(seq, 'cw')) == 1 then
        add_timer(ctx, timer_member(ctx, 'kill', seq, 1), ctx.now)
      end
    end
  end
  ctx.active_change = nil
  redis.call('HSET', ctx.run, 'active', 0, 'joins', '')
end

-- Search indexes (app/store/keys.py names them, app/store/search.py reads them). A run
-- started with an "index" op keeps in its ``ix`` field a JSON object: ``k``, its partition's
-- index prefix; ``m``, the longest value (bytes) that is indexed; ``v``, each searchable path
-- ("input.email", "vars.orderId") -> the value it is indexed under ("" for none). Every
-- index is a zset scored by the run's start, but ``<k>e`` (ended runs, by their end); a run
-- without ``ix`` (started before indexes were kept) is in none of them.
local function ix_state(ctx)
  if ctx.ix == nil then
    local raw = redis.call('HGET', ctx.run, 'ix')
    if raw then ctx.ix = cjson.decode(raw) else ctx.ix = false end
  end
  return ctx.ix
end

-- The value a JSON text is indexed under: a string's text, a number's or boolean's JSON;
-- "" (not indexed) for null, objects, arrays and values longer than ``ix.m`` bytes.
local function ix_token(ix, json)
  local first = string.sub(json, 1, 1)
  local token = json
  if first == '"' then
    token = cjson.decode(json)
  elseif first == '{' or first == '[' or json == 'null' then
    return ''
  end
  if #token > tonumber(ix.m) then return '' end
  return token
end

local function ix_value_key(ix, path, token)
  return ix.k .. 'v:' .. path .. ':' .. token
end

-- The run (``flow``) moves from the status index of ``from`` (nil: none) to that of ``to``.
local function ix_move_status(ctx, flow, from, to)
  local ix = ix_state(ctx)
  if not ix then return end
  if from then redis.call('ZREM', ix.k .. 's:' .. from, flow) end
  redis.call('ZADD', ix.k .. 's:' .. to, redis.call('HGET', ctx.run, 'createdAt'), flow)
end

-- An "index" op, first of a run's start: ``payload`` is the run's ``ix`` (see above).
local function ix_start(ctx, payload)
  local ix = cjson.decode(payload)
  ctx.ix = ix
  redis.call('HSET', ctx.run, 'ix', payload)
  local run = redis.call('HMGET', ctx.run, 'createdAt', 'name', 'version', 'status')
  redis.call('ZADD', ix.k .. 'wv:' .. run[3] .. ':' .. run[2], run[1], ctx.flow)
  redis.call('ZADD', ix.k .. 's:' .. run[4], run[1], ctx.flow)
  for path, token in pairs(ix.v) do
    if token ~= '' then redis.call('ZADD', ix_value_key(ix, path, token), run[1], ctx.flow) end
  end
end

-- Variable ``name`` now holds ``json``: when it is searchable, its entry moves.
local function ix_var(ctx, name, json)
  local ix = ix_state(ctx)
  if not ix then return end
  local path = 'vars.' .. name
  local old = ix.v[path]
  if old == nil then return end
  local new = ix_token(ix, json)
  if new == old then return end
  if old ~= '' then redis.call('ZREM', ix_value_key(ix, path, old), ctx.flow) end
  if new ~= '' then
    redis.call('ZADD', ix_value_key(ix, path, new), redis.call('HGET', ctx.run, 'createdAt'),
      ctx.flow)
  end
  ix.v[path] = new
  redis.call('HSET', ctx.run, 'ix', cjson.encode(ix))
end

-- Removes run ``flow`` (its hash ``ctx.run``, still there) from every index it is in but
-- the all-runs and by-name ones (start.lua and search_prune.lua remove it from those).
local function ix_remove(ctx, flow)
  local ix = ix_state(ctx)
  if not ix then return end
  local run = redis.call('HMGET', ctx.run, 'status', 'name', 'version')
  if run[1] then redis.call('ZREM', ix.k .. 's:' .. run[1], flow) end
  if run[2] then redis.call('ZREM', ix.k .. 'wv:' .. run[3] .. ':' .. run[2], flow) end
  redis.call('ZREM', ix.k .. 'e', flow)
  for path, token in pairs(ix.v) do
    if token ~= '' then redis.call('ZREM', ix_value_key(ix, path, token), flow) end
  end
end

-- Ends the run with ``status`` and ``reason``, once per script. Open executions are closed
-- unless it completes on its own (nothing is open then); ``ending`` is the terminate action
-- that ends it, if one does, whatever is still open: the history names it, and ``ctx.by``
-- the principal that ended it, if one did (terminate.lua).
local function finish_run(ctx, status, reason, ending)
  if ctx.finished then return end
  ctx.finished = true
  if status ~= 'COMPLETED' or ending then close_open_execs(ctx, reason) end
  local was = redis.call('HGET', ctx.run, 'status')
  redis.call('HSET', ctx.run, 'status', status, 'reason', reason, 'updatedAt', ctx.now,
    'finishedAt', ctx.now)
  hist(ctx, { event = 'RUN_' .. status, reason = reason, action = ending, by = ctx.by })
  ix_move_status(ctx, ctx.flow, was, status)
  if ix_state(ctx) then redis.call('ZADD', ctx.ix.k .. 'e', ctx.now, ctx.flow) end
  -- A child run tells its parent, from its own partition, through its "cend" timer.
  if redis.call('HEXISTS', ctx.run, 'parent') == 1 then
    add_timer(ctx, timer_member(ctx, 'cend', 0, 1), ctx.now)
  end
  -- For the servers' logs (app/engine/run_log.py).
  redis.call('PUBLISH', ctx.channel, 'f|' .. ctx.partition .. '|' .. ctx.flow .. '|' .. status
    .. '|' .. reason)
  -- Written now, so that the history list exists when it is given its expiry.
  flush(ctx)
  for _, key in ipairs({ ctx.run, ctx.hist, ctx.events, ctx.waiters, ctx.held }) do
    redis.call('EXPIRE', key, ctx.retention)
  end
end

-- The ops that create an execution (a join only when it is not waiting or done already).
local CREATES_EXEC = { user = true, done = true, failed = true, sleep = true, wait = true,
  join = true }
CREATES_EXEC.sub = true  -- a subWorkflow's execution

-- True when the op would create an execution past the run's limit (``lim``; none in runs
-- started before it was written).
local function past_limit(ctx, kind, aid)
  if not CREATES_EXEC[kind] then return false end
  if ctx.lim == nil then ctx.lim = tonumber(redis.call('HGET', ctx.run, 'lim')) or false end
  if not ctx.lim or tonumber(redis.call('HGET', ctx.run, 'seq') or '0') < ctx.lim then
    return false
  end
  return kind ~= 'join' or (redis.call('HEXISTS', ctx.run, af(aid, 'jf')) == 0
    and redis.call('HEXISTS', ctx.run, af(aid, 'jw')) == 0)
end

-- For-each (app/actions/for_each.py): the items of a for-each execution ``fe`` are
-- executions of the for-each's action (never its latest: a:<id>:* stays the for-each's),
-- queued under the body's action name. At most "concurrency" of them are open at once: each
-- that ends starts the next one not started yet.

-- Starts one item: ``line`` is "<index> <payload JSON>". With ``workflow`` (a sub-workflow
-- body) the item is a sub-workflow execution waiting for its child run (see spawn_child):
-- its payload is the child's request; otherwise it is queued on ``key`` under ``name``.
local function start_item(ctx, fe, aid, line, key, name, poll_timeout_ms, workflow)
  local index, payload = string.match(line, '^(%d+) (.*)$')
  local seq = redis.call('HINCRBY', ctx.run, 'seq', 1)
  -- An execution of the for-each's action, counted with its creation time as new_exec's are.
  redis.call('HINCRBY', ctx.run, af(aid, 'c'), 1)
  redis.call('HSET', ctx.run, xf(seq, 't0'), ctx.now)
  if workflow then
    redis.call('HSET', ctx.run, xf(seq, 'a'), aid, xf(seq, 's'), 'WAITING', xf(seq, 'n'), 1,
      xf(seq, 'in'), payload, xf(seq, 'p'), fe, xf(seq, 'i'), index)
    count_active(ctx, 1)
    spawn_child(ctx, seq, workflow)
    hist(ctx, { event = 'WAITING', action = tonumber(aid), seq = seq, workflow = workflow,
      item = tonumber(index) })
    return
  end
  redis.call('HSET', ctx.run, xf(seq, 'a'), aid, xf(seq, 's'), 'QUEUED', xf(seq, 'n'), 1,
    xf(seq, 'in'), payload, xf(seq, 'q'), name, xf(seq, 'p'), fe, xf(seq, 'i'), index)
  count_active(ctx, 1)
  enqueue(ctx, key, name, seq, 1, poll_timeout_ms)
  hist(ctx, { event = 'QUEUED', action = tonumber(aid), seq = seq, name = name,
    item = tonumber(index) })
end

-- Items count toward the run's limit of executions (see past_limit): when ``count`` more
-- would pass it, the run FAILS (and the op creates nothing). Returns true when it did.
local function items_past_limit(ctx, count)
  if ctx.lim == nil then ctx.lim = tonumber(redis.call('HGET', ctx.run, 'lim')) or false end
  if not ctx.lim or tonumber(redis.call('HGET', ctx.run, 'seq') or '0') + count <= ctx.lim then
    return false
  end
  finish_run(ctx, 'FAILED', 'run reached its limit of ' .. ctx.lim
    .. ' executions (ORCHY_MAX_RUN_EXECUTIONS)')
  return true
end

-- The for-each is over (every item ended, or the first failed with "fail"): its step timer
-- ends it (Engine._finish_waiting builds its output), as a join's does.
local function for_each_ready(ctx, fe, aid)
  redis.call('HSET', ctx.run, xf(fe, 'n'), 2)
  add_timer(ctx, timer_member(ctx, 'step', fe, 2), ctx.now)
  hist(ctx, { event = 'FOR_EACH_READY', action = tonumber(aid), seq = tonumber(fe) })
end

-- An "each" op: the for-each execution, and its first items. ``payload``'s first line is
-- "<concurrency> <fail|collect>", each further line an item, "<index> <payload JSON>" (JSON
-- never holds a raw newline); the items not started yet are kept as x:<fe>:pi:<k>.
-- ``workflow``: a sub-workflow body's (see start_item), kept as x:<fe>:fw; nil for a user body.
-- Returns false when the run ended instead (its limit of executions).
local function start_for_each(ctx, aid, payload, key, name, poll_timeout_ms, input, workflow)
  local concurrency, mode, items = string.match(payload, '^(%d+) (%a+)\n?(.*)$')
  concurrency = tonumber(concurrency)
  local _, lines = string.gsub(items, '\n', '\n')
  if items ~= '' then lines = lines + 1 end
  if items_past_limit(ctx, 1 + math.min(lines, concurrency)) then return false end
  local fe = new_exec(ctx, aid, 'WAITING', 1, received(input))
  hist(ctx, { event = 'WAITING', action = tonumber(aid), seq = fe, concurrency = concurrency,
    onItemFailure = mode })
  local pending, total = {}, 0
  for line in string.gmatch(items, '[^\n]+') do
    if total < concurrency then
      start_item(ctx, fe, aid, line, key, name, poll_timeout_ms, workflow)
    else
      pending[#pending + 1] = xf(fe, 'pi:' .. total)
      pending[#pending + 1] = line
    end
    total = total + 1
  end
  call_chunked('HSET', ctx.run, pending)
  redis.call('HSET', ctx.run, xf(fe, 'ft'), total, xf(fe, 'fd'), 0,
    xf(fe, 'fn'), math.min(total, concurrency), xf(fe, 'fm'), mode)
  if workflow then redis.call('HSET', ctx.run, xf(fe, 'fw'), workflow) end
  if total == 0 then for_each_ready(ctx, fe, aid) end
  return true
end

-- An "item" op: item ``seq`` has ended (its transition wrote its status and x:<seq>:o). It is
-- counted, and the next item starts on ``key`` unless the for-each is over or failing.
local function item_ended(ctx, seq, key, name, poll_timeout_ms)
  local item = redis.call('HMGET', ctx.run, xf(seq, 'p'), xf(seq, 's'), xf(seq, 'a'))
  local fe, status, aid = item[1], item[2], item[3]
  if not fe or OPEN[status] then return end
  local state = redis.call('HMGET', ctx.run, xf(fe, 's'), xf(fe, 'ft'), xf(fe, 'fn'),
    xf(fe, 'fm'), xf(fe, 'ff'), xf(fe, 'fw'))
  local ended = redis.call('HINCRBY', ctx.run, xf(fe, 'fd'), 1)
  -- Over, or failing ("fail"): items still running may finish, nothing new starts.
  if state[1] ~= 'WAITING' or state[5] then return end
  if status == 'FAILED' and state[4] == 'fail' then
    redis.call('HSET', ctx.run, xf(fe, 'ff'), seq)
    for_each_ready(ctx, fe, aid)
    return
  end
  local total, next_item = tonumber(state[2]), tonumber(state[3])
  if ended >= total then
    for_each_ready(ctx, fe, aid)
  elseif next_item < total and not items_past_limit(ctx, 1) then
    local field = xf(fe, 'pi:' .. next_item)
    local line = redis.call('HGET', ctx.run, field)
    redis.call('HDEL', ctx.run, field)
    redis.call('HSET', ctx.run, xf(fe, 'fn'), next_item + 1)
    start_item(ctx, fe, aid, line, key, name, poll_timeout_ms, state[6] or nil)
  end
end

-- Applies the ops that the engine planned, read from ARGV[i...]:
-- a count, then seven values per op: kind, action id, name, payload, number, KEYS index,
-- and the input a system action's execution received (or "").
-- A "user" op's number: > 0 in a context with a ``worker``, the lease ms of a task leased
-- to that worker at once instead of queued (its seq is appended to ``ctx.leased``, and it
-- takes the next of ``ctx.secrets``); < 0, minus the poll timeout ms of a queued task;
-- otherwise a queued task with no poll timeout.
-- A "sub" op (a subWorkflow) waits for a child run (see spawn_child); a "child" op, first
-- in a child run's start, records its parent (see the header); a "rerun" op, first in a
-- rerun's start, records the run it reruns.
-- An "each" op (a for-each) and an "item" op (a for-each item ended; payload: its seq) queue
-- items on their KEYS index under ``name``; their number is minus the poll timeout ms, or 0.
-- A "subeach" op is an "each" op whose items are child runs of the workflow ``name``.
-- An "end" op (a terminate action, after its "done" op) ends the run at once: its name is
-- the run's status (COMPLETED or FAILED), its payload the reason, and its input the run's
-- output JSON, or "" for the usual output; every execution still open is closed as
-- terminate.lua closes them, and any later op is skipped (the planner sends none).
-- An op that would create an execution past the run's limit FAILS the run instead, and
-- any later op is skipped. A "limit" op (at start) writes that limit, its number. A "loop"
-- op (a while starting a pass of its body) lets each join of its payload (comma list of
-- ids) fire again, once the actions it joins on have run in this pass.
local function apply_ops(ctx, i)
  local count = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, count do
    local kind, aid, name, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local number, key_index = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
    local input = ARGV[i + 6]
    local action = tonumber(aid)
    i = i + 7
    if past_limit(ctx, kind, aid) then
      finish_run(ctx, 'FAILED', 'run reached its limit of ' .. ctx.lim
        .. ' executions (ORCHY_MAX_RUN_EXECUTIONS)')
      break
    end
    if kind == 'user' and number > 0 and ctx.worker then
      -- Leased at once to the worker whose result led here (``number`` is the lease ms):
      -- the task never waits in its queue.
      local seq = new_exec(ctx, aid, 'RUNNING', 1, function(seq)
        return { xf(seq, 'in'), payload, xf(seq, 'q'), name }
      end)
      lease(ctx, seq, 1, ctx.worker, number)
      hist(ctx, { event = 'QUEUED', action = action, seq = seq, name = name },
        { event = 'RUNNING', action = action, seq = seq, attempt = 1, worker = ctx.worker })
      table.insert(ctx.leased, seq)
    elseif kind == 'user' then
      local seq = new_exec(ctx, aid, 'QUEUED', 1, function(seq)
        return { xf(seq, 'in'), payload, xf(seq, 'q'), name }
      end)
      enqueue(ctx, KEYS[key_index], name, seq, 1, number < 0 and -number or 0)
      hist(ctx, { event = 'QUEUED', action = action, seq = seq, name = name })
    elseif kind == 'done' then
      local seq = new_exec(ctx, aid, 'COMPLETED', 1, received(input))
      redis.call('HSET', ctx.run, xf(seq, 'o'), payload)
      redis.call('HDEL', ctx.run, af(aid, 'e'))
      hist(ctx, { event = 'COMPLETED', action = action, seq = seq, branch = name })
    elseif kind == 'failed' then
      local seq = new_exec(ctx, aid, 'FAILED', 1, received(input))
      redis.call('HSET', ctx.run, af(aid, 'e'), payload, xf(seq, 'e'), payload, xf(seq, 'o'),
        cjson.encode({ error = payload }))
      hist(ctx, { event = 'FAILED', action = action, seq = seq, error = payload })
    elseif kind == 'sleep' then
      local seq = new_exec(ctx, aid, 'WAITING', 1, received(input))
      add_timer(ctx, timer_member(ctx, 'fire', seq, 1), ctx.now + number)
      hist(ctx, { event = 'WAITING', action = action, seq = seq, delayMs = number })
    elseif kind == 'wait' then
      local seq = new_exec(ctx, aid, 'WAITING', 1, received(input))
      redis.call('HSET', ctx.run, xf(seq, 'ev'), name)
      local data = take_event(ctx, name)
      if data then
        consume_event(ctx, seq, name, data)
        hist(ctx, { event = 'EVENT_CONSUMED', action = action, seq = seq, name = name })
      else
        redis.call('RPUSH', ctx.waiters, seq .. '|' .. name)
        if number >= 0 then
          add_timer(ctx, timer_member(ctx, 'wto', seq, 1), ctx.now + number)
        end
        hist(ctx, { event = 'WAITING', action = action, seq = seq, name = name })
        if payload ~= '' then correlate(ctx, seq, payload) end
      end
    elseif kind == 'join' then
      if redis.call('HEXISTS', ctx.run, af(aid, 'jf')) == 1 then
        hist(ctx, { event = 'JOIN_ALREADY_DONE', action = action })
      elseif redis.call('HEXISTS', ctx.run, af(aid, 'jw')) == 1 then
        hist(ctx, { event = 'JOIN_ARRIVAL', action = action })
      else
        local seq = new_exec(ctx, aid, 'WAITING', 1, received(input))
        redis.call('HSET', ctx.run, af(aid, 'jw'), seq, xf(seq, 'jon'), payload)
        local joins = redis.call('HGET', ctx.run, 'joins')
        if joins == false or joins == '' then joins = aid else joins = joins .. ',' .. aid end
        redis.call('HSET', ctx.run, 'joins', joins)
        hist(ctx, { event = 'WAITING', action = action, seq = seq, joinOn = payload })
      end
    elseif kind == 'var' then
      -- A workflow variable's new value (name, payload: its JSON), computed by the engine
      -- from the run at the revision the caller guards (ARGV[19] of transition.lua); input:
      -- the mutation (assign, add, append, removeKey), or "" for an initial value.
      redis.call('HSET', ctx.run, 'v:' .. name, payload)
      ix_var(ctx, name, payload)
      if input ~= '' then
        hist(ctx, { event = 'VAR_SET', action = action, var = name, op = input })
      end
    elseif kind == 'sub' then
      -- A subWorkflow: name is the child's workflow; input its request (the child's
      -- workflow, version and input), which the spawn timer reads.
      local seq = new_exec(ctx, aid, 'WAITING', 1, received(input))
      spawn_child(ctx, seq, name)
      hist(ctx, { event = 'WAITING', action = action, seq = seq, workflow = name })
    elseif kind == 'rerun' then
      -- First op of a rerun's start: name is the run it reruns, payload who asked for it.
      redis.call('HSET', ctx.run, 'rerunOf', name)
      hist(ctx, { event = 'RERUN_OF', flow = name, by = payload })
    elseif kind == 'child' then
      -- First op of a child run's start: name is the parent run, payload the parent's
      -- execution seq, aid its action, number the child's depth.
      redis.call('HSET', ctx.run, 'parent', name, 'pseq', payload, 'paid', aid, 'depth', number)
    elseif kind == 'each' then
      if not start_for_each(ctx, aid, payload, KEYS[key_index], name, -number, input) then
        break
      end
    elseif kind == 'subeach' then
      -- A for-each whose body is a sub-workflow: as "each", name being the children's
      -- workflow; each item's child is started by its spawn timer.
      if not start_for_each(ctx, aid, payload, nil, '', 0, input, name) then break end
    elseif kind == 'item' then
      item_ended(ctx, payload, KEYS[key_index], name, -number)
    elseif kind == 'note' then
      hist(ctx, { event = 'WARNING', action = action, detail = payload })
    elseif kind == 'index' then
      ix_start(ctx, payload)
    elseif kind == 'limit' then
      redis.call('HSET', ctx.run, 'lim', number)
      ctx.lim = number
    elseif kind == 'loop' then
      local since = redis.call('HGET', ctx.run, 'seq')
      for join_id in string.gmatch(payload, '[^,]+') do
        if redis.call('HEXISTS', ctx.run, af(join_id, 'x')) == 1 then  -- else: its first pass
          redis.call('HDEL', ctx.run, af(join_id, 'jf'))
          redis.call('HSET', ctx.run, af(join_id, 'jp'), since)
        end
      end
    elseif kind == 'end' then
      if input ~= '' then redis.call('HSET', ctx.run, 'output', input) end
      finish_run(ctx, name, payload, action)
      break
    end
  end
  return i
end

-- Starts the step of every join whose actions have all finished.
local function check_joins(ctx)
  local joins = redis.call('HGET', ctx.run, 'joins')
  if joins == false or joins == '' then return 0 end
  local waiting = {}
  for aid in string.gmatch(joins, '[^,]+') do
    local seq = redis.call('HGET', ctx.run, af(aid, 'jw'))
    local ready = true
    local since = tonumber(redis.call('HGET', ctx.run, af(aid, 'jp')))  -- in a loop's pass
    for id in string.gmatch(redis.call('HGET', ctx.run, xf(seq, 'jon')), '[^,]+') do
      local status = redis.call('HGET', ctx.run, af(id, 's'))
      if (status ~= 'COMPLETED' and status ~= 'FAILED')
        or (since and tonumber(redis.call('HGET', ctx.run, af(id, 'x'))) <= since) then
        ready = false
        break
      end
    end
    if ready then
      redis.call('HSET', ctx.run, xf(seq, 'n'), 2, af(aid, 'jf'), 1)
      redis.call('HDEL', ctx.run, af(aid, 'jw'))
      add_timer(ctx, timer_member(ctx, 'step', seq, 2), ctx.now)
      hist(ctx, { event = 'JOIN_READY', action = tonumber(aid), seq = tonumber(seq) })
    else
      table.insert(waiting, aid)
    end
  end
  redis.call('HSET', ctx.run, 'joins', table.concat(waiting, ','))
  return #waiting
end

-- After a change: completes the run when nothing is left, fails it when only joins that
-- can never be satisfied are left.
local function settle(ctx)
  local waiting_joins = check_joins(ctx)
  local status = redis.call('HGET', ctx.run, 'status')
  if TERMINAL[status] then return end
  local active = open_count(ctx)
  if active == 0 then
    finish_run(ctx, 'COMPLETED', '')
  elseif waiting_joins > 0 and waiting_joins == active then
    finish_run(ctx, 'FAILED', 'join action(s) ' .. redis.call('HGET', ctx.run, 'joins')
      .. ' wait for actions that can no longer finish')
  end
end

-- The context of a run-changing script: KEYS[1..6] and ARGV[1..4] are the same for all.
local function run_context()
  return {
    run = KEYS[1], hist = KEYS[2], timers = KEYS[3], events = KEYS[4], waiters = KEYS[5],
    held = KEYS[6], flow = ARGV[1], partition = ARGV[2], channel = ARGV[3],
    retention = tonumber(ARGV[4]), now = now_ms(),
  }
end
