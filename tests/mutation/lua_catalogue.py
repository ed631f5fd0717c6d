"""The hand-made mutants of app/store/lua: each one a plausible bug in one script, with the
tests that must catch it. ``EQUIVALENT`` holds mutants that change no behaviour, with why."""

from __future__ import annotations

from dataclasses import dataclass

# Tests written to catch mutants that the other files let through; part of every selection.
KILLS = "tests/test_lua_mutant_kills.py"

# The test files that drive each script directly.
SCRIPT_TESTS: dict[str, tuple[str, ...]] = {
    "start": ("tests/test_lua_start.py",),
    "transition": (
        "tests/test_lua_transition.py",
        "tests/test_lua_executions.py",
        "tests/test_lua_for_each.py",
    ),
    "requeue": ("tests/test_lua_requeue.py",),
    "poll": ("tests/test_lua_poll.py", "tests/test_lua_for_each.py"),
    "heartbeat": ("tests/test_lua_heartbeat.py",),
    "event": ("tests/test_lua_event.py",),
    "claim_timers": ("tests/test_lua_scripts.py",),
    "pause": ("tests/test_lua_lifecycle.py",),
    "resume": ("tests/test_lua_lifecycle.py",),
    "terminate": ("tests/test_lua_lifecycle.py",),
    "register_workflow": ("tests/test_lua_scripts.py",),
    "timer_failed": ("tests/test_lua_timer_failed.py",),
    "child_started": ("tests/test_lua_children.py",),
    "child_ended": ("tests/test_lua_children.py", "tests/test_lua_for_each_subflows.py"),
    "correlate_index": ("tests/test_lua_correlate.py",),
    "correlate_register": ("tests/test_lua_correlate.py",),
    "correlate_forget": ("tests/test_lua_correlate.py",),
    "correlate_publish": ("tests/test_lua_correlate.py",),
    "correlate_settle": ("tests/test_lua_correlate.py",),
    "correlate_deliver": ("tests/test_lua_correlate.py",),
    # Every run-changing script carries common.lua.
    "common": tuple(
        f"tests/test_lua_{name}.py"
        for name in (
            "start",
            "transition",
            "poll",
            "requeue",
            "event",
            "heartbeat",
            "lifecycle",
            "timer_failed",
            "scripts",
            "terminate_action",
            "executions",
            "for_each",
            "for_each_subflows",
            "loops",
            "correlate",
            "children",
        )
    ),
}


@dataclass(frozen=True)
class Mutant:
    """``original`` must occur exactly once in app/store/lua/<script>.lua."""

    id: str
    script: str
    original: str
    replacement: str
    description: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Equivalent:
    mutant: Mutant
    reason: str


Entry = tuple[str, str, str, str, tuple[str, ...]]


def _catalogue(entries: list[Entry], label: str = "") -> list[Mutant]:
    """Numbers the mutants of each script; an entry's tests default to its script's files."""
    numbered: dict[str, int] = {}
    mutants = []
    for script, original, replacement, description, tests in entries:
        numbered[script] = numbered.get(script, 0) + 1
        mutants.append(
            Mutant(
                f"{script}-{label}{numbered[script]}",
                script,
                original,
                replacement,
                description,
                tests or (*SCRIPT_TESTS[script], KILLS),
            )
        )
    return mutants


MUTANTS: list[Mutant] = _catalogue(
    [
        # -- common.lua ------------------------------------------------------------------------
        (
            "common",
            "for i = first, #KEYS do",
            "for i = first + 1, #KEYS do",
            "check_queues skips the first queue key",
            (),
        ),
        (
            "common",
            "return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)",
            "return tonumber(t[1]) * 1000",
            "now_ms drops the milliseconds of the current second",
            (),
        ),
        (
            "common",
            "    ctx.revised = true\n",
            "",
            "the revision goes up with each history entry, not once per script",
            (),
        ),
        (
            "common",
            "    extra.at = ctx.now\n",
            "",
            "the further entries of one hist call get no time",
            (),
        ),
        (
            "common",
            "redis.call('HINCRBY', ctx.run, 'active', ctx.active_change)",
            "redis.call('HSET', ctx.run, 'active', ctx.active_change)",
            "flush sets the open count to the change instead of adding it",
            (),
        ),
        (
            "common",
            "  end\n  ctx.active_change = nil\nend\n\n-- Every run-changing",
            "  end\nend\n\n-- Every run-changing",
            "flush forgets to reset the change, so a second flush counts it again",
            (),
        ),
        (
            "common",
            "if first[2] == nil or tonumber(first[2]) > due then",
            "if first[2] == nil then",
            "an earlier timer than the partition's first wakes no sweeper",
            (),
        ),
        (
            "common",
            "tonumber(redis.call('HGET', ctx.run, 'seq') or '0') + 1",
            "tonumber(redis.call('HGET', ctx.run, 'seq') or '0')",
            "a new execution reuses the last seq",
            (),
        ),
        (
            "common",
            "  if OPEN[status] then count_active(ctx, 1) end\n  return seq",
            "  count_active(ctx, 1)\n  return seq",
            "every new execution counts as open, even a finished one",
            (),
        ),
        (
            "common",
            "af(aid, 's'), status, af(aid, 'n'), n, af(aid, 'x'), seq }",
            "af(aid, 's'), status, af(aid, 'n'), n }",
            "a new execution is not recorded as its action's latest",
            (),
        ),
        (
            "common",
            "  if is_latest(ctx, aid, seq) then"
            " redis.call('HSET', ctx.run, af(aid, 's'), status) end\n"
            "  if OPEN[was]",
            "  redis.call('HSET', ctx.run, af(aid, 's'), status)\n  if OPEN[was]",
            "an older execution's status overwrites its action's latest status",
            (),
        ),
        (
            "common",
            "      redis.call('LREM', ctx.events, 1, entry)\n",
            "",
            "a consumed buffered event stays buffered",
            (),
        ),
        (
            "common",
            "redis.call('LREM', ctx.events, 1, entry)",
            "redis.call('LREM', ctx.events, 0, entry)",
            "consuming a buffered event drops its identical twins too",
            (),
        ),
        (
            "common",
            "  redis.call('ZREM', ctx.timers, timer_member(ctx, 'wto', seq, 1))\n",
            "",
            "a wait that gets its event keeps its timeout timer",
            (),
        ),
        (
            "common",
            "xf(seq, 'evd'), data, xf(seq, 'n'), 2)",
            "xf(seq, 'evd'), data)",
            "a wait that gets its event keeps generation 1",
            (),
        ),
        (
            "common",
            "string.sub(ctx.secrets, at * 32 + 1, at * 32 + 32)",
            "string.sub(ctx.secrets, at * 32, at * 32 + 31)",
            "lease secrets are cut one digit early",
            (),
        ),
        (
            "common",
            "xf(seq, 'k'), secret, 'updatedAt', ctx.now)",
            "xf(seq, 'k'), secret)",
            "a lease does not touch the run's updatedAt",
            (),
        ),
        (
            "common",
            "timer_member(ctx, 'lease', seq, attempt), ctx.now + lease_ms)",
            "timer_member(ctx, 'lease', seq, attempt), lease_ms)",
            "the lease timer is due at lease_ms since the epoch",
            (),
        ),
        (
            "common",
            "    ctx.announced[name] = true\n",
            "",
            "every queued task publishes its own queue notification",
            (),
        ),
        (
            "common",
            "  if poll_timeout_ms > 0 then",
            "  if poll_timeout_ms >= 0 then",
            "a task without a poll timeout gets one due at once",
            (),
        ),
        (
            "common",
            "if kind == 'user' and number > 0 and ctx.worker then",
            "if kind == 'user' and number ~= 0 and ctx.worker then",
            "a queued task with a poll timeout is leased at once instead",
            (),
        ),
        (
            "common",
            "      redis.call('HDEL', ctx.run, af(aid, 'e'))\n"
            "      hist(ctx, { event = 'COMPLETED'",
            "      hist(ctx, { event = 'COMPLETED'",
            "a system action that completes keeps its earlier error",
            (),
        ),
        (
            "common",
            "xf(seq, 'e'), payload, xf(seq, 'o'),\n        cjson.encode({ error = payload }))",
            "xf(seq, 'e'), payload)",
            "a system action that fails gets no output",
            (),
        ),
        (
            "common",
            "timer_member(ctx, 'fire', seq, 1), ctx.now + number)",
            "timer_member(ctx, 'fire', seq, 1), number)",
            "a sleep's timer is due at its delay since the epoch",
            (),
        ),
        (
            "common",
            "        redis.call('RPUSH', ctx.waiters, seq .. '|' .. name)\n",
            "",
            "a wait with no buffered event is not registered as a waiter",
            (),
        ),
        (
            "common",
            "        if number >= 0 then",
            "        if number > 0 then",
            "a wait with timeout 0 never times out",
            (),
        ),
        (
            "common",
            "      elseif redis.call('HEXISTS', ctx.run, af(aid, 'jw')) == 1 then\n"
            "        hist(ctx, { event = 'JOIN_ARRIVAL', action = action })\n",
            "",
            "each arrival at a waiting join opens another join execution",
            (),
        ),
        (
            "common",
            "joins = joins .. ',' .. aid end",
            "joins = aid end",
            "a new waiting join replaces the run's other waiting joins",
            (),
        ),
        (
            "common",
            "  for seq = 1, last do\n    if OPEN",
            "  for seq = 1, last - 1 do\n    if OPEN",
            "ending a run leaves its last execution open",
            (),
        ),
        (
            "common",
            "  redis.call('HSET', ctx.run, 'active', 0, 'joins', '')",
            "  redis.call('HSET', ctx.run, 'joins', '')",
            "ending a run keeps its count of open executions",
            (),
        ),
        (
            "common",
            "  redis.call('PUBLISH', ctx.channel, 'f|' .. ctx.partition .. '|' .. ctx.flow"
            " .. '|' .. status\n"
            "    .. '|' .. reason)\n",
            "",
            "a finished run is not announced (for the servers' run logs)",
            (),
        ),
        (
            "common",
            "ipairs({ ctx.run, ctx.hist, ctx.events, ctx.waiters, ctx.held })",
            "ipairs({ ctx.run, ctx.hist })",
            "a finished run's events, waiters and held keys never expire",
            (),
        ),
        (
            "common",
            "'updatedAt', ctx.now,\n    'finishedAt', ctx.now)",
            "'updatedAt', ctx.now)",
            "a finished run gets no finishedAt",
            (),
        ),
        (
            "common",
            "if (status ~= 'COMPLETED' and status ~= 'FAILED')",
            "if (status ~= 'COMPLETED')",
            "a join waits for its actions to complete, not to finish",
            (),
        ),
        (
            "common",
            "      redis.call('HDEL', ctx.run, af(aid, 'jw'))\n      add_timer",
            "      add_timer",
            "a fired join still marks its action as waiting",
            (),
        ),
        (
            "common",
            "elseif waiting_joins > 0 and waiting_joins == active then",
            "elseif waiting_joins > 0 then",
            "a run fails as soon as a join waits, though other actions can still finish it",
            (),
        ),
        (
            "common",
            "finish_run(ctx, name, payload, action)\n      break\n",
            "finish_run(ctx, name, payload, action)\n",
            "the ops planned after a terminate action's end op are still applied",
            (),
        ),
        (
            "common",
            "if status ~= 'COMPLETED' or ending then close_open_execs(ctx, reason) end",
            "if status ~= 'COMPLETED' then close_open_execs(ctx, reason) end",
            "a terminate action ending the run COMPLETED leaves its open executions open",
            (),
        ),
        (
            "common",
            "  if ctx.finished then return end\n",
            "",
            "a run ended by a terminate action is ended again by the plan's failure reason",
            (),
        ),
        # -- transition.lua --------------------------------------------------------------------
        (
            "transition",
            "if status == false or TERMINAL[status] then\n"
            "  if member ~= '' then redis.call('ZREM', ctx.timers, member) end\n",
            "if status == false or TERMINAL[status] then\n",
            "a result for an ended run leaves its timer behind",
            (),
        ),
        (
            "transition",
            "if expected_rev ~= '' and run_rev ~= expected_rev then return 'moved' end\n",
            "",
            "a plan made from an older revision is applied",
            (),
        ),
        (
            "transition",
            "if claimed_score ~= '' and tonumber(redis.call('ZSCORE', ctx.timers, member))"
            " ~= tonumber(claimed_score)"
            " then\n  return 'stale'\nend\n",
            "",
            "an expiry claimed before a heartbeat extended the lease still expires it",
            ("tests/test_lua_transition.py", "tests/test_lua_heartbeat.py"),
        ),
        (
            "transition",
            "if lease_secret ~= '' and running_secret ~= lease_secret then return 'stale' end\n",
            "",
            "a result naming another lease's secret is applied",
            (),
        ),
        (
            "transition",
            "if exec_status ~= expected_status or exec_attempt ~= expected_attempt or (fresh and"
            " held_result) then",
            "if exec_status ~= expected_status or (fresh and held_result) then",
            "a result for another attempt is applied",
            (),
        ),
        (
            "transition",
            "if exec_status ~= expected_status or exec_attempt ~= expected_attempt or (fresh and"
            " held_result) then",
            "if exec_status ~= expected_status or exec_attempt ~= expected_attempt then",
            "a second fresh result for an execution whose result is held is held too",
            (),
        ),
        (
            "transition",
            "if status == 'PAUSED' and held_member ~= '' then",
            "if status == 'PAUSED' and fresh then",
            "a replayed held result of a run paused again is applied instead of held again",
            (),
        ),
        (
            "transition",
            "    if member ~= held_member then redis.call('SREM', ctx.held, member) end\n",
            "",
            "a held worker result leaves its held lease expiry held too",
            (),
        ),
        (
            "transition",
            "  if held_outcome ~= '' then redis.call('HSET', ctx.run, xf(seq, 'held'),"
            " held_outcome) end\n",
            "",
            "a held worker result's outcome is not kept",
            (),
        ),
        (
            "transition",
            "  local attempt = tonumber(expected_attempt) + 1",
            "  local attempt = tonumber(expected_attempt)",
            "a retry keeps the attempt number",
            (),
        ),
        (
            "transition",
            "'enq', seq, attempt), ctx.now + tonumber(retry_delay_ms))",
            "'enq', seq, attempt), ctx.now)",
            "a retry is due at once, ignoring its delay",
            (),
        ),
        (
            "transition",
            "    redis.call('HSET', ctx.run, af(aid, 's'), 'QUEUED', af(aid, 'n'), attempt,"
            " af(aid, 'e'),"
            " error_text)",
            "    redis.call('HSET', ctx.run, af(aid, 's'), 'QUEUED', af(aid, 'e'), error_text)",
            "a retry leaves its action's attempt count behind",
            (),
        ),
        (
            "transition",
            "  if OPEN[expected_status] then count_active(ctx, -1) end\n",
            "",
            "an ended execution still counts as open",
            (),
        ),
        (
            "transition",
            "  if latest and new_status ~= 'FAILED' then"
            " redis.call('HDEL', ctx.run, af(aid, 'e')) end\n",
            "",
            "a completion keeps the error of an earlier failed attempt",
            (),
        ),
        (
            "transition",
            "  if awaited_event then redis.call('LREM', ctx.waiters, 1, seq .. '|' .."
            " awaited_event) end\n",
            "",
            "a wait that times out stays a waiter",
            (),
        ),
        (
            "transition",
            "if fail_reason ~= '' then finish_run(ctx, 'FAILED', fail_reason) else settle(ctx) end",
            "settle(ctx)",
            "the engine's reason to fail the run is ignored",
            (),
        ),
        (
            "transition",
            "if #ctx.leased > 0 and redis.call('HGET', ctx.run, 'status') == 'RUNNING' then",
            "if #ctx.leased > 0 then",
            "tasks leased at once are handed out though the run just ended",
            (),
        ),
        (
            "transition",
            "check_queues(7)",
            "check_queues(8)",
            "the first queue named by the ops is not checked",
            (),
        ),
        (
            "transition",
            "if held_result then redis.call('HDEL', ctx.run, xf(seq, 'held')) end\n",
            "",
            "an applied held result stays marked held",
            (),
        ),
        (
            "transition",
            "    if new_status == 'FAILED' then\n      table.insert(fields, af(aid, 'e'))",
            "    if new_status == 'QUEUED' then\n      table.insert(fields, af(aid, 'e'))",
            "a failed execution does not record its error on its action",
            (),
        ),
        # -- poll.lua --------------------------------------------------------------------------
        (
            "poll",
            "if status == 'RUNNING' or status == 'PAUSED' then",
            "if status then",
            "tasks of ended runs are leased",
            (),
        ),
        (
            "poll",
            "if exec[1] == 'QUEUED' and exec[2] == attempt then",
            "if exec[1] == 'QUEUED' then",
            "a queue entry of an older attempt is leased",
            (),
        ),
        (
            "poll",
            "        redis.call('ZREM', KEYS[1], timer_member(ctx, 'pto', seq, attempt))\n",
            "",
            "a leased task keeps its poll timeout",
            (),
        ),
        (
            "poll",
            "tonumber(ARGV[6 + q])",
            "tonumber(ARGV[8])",
            "every queue's tasks get the first queue's lease time",
            (),
        ),
        (
            "poll",
            "secrets_used = #leased }",
            "secrets_used = 0 }",
            "every task leased by one poll gets the same secret",
            (),
        ),
        (
            "poll",
            "while #leased < wanted do",
            "while #leased <= wanted do",
            "a poll leases one task more than asked",
            (),
        ),
        ("poll", "        flush(ctx)\n", "", "a lease is never written to the history", ()),
        # -- start.lua -------------------------------------------------------------------------
        (
            "start",
            "if redis.call('EXISTS', ctx.run) == 1 then return 'exists' end\n",
            "",
            "a start with an existing id overwrites the run",
            (),
        ),
        (
            "start",
            "  redis.call('ZADD', KEYS[8], ctx.now, ctx.flow)\n",
            "",
            "a run is missing from its workflow's index",
            (),
        ),
        (
            "start",
            "redis.call('DEL', ctx.run, ctx.hist, ctx.events, ctx.waiters, ctx.held)",
            "redis.call('DEL', ctx.run, ctx.events, ctx.waiters, ctx.held)",
            "a start that fails midway leaves its history behind",
            (),
        ),
        (
            "start",
            "  redis.call('ZREM', KEYS[7], ctx.flow)\n",
            "",
            "a start that fails midway stays in the index of all runs",
            (),
        ),
        (
            "start",
            "check_queues(9)",
            "check_queues(10)",
            "the first queue named by the ops is not checked",
            (),
        ),
        (
            "start",
            "if ARGV[9] ~= '' then finish_run(ctx, 'FAILED', ARGV[9]) else settle(ctx) end",
            "settle(ctx)",
            "the reason to fail the run at once is ignored",
            (),
        ),
        (
            "start",
            "'seq', 0, 'active', 0, 'joins', '')",
            "'seq', 0, 'active', 1, 'joins', '')",
            "a run starts counting one open execution too many",
            (),
        ),
        (
            "start",
            "'input', ARGV[7], 'idempotencyKey'",
            "'idempotencyKey'",
            "a run does not keep its input",
            (),
        ),
        # -- requeue.lua -----------------------------------------------------------------------
        (
            "requeue",
            "if exec[1] ~= 'QUEUED' or exec[2] ~= attempt then return 'stale' end",
            "if exec[1] ~= 'QUEUED' then return 'stale' end",
            "a back-off timer of an older attempt queues the task again",
            (),
        ),
        (
            "requeue",
            "if status == 'PAUSED' then\n  redis.call('SADD', ctx.held, member)\n"
            "  return 'held'\nend\n",
            "",
            "a retry of a paused run is queued instead of held",
            (),
        ),
        (
            "requeue",
            "if status == false or TERMINAL[status] then\n"
            "  redis.call('ZREM', ctx.timers, member)\n",
            "if status == false or TERMINAL[status] then\n",
            "the back-off timer of an ended run is left behind",
            (),
        ),
        (
            "requeue",
            "seq, attempt, tonumber(ARGV[9]))",
            "seq, attempt, 0)",
            "a requeued task loses its poll timeout",
            (),
        ),
        (
            "requeue",
            "check_queues(7)\nredis.call('ZREM', ctx.timers, member)\n",
            "check_queues(7)\n",
            "the back-off timer is never removed",
            (),
        ),
        # -- heartbeat.lua ---------------------------------------------------------------------
        (
            "heartbeat",
            " or exec[4] ~= ARGV[5] then",
            " then",
            "a heartbeat without the lease's secret extends it",
            (),
        ),
        (
            "heartbeat",
            "if not redis.call('ZSCORE', KEYS[2], ARGV[4]) then return 'stale' end\n",
            "",
            "a heartbeat after its lease expiry was held answers ok",
            (),
        ),
        (
            "heartbeat",
            "now_ms() + tonumber(ARGV[3])",
            "tonumber(ARGV[3])",
            "a heartbeat moves the lease to lease-ms since the epoch",
            (),
        ),
        (
            "heartbeat",
            "if TERMINAL[status] then return 'terminal' end\n",
            "",
            "a heartbeat of an ended run is not told the run ended",
            (),
        ),
        # -- event.lua -------------------------------------------------------------------------
        (
            "event",
            "    redis.call('LREM', ctx.waiters, 1, entry)\n",
            "",
            "a wait that got its event stays a waiter",
            (),
        ),
        (
            "event",
            "    if status == 'PAUSED' then return done(ctx, 'held') end\n",
            "",
            "an event delivered to a paused run's wait is answered delivered",
            (),
        ),
        (
            "event",
            "redis.call('RPUSH', ctx.events, cjson.encode",
            "redis.call('LPUSH', ctx.events, cjson.encode",
            "buffered events are consumed newest first",
            (),
        ),
        (
            "event",
            "if TERMINAL[status] then return 'terminal' end\n",
            "",
            "an event to an ended run is buffered",
            (),
        ),
        (
            "event",
            "  if awaited == name then",
            "  if string.find(awaited, name, 1, true) then",
            "an event reaches a wait whose name merely contains its name",
            (),
        ),
        # -- claim_timers.lua ------------------------------------------------------------------
        (
            "claim_timers",
            "'XX', now + tonumber(ARGV[2]), due[i])",
            "'XX', now, due[i])",
            "a claimed timer stays due, so another sweeper claims it too",
            (),
        ),
        (
            "claim_timers",
            "'WITHSCORES', 'LIMIT', 0,\n  tonumber(ARGV[1]))",
            "'WITHSCORES')",
            "a claim takes every due timer, not at most ARGV[1]",
            (),
        ),
        (
            "claim_timers",
            "if first[2] then reply[2] = tonumber(first[2]) end\n",
            "",
            "a claim never reports the next due time",
            (),
        ),
        (
            "claim_timers",
            "local reply = { now, -1 }",
            "local reply = { now, 0 }",
            "an empty partition reports a timer due at the epoch",
            (),
        ),
        # -- pause.lua -------------------------------------------------------------------------
        (
            "pause",
            "if status ~= 'RUNNING' then return 'not_running' end",
            "if TERMINAL[status] then return 'not_running' end",
            "pausing a paused run answers ok",
            (),
        ),
        (
            "pause",
            "hist(ctx, { event = 'RUN_PAUSED', by = ARGV[2] })\n",
            "",
            "a pause is not written to the history",
            (),
        ),
        (
            "pause",
            "'status', 'PAUSED', 'updatedAt', ctx.now)",
            "'status', 'PAUSED')",
            "a pause does not touch updatedAt",
            (),
        ),
        # -- resume.lua ------------------------------------------------------------------------
        (
            "resume",
            "if status ~= 'PAUSED' then return 'not_paused' end",
            "",
            "resuming a run that is not paused answers ok",
            (),
        ),
        (
            "resume",
            "redis.call('DEL', ctx.held)\n",
            "",
            "what was held stays held after a resume",
            (),
        ),
        (
            "resume",
            "for _, member in ipairs(held) do add_timer(ctx, member, ctx.now) end\n",
            "",
            "a resume releases nothing it held",
            (),
        ),
        (
            "resume",
            "released = #held",
            "released = 0",
            "the history does not say how much a resume released",
            (),
        ),
        # -- terminate.lua ---------------------------------------------------------------------
        (
            "terminate",
            "if TERMINAL[status] then return 'terminal' end\n",
            "",
            "terminating an ended run ends it again",
            (),
        ),
        (
            "terminate",
            "finish_run(ctx, 'TERMINATED', ARGV[5])",
            "finish_run(ctx, 'FAILED', ARGV[5])",
            "a terminated run is marked FAILED",
            (),
        ),
        (
            "terminate",
            "finish_run(ctx, 'TERMINATED', ARGV[5])",
            "finish_run(ctx, 'TERMINATED', '')",
            "a terminated run loses its reason",
            (),
        ),
        (
            "terminate",
            "if status == false then return 'missing' end\n",
            "",
            "terminating a missing run creates it",
            (),
        ),
        # -- register_workflow.lua -------------------------------------------------------------
        (
            "register_workflow",
            "if existing then return { tonumber(existing), 0 } end\n",
            "",
            "an identical definition is stored as a new version",
            (),
        ),
        (
            "register_workflow",
            "redis.call('SADD', KEYS[2], ARGV[1])\n",
            "",
            "a new workflow is missing from the set of names",
            (),
        ),
        (
            "register_workflow",
            "for i = 4, #ARGV do",
            "for i = 5, #ARGV do",
            "the first user action name is not noted",
            (),
        ),
        (
            "register_workflow",
            "'d:' .. ARGV[2], version)",
            "'d:' .. ARGV[2], 1)",
            "every digest points at version 1",
            (),
        ),
        # -- timer_failed.lua ------------------------------------------------------------------
        (
            "timer_failed",
            "if failures < tonumber(ARGV[9]) and",
            "if failures <= tonumber(ARGV[9]) and",
            "a timer is tried once more than the limit",
            (),
        ),
        (
            "timer_failed",
            " and redis.call('ZSCORE', ctx.timers, member) then",
            " then",
            "a timer removed meanwhile is brought back",
            (),
        ),
        (
            "timer_failed",
            "if status == false or TERMINAL[status] then\n"
            "  redis.call('ZREM', ctx.timers, member)\n",
            "if status == false or TERMINAL[status] then\n",
            "the failed timer of an ended run is left behind",
            (),
        ),
        (
            "timer_failed",
            "add_timer(ctx, member, ctx.now + tonumber(ARGV[8]))",
            "add_timer(ctx, member, ctx.now)",
            "a failed timer is tried again at once, with no pause",
            (),
        ),
        # -- common.lua: loops (appended, so that the numbers above stay as they were) ------
        (
            "common",
            "tonumber(redis.call('HGET', ctx.run, 'seq') or '0') < ctx.lim",
            "tonumber(redis.call('HGET', ctx.run, 'seq') or '0') <= ctx.lim",
            "a run may create one execution past its limit",
            (),
        ),
        (
            "common",
            "          redis.call('HDEL', ctx.run, af(join_id, 'jf'))\n",
            "",
            "a join in a loop fires in the first pass only",
            (),
        ),
        (
            "common",
            "        or (since and tonumber(redis.call('HGET', ctx.run, af(id, 'x'))) <= since)",
            "        or false",
            "a join in a loop takes the outputs of the last pass for those of this one",
            (),
        ),
        # -- correlated events ------------------------------------------------------------
        (
            "common",
            "if payload ~= '' then correlate(ctx, seq, payload) end",
            "",
            "a correlated wait is never registered in its index",
            (),
        ),
        (
            "correlate_register",
            "  if redis.call('HGET', prefix .. id, flow) == seq then",
            "  if false then",
            "a registration handled again takes a second kept event",
            (),
        ),
        (
            "correlate_register",
            "and (kept.f == 0 or redis.call('EXISTS', takers) == 0) then",
            "then",
            "a firstOnly kept event goes to every run",
            (),
        ),
        (
            "correlate_register",
            "if kept.x > now and",
            "if",
            "an expired kept event is still taken",
            (),
        ),
        (
            "correlate_forget",
            "and token ~= 'k:' .. id then",
            "then",
            "a kept event a wait received is given back, to be received again",
            (),
        ),
        (
            "correlate_index",
            "    if not seen[flow] and not skip[flow] then",
            "    if not skip[flow] then",
            "a run with two waits for the key gets the event twice",
            (),
        ),
        (
            "correlate_index",
            "      if first then break end\n",
            "",
            "a firstOnly event goes to every waiting run",
            (),
        ),
        (
            "correlate_publish",
            "add_timer(ctx, 'cdel|' .. id .. '|' .. ctx.partition .. '|1', ctx.now + retry_ms)",
            "",
            "a delivery cut short is never resumed",
            (),
        ),
        (
            "correlate_settle",
            "if #pending == 0 and #delivered == 0 then\n  pending",
            "if false then\n  pending",
            "an event whose receivers' waits had ended skips the next waiters",
            (),
        ),
        (
            "correlate_deliver",
            "if exec[6] == token then return { 'already', aid } end",
            "",
            "a delivery made again is answered stale, so the run is not listed",
            (),
        ),
        (
            "correlate_deliver",
            "redis.call('ZREM', ctx.timers, timer_member(ctx, 'creg', seq, 1))",
            "",
            "a wait that got its event keeps renewing its registration",
            (),
        ),
        (
            "correlate_register",
            "if redis.call('ZSCORE', waiters, waiter) == false then",
            "if true then",
            "a renewed registration loses its place in line",
            (),
        ),
        (
            "correlate_deliver",
            "or exec[3] ~= '1'",
            "",
            "a wait that already received an event receives a second one",
            (),
        ),
        # -- sub-workflows (common.lua, child_started.lua, child_ended.lua) ----------------------
        (
            "common",
            "  add_timer(ctx, timer_member(ctx, 'spawn', seq, 1), ctx.now)\n",
            "",
            "a sub-workflow execution waits with no spawn timer: its child never starts",
            (),
        ),
        (
            "common",
            "        add_timer(ctx, timer_member(ctx, 'kill', seq, 1), ctx.now)\n",
            "",
            "a run that ends with a sub-workflow open leaves its child running",
            (),
        ),
        (
            "common",
            "if redis.call('HEXISTS', ctx.run, 'parent') == 1 then",
            "if false then",
            "a child run's end never reaches its parent",
            (),
        ),
        (
            "common",
            "'paid', aid, 'depth', number)",
            "'paid', aid)",
            "a child run forgets its depth, so a workflow calling itself never stops",
            (),
        ),
        (
            "child_started",
            "redis.call('ZREM', ctx.timers, ARGV[7])",
            "local _ = ARGV[7]",
            "the spawn timer stays: the child is started again and again",
            (),
        ),
        (
            "child_started",
            "if exec[3] ~= child then",
            "if true then",
            "a spawn handled twice records the child twice",
            (),
        ),
        (
            "child_started",
            "if TERMINAL[status] then return done(ctx, 'terminal') end",
            "",
            "a child started after its parent ended is left running",
            (),
        ),
        (
            "child_started",
            "if status == false or exec[2] == false then return 'missing' end",
            "if status == false then return 'missing' end",
            "a child is recorded on an execution that is no sub-workflow",
            (),
        ),
        (
            "child_ended",
            " or exec[3] ~= '1' or ",
            " or ",
            "a child's end is delivered twice",
            (),
        ),
        (
            "child_ended",
            "if exec[5] ~= false and exec[5] ~= child then return 'stale' end",
            "",
            "another run's end is taken for the child's",
            (),
        ),
        (
            "child_ended",
            "add_timer(ctx, timer_member(ctx, kind, seq, 2), ctx.now)",
            "",
            "the end is recorded but the parent never continues",
            (),
        ),
        (
            "child_ended",
            "if status == 'PAUSED' then return done(ctx, 'held') end",
            "",
            "a paused parent is said to have continued",
            (),
        ),
        (
            "child_ended",
            "if TERMINAL[status] then return 'terminal' end",
            "",
            "an ended parent takes its child's end",
            (),
        ),
        # -- for-each (common.lua's each and item ops, poll.lua's item task ids) ---------------
        (
            "common",
            "    if total < concurrency then",
            "    if total <= concurrency then",
            "a for-each starts one item more than its concurrency",
            ("tests/test_lua_for_each.py",),
        ),
        (
            "common",
            "  if state[1] ~= 'WAITING' or state[5] then return end",
            "  if state[1] ~= 'WAITING' then return end",
            'an item that ends after the first failure ("fail") starts the next item',
            ("tests/test_lua_for_each.py",),
        ),
        (
            "common",
            "  if status == 'FAILED' and state[4] == 'fail' then",
            "  if status == 'FAILED' then",
            '"collect" stops at the first failed item',
            ("tests/test_lua_for_each.py",),
        ),
        (
            "common",
            "  if ended >= total then",
            "  if ended > total then",
            "the last item never ends its for-each",
            ("tests/test_lua_for_each.py",),
        ),
        (
            "common",
            "    redis.call('HDEL', ctx.run, field)\n",
            "",
            "a started item's payload is also kept as not started",
            ("tests/test_lua_for_each.py",),
        ),
        (
            "common",
            "  if items_past_limit(ctx, 1 + math.min(lines, concurrency)) then return false end",
            "  if items_past_limit(ctx, 1) then return false end",
            "a for-each's first items may pass the run's limit of executions",
            ("tests/test_lua_for_each.py",),
        ),
        (
            "common",
            "  elseif next_item < total and not items_past_limit(ctx, 1) then",
            "  elseif next_item < total then",
            "an item started by another's end may pass the run's limit of executions",
            ("tests/test_lua_for_each.py",),
        ),
        (
            "poll",
            "tonumber(ARGV[6 + q]), exec[6])",
            "tonumber(ARGV[6 + q]))",
            "an item's task id is not marked as an item's",
            ("tests/test_lua_for_each.py",),
        ),
        # -- executions: each keeps its times and output, each action counts them --------
        (
            "common",
            "  redis.call('HSET', ctx.run, unpack(fields))\n"
            "  redis.call('HINCRBY', ctx.run, af(aid, 'c'), 1)\n",
            "  redis.call('HSET', ctx.run, unpack(fields))\n",
            "a new execution is not counted on its action",
            (),
        ),
        (
            "common",
            "  table.insert(fields, xf(seq, 't0'))\n  table.insert(fields, ctx.now)\n",
            "",
            "a new execution gets no creation time",
            (),
        ),
        (
            "common",
            "  if TERMINAL[status] then redis.call('HSET', ctx.run, xf(seq, 't1'), ctx.now) end\n",
            "",
            "an execution closed by its run's end gets no end time",
            (),
        ),
        (
            "transition",
            "new_status, xf(seq, 'o'), output_json, xf(seq, 't1')",
            "new_status, xf(seq, 't1')",
            "an ended execution keeps no output of its own",
            (),
        ),
        (
            "transition",
            "  redis.call('HDEL', ctx.run, unpack(dropped))\n",
            "",
            "an ended execution keeps its lease's secret and worker and an empty error",
            (),
        ),
        (
            "common",
            "  redis.call('HINCRBY', ctx.run, af(aid, 'c'), 1)\n"
            "  redis.call('HSET', ctx.run, xf(seq, 't0')",
            "  redis.call('HSET', ctx.run, xf(seq, 't0')",
            "a for-each item is not counted on its action",
            (),
        ),
        (
            "common",
            "  redis.call('HSET', ctx.run, xf(seq, 't0'), ctx.now)\n",
            "",
            "a for-each item gets no creation time",
            (),
        ),
        # -- for-each with a sub-workflow body (common.lua's "subeach" op, child_ended.lua) ------
        (
            "common",
            "  if workflow then redis.call('HSET', ctx.run, xf(fe, 'fw'), workflow) end\n",
            "",
            "the items after the first ones of a sub-workflow for-each are queued as tasks",
            ("tests/test_lua_for_each_subflows.py",),
        ),
        (
            "common",
            "start_item(ctx, fe, aid, line, key, name, poll_timeout_ms, state[6] or nil)",
            "start_item(ctx, fe, aid, line, key, name, poll_timeout_ms)",
            "an ended sub-workflow item starts the next item as a task, not a child",
            ("tests/test_lua_for_each_subflows.py",),
        ),
        (
            "common",
            "    spawn_child(ctx, seq, workflow)\n",
            "",
            "a sub-workflow item waits with no spawn timer: its child never starts",
            ("tests/test_lua_for_each_subflows.py",),
        ),
        (
            "child_ended",
            "if exec[6] then kind = 'istep' end",
            "",
            "an item's child end goes through the for-each's step, which reads the whole run",
            ("tests/test_lua_for_each_subflows.py",),
        ),
        # -- audit: who asked (``by``) -----------------------------------------------------------
        (
            "start",
            "version = tonumber(ARGV[6]), by = ARGV[10] })",
            "version = tonumber(ARGV[6]) })",
            "a run's start does not name who started it",
            (),
        ),
        (
            "pause",
            "{ event = 'RUN_PAUSED', by = ARGV[2] }",
            "{ event = 'RUN_PAUSED' }",
            "a pause does not name who paused the run",
            (),
        ),
        (
            "resume",
            "released = #held, by = ARGV[5] }",
            "released = #held }",
            "a resume does not name who resumed the run",
            (),
        ),
        (
            "terminate",
            "ctx.by = ARGV[6]\n",
            "",
            "a termination does not name who terminated the run",
            (),
        ),
        (
            "common",
            "action = ending, by = ctx.by })",
            "action = ending })",
            "a run's end never names who ended it",
            ("tests/test_lua_lifecycle.py",),
        ),
        (
            "event",
            "seq = tonumber(seq), by = by })",
            "seq = tonumber(seq) })",
            "an event delivered by run id does not name who sent it",
            (),
        ),
        (
            "event",
            "{ event = 'EVENT_BUFFERED', name = name, by = by }",
            "{ event = 'EVENT_BUFFERED', name = name }",
            "a buffered event does not name who sent it",
            (),
        ),
        (
            "correlate_publish",
            "'tried', cjson.encode(tried), 'by', by)",
            "'tried', cjson.encode(tried))",
            "a delivery resumed by its timer loses its publisher",
            (),
        ),
        (
            "correlate_index",
            "g = expiry + grace_ms, b = by }",
            "g = expiry + grace_ms }",
            "a kept event loses its publisher",
            (),
        ),
        (
            "correlate_settle",
            "grace_ms,\n    rec[7] or nil)",
            "grace_ms,\n    nil)",
            "an event kept once its receivers' waits had ended loses its publisher",
            (),
        ),
        (
            "correlate_register",
            "kept.b or ''",
            "''",
            "a kept event taken by a wait loses its publisher",
            (),
        ),
        (
            "correlate_deliver",
            "action = tonumber(aid), by = by })",
            "action = tonumber(aid) })",
            "a correlated event received does not name who published it",
            (),
        ),
    ]
)

# A lease timer exists only while its attempt runs and no result of it is held: every
# transition that ends, retries or holds an attempt removes the timer it consumes. So
# heartbeat.lua's ZSCORE guard refuses everything these checks would.
_LEASE_TIMER_GUARD = (
    "heartbeat.lua answers stale when the lease timer is gone, and it is gone whenever this "
    "check would refuse (a lease timer exists only while its attempt runs, unheld)"
)
EQUIVALENT: list[Equivalent] = [
    Equivalent(mutant, reason)
    for mutant, reason in zip(
        _catalogue(
            [
                (
                    "heartbeat",
                    "exec[2] ~= ARGV[2] or exec[3] or",
                    "exec[2] ~= ARGV[2] or",
                    "a heartbeat of an attempt whose result is held is ok",
                    (),
                ),
                (
                    "heartbeat",
                    "if exec[1] ~= 'RUNNING' or",
                    "if",
                    "a heartbeat of a task that is not running is ok",
                    (),
                ),
                (
                    "heartbeat",
                    "redis.call('ZADD', KEYS[2], 'XX',",
                    "redis.call('ZADD', KEYS[2],",
                    "a heartbeat may add a lease timer that is not there",
                    (),
                ),
                (
                    "claim_timers",
                    "redis.call('ZADD', KEYS[1], 'XX',",
                    "redis.call('ZADD', KEYS[1],",
                    "a claim may add a timer that is not there",
                    (),
                ),
            ],
            label="eq",
        ),
        [
            _LEASE_TIMER_GUARD,
            _LEASE_TIMER_GUARD,
            "the script returned stale just before unless ZSCORE found the member, and nothing "
            "runs between the two commands of one script",
            "it only re-scores members that ZRANGEBYSCORE returned from the same key in the same "
            "script",
        ],
        strict=True,
    )
]
