"""transition.lua: ending, retrying or holding one execution.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import ResponseError

from app.engine.ids import lease_secrets
from app.store.store import Applied, Outcome, PlannedOp, Transition
from tests.helpers.lua import (
    LEASE_MS,
    RETENTION,
    Lua,
    events_of,
    member,
    queue_entry,
    sleep,
    user,
    user_with_poll_timeout,
    wait,
)


async def test_transition_completes_execution_and_the_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    assert await lua.score(flow, lease) is not None

    assert await lua.complete(flow, 1, output='{"r":42}') == "ok"

    run = await lua.run(flow)
    assert (run["x:1:s"], run["a:1:s"], run["x:1:o"]) == ("COMPLETED", "COMPLETED", '{"r":42}')
    # An ended execution keeps no empty error, nor its lease's worker and secret.
    assert not {"x:1:e", "x:1:w", "x:1:k"} & set(run)
    assert (run["active"], run["status"]) == ("0", "COMPLETED")
    assert "x:1:held" not in run
    assert await lua.score(flow, lease) is None
    history = await lua.history(flow)
    assert events_of(history)[-2:] == ["COMPLETED", "RUN_COMPLETED"]
    assert (history[-2]["seq"], history[-2]["branch"], history[-2]["action"]) == (1, "default", 1)


async def test_transition_applies_ops_to_their_queues(lua: Lua) -> None:
    queue, left, right = lua.new_name(), lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    answer = await lua.complete(flow, 1, ops=[user(2, left, '"L"'), user(3, right, '"R"')])

    assert answer == "ok"
    assert await lua.queue(flow, left) == [queue_entry(flow, 2, 1)]
    assert await lua.queue(flow, right) == [queue_entry(flow, 3, 1)]
    run = await lua.run(flow)
    assert (run["status"], run["active"], run["x:2:in"], run["x:3:q"]) == (
        "RUNNING",
        "2",
        '"L"',
        right,
    )


async def test_transition_stale_guard_changes_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    run_before = await lua.run(flow)
    history_before = await lua.history(flow)
    lease = member("lease", flow, 1, 1)
    lease_due = await lua.score(flow, lease)

    wrong_attempt = await lua.complete(flow, 1, attempt=2)
    wrong_status = await lua.store.transition(
        flow, 1, "WAITING", 1, Outcome("COMPLETED", "{}"), timer_member=""
    )
    no_such_exec = await lua.complete(flow, 8)

    assert (wrong_attempt, wrong_status, no_such_exec) == ("stale", "stale", "stale")
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.score(flow, lease) == lease_due


async def test_result_without_the_lease_secret_changes_nothing(lua: Lua) -> None:
    """A result naming the running attempt but not its lease's secret is stale, and does not
    even touch the lease's timer; the holder's own result then applies."""
    queue, next_queue = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    [task] = await lua.poll(flow, queue)
    secret = task.task_id.rsplit(".", 1)[1]
    run_before = await lua.run(flow)
    history_before = await lua.history(flow)
    lease = member("lease", flow, 1, 1)
    lease_due = await lua.score(flow, lease)

    for forged in ("0" * 32, secret[::-1], "x"):
        answer = await lua.complete(flow, 1, ops=[user(2, next_queue)], secret=forged)
        assert answer == "stale", forged
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.score(flow, lease) == lease_due
    assert await lua.queue(flow, next_queue) == []

    assert await lua.complete(flow, 1, ops=[user(2, next_queue)], secret=secret) == "ok"
    assert await lua.queue(flow, next_queue) == [queue_entry(flow, 2, 1)]


async def test_poll_timeout_fails_the_queued_attempt_for_a_retry_or_for_good(lua: Lua) -> None:
    """A poll timeout ends an attempt that is still QUEUED: retried (next attempt after the
    back-off), or failed for good; once the attempt was leased it is stale."""
    queue = lua.new_name()
    flow = await lua.start([user_with_poll_timeout(1, queue, 500), user(2, queue)])
    timeout = member("pto", flow, 1, 1)
    retry = Outcome("QUEUED", error="not polled", retry_delay_ms=60_000)

    answer = await lua.store.transition(
        flow, 1, "QUEUED", 1, retry, timer_member=timeout, held_member=timeout
    )

    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["x:1:e"], run["active"]) == (
        "QUEUED",
        "2",
        "not polled",
        "2",
    )
    assert await lua.score(flow, timeout) is None
    assert await lua.score(flow, member("enq", flow, 1, 2)) is not None
    assert (await lua.history(flow))[-1]["event"] == "RETRY_SCHEDULED"

    # The second attempt's timeout fails it for good, and the run with it.
    second = member("pto", flow, 1, 2)
    await lua.client.zadd(lua.timers_key(flow), {second: 0})
    failed_for_good = Outcome("FAILED", '{"error":"not polled"}', "not polled", "error")
    answer = await lua.store.transition(
        flow,
        1,
        "QUEUED",
        2,
        failed_for_good,
        fail_reason="action 1 failed: not polled",
        timer_member=second,
        held_member=second,
    )
    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["x:1:s"], run["a:1:e"]) == ("FAILED", "FAILED", "not polled")

    # A leased attempt's poll timeout (had its timer survived) is stale.
    other = await lua.start([user_with_poll_timeout(1, queue, 500)])
    await lua.poll(other, queue)
    late = member("pto", other, 1, 1)
    answer = await lua.store.transition(
        other, 1, "QUEUED", 1, retry, timer_member=late, held_member=late
    )
    assert answer == "stale"
    assert (await lua.run(other))["x:1:s"] == "RUNNING"


async def test_poll_timeout_of_a_paused_run_is_held(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user_with_poll_timeout(1, queue, 500)])
    assert await lua.store.pause(flow, by="tester") == "ok"
    timeout = member("pto", flow, 1, 1)
    retry = Outcome("QUEUED", error="not polled", retry_delay_ms=0)

    answer = await lua.store.transition(
        flow, 1, "QUEUED", 1, retry, timer_member=timeout, held_member=timeout
    )

    assert answer == "held"
    assert await lua.held(flow) == {timeout}
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"]) == ("QUEUED", "1")
    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 1)]


async def test_transition_duplicate_completion_is_stale(lua: Lua) -> None:
    queue, next_queue = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue), sleep(2, 60_000)])
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1, output='{"first":1}') == "ok"
    run_before = await lua.run(flow)

    again = await lua.complete(flow, 1, output='{"second":2}', ops=[user(3, next_queue)])

    assert again == "stale"
    assert await lua.run(flow) == run_before
    assert run_before["x:1:o"] == '{"first":1}'
    assert await lua.queue(flow, next_queue) == []


async def test_transition_on_ended_run_is_terminal_and_drops_the_timer(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), sleep(2, 60_000)])
    await lua.poll(flow, queue)
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    # Terminate leaves the run's timers; whoever handles them removes them.
    lease, fire = member("lease", flow, 1, 1), member("fire", flow, 2, 1)
    assert await lua.score(flow, lease) is not None
    assert await lua.score(flow, fire) is not None
    run_before = await lua.run(flow)

    assert await lua.complete(flow, 1) == "terminal"
    assert await lua.finish_waiting(flow, 2, "fire", 1) == "terminal"

    assert await lua.score(flow, lease) is None
    assert await lua.score(flow, fire) is None
    assert await lua.run(flow) == run_before


async def test_transition_of_missing_run_drops_the_timer(lua: Lua) -> None:
    ghost = lua.new_flow()
    timer = member("fire", ghost, 1, 1)
    await lua.client.zadd(lua.timers_key(ghost), {timer: 1})

    answer = await lua.store.transition(
        ghost, 1, "", 1, Outcome(""), timer_member=timer, held_member=timer
    )

    assert answer == "missing"
    assert await lua.score(ghost, timer) is None
    assert await lua.client.exists(lua.run_keys(ghost).run) == 0
    assert await lua.client.exists(lua.run_keys(ghost).history) == 0


async def test_transition_retry_requeues_after_the_delay(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    before = await lua.now()
    answer = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("QUEUED", error="flaky", retry_delay_ms=2500),
        timer_member=member("lease", flow, 1, 1),
        held_member=member("res", flow, 1, 1),
    )
    after = await lua.now()

    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["x:1:e"]) == ("QUEUED", "2", "flaky")
    assert (run["a:1:s"], run["a:1:n"], run["a:1:e"]) == ("QUEUED", "2", "flaky")
    assert (run["status"], run["active"]) == ("RUNNING", "1")
    enq = member("enq", flow, 1, 2)
    due = await lua.score(flow, enq)
    assert due is not None
    assert before + 2500 <= due <= after + 2500
    assert await lua.score(flow, member("lease", flow, 1, 1)) is None
    assert await lua.queue(flow, queue) == []
    retry = (await lua.history(flow))[-1]
    assert (retry["event"], retry["attempt"], retry["error"], retry["delayMs"]) == (
        "RETRY_SCHEDULED",
        2,
        "flaky",
        2500,
    )
    # The first attempt's result is stale now.
    assert await lua.complete(flow, 1, attempt=1) == "stale"


async def test_transition_fail_reason_fails_run_and_closes_open_executions(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start([user(1, queue), user(2, queue), sleep(3, 60_000), wait(4, event)])
    await lua.poll(flow, queue, most=1)

    answer = await lua.fail(flow, 1, "broken", fail_reason="action 1 failed")

    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"], run["joins"]) == (
        "FAILED",
        "action 1 failed",
        "0",
        "",
    )
    assert (run["x:1:s"], run["x:1:e"], run["a:1:e"]) == ("FAILED", "broken", "broken")
    for seq in (2, 3, 4):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:e"]) == ("FAILED", "action 1 failed"), seq
        assert run[f"a:{seq}:s"] == "FAILED"
        assert run[f"a:{seq}:e"] == "action 1 failed"
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION
    assert (await lua.history(flow))[-1]["event"] == "RUN_FAILED"


async def test_transition_on_paused_run_holds_the_result(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow, by="tester") == "ok"
    lease, result = member("lease", flow, 1, 1), member("res", flow, 1, 1)

    assert await lua.complete(flow, 1, output='{"r":1}') == "held"

    run = await lua.run(flow)
    assert json.loads(run["x:1:held"]) == {"output": {"r": 1}}
    assert (run["x:1:s"], run["status"], run["active"]) == ("RUNNING", "PAUSED", "1")
    assert "x:1:o" not in run
    assert await lua.held(flow) == {result}
    assert await lua.score(flow, lease) is None
    assert (await lua.history(flow))[-1]["event"] == "HELD"
    # A second result for the same attempt is refused and replaces nothing.
    assert await lua.complete(flow, 1, output='{"r":2}') == "stale"
    assert json.loads((await lua.run(flow))["x:1:held"]) == {"output": {"r": 1}}
    assert await lua.held(flow) == {result}
    # So is a heartbeat.
    secret = await lua.secret(flow, 1) or ""
    assert await lua.store.heartbeat(flow, 1, 1, LEASE_MS, lease, secret) == "stale"

    # Resume makes it due; the replay (held member "") applies it.
    assert await lua.store.resume(flow, by="tester") == "ok"
    assert await lua.score(flow, result) is not None
    replay = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", '{"r":1}', branch="default"),
        timer_member=result,
    )
    assert replay == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["x:1:s"], run["x:1:o"]) == ("COMPLETED", "COMPLETED", '{"r":1}')
    assert "x:1:held" not in run
    assert await lua.score(flow, result) is None


async def test_transition_holds_a_fired_timer_of_a_paused_run(lua: Lua) -> None:
    flow = await lua.start([sleep(1, 0)])
    fire = member("fire", flow, 1, 1)
    assert await lua.store.pause(flow, by="tester") == "ok"

    assert await lua.finish_waiting(flow, 1, "fire", 1) == "held"

    assert await lua.held(flow) == {fire}
    assert await lua.score(flow, fire) is None
    run = await lua.run(flow)
    assert (run["x:1:s"], run["status"]) == ("WAITING", "PAUSED")
    assert "x:1:held" not in run


async def test_wait_timeout_removes_its_waiter(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event, 0), wait(2, event, 60_000)])
    timeout = member("wto", flow, 1, 1)
    assert await lua.score(flow, timeout) is not None

    assert await lua.finish_waiting(flow, 1, "wto", 1, '{"timedOut":true}') == "ok"

    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:o"], run["active"]) == ("COMPLETED", '{"timedOut":true}', "1")
    assert await lua.score(flow, timeout) is None
    assert await lua.waiters(flow) == [f"2|{event}"]
    # The next event goes to the wait still waiting, not to the one that timed out.
    assert await lua.store.send_event(flow, event, "7", by="tester") == "delivered"
    run = await lua.run(flow)
    assert (run["x:2:evd"], run["x:2:n"]) == ("7", "2")
    assert "x:1:evn" not in run


async def test_replayed_result_of_a_run_paused_again_is_held_again(lua: Lua) -> None:
    queue, next_queue = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow, by="tester") == "ok"
    assert await lua.complete(flow, 1) == "held"
    assert await lua.store.resume(flow, by="tester") == "ok"
    result = member("res", flow, 1, 1)
    assert await lua.score(flow, result) is not None
    # Paused again before the sweeper got to the released result.
    assert await lua.store.pause(flow, by="tester") == "ok"

    # What the engine sends for a "res" timer: the held result, with no held member.
    answer = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", '{"ok":true}', branch="default"),
        [user(2, next_queue)],
        timer_member=result,
    )

    assert answer == "held"
    assert (await lua.run(flow))["x:1:s"] == "RUNNING"
    assert await lua.queue(flow, next_queue) == []
    assert await lua.held(flow) == {result}


async def test_pipelined_transitions_answer_in_order_and_survive_a_script_flush(
    lua: Lua, redis_client: Any
) -> None:
    queue = lua.new_name()
    first, second = lua.new_flow(), lua.new_flow()
    await lua.start([user(1, queue)], flow=first)
    await lua.start([user(1, queue)], flow=second)
    await lua.poll(first, queue)
    await lua.poll(second, queue)
    await redis_client.script_flush()
    done = Outcome("COMPLETED", '{"r":1}', branch="default")
    changes = [
        Transition(first, 1, "RUNNING", 1, done, timer_member=member("lease", first, 1, 1)),
        Transition(first, 1, "RUNNING", 1, done),  # the same again: the run has ended
        Transition(second, 1, "RUNNING", 1, done, timer_member=member("lease", second, 1, 1)),
    ]
    replies, _ = await lua.store.transitions(changes)
    assert [reply.status for reply in replies] == [
        "ok",
        "terminal",
        "ok",
    ]
    assert (await lua.run(first))["status"] == "COMPLETED"
    assert (await lua.run(second))["status"] == "COMPLETED"


# -- user tasks leased at once to the worker whose result started them (ARGV[18]) --------


def leased(op: PlannedOp, lease_ms: int = LEASE_MS) -> PlannedOp:
    return PlannedOp(op.kind, op.action_id, op.name, op.payload, lease_ms, op.queue)


TAKE_SECRETS = "c" * 32 + "d" * 32


async def complete_leasing(
    lua: Lua, flow: str, ops: list[PlannedOp], fail_reason: str = "", secrets: str = ""
) -> Applied:
    """The engine's transition for a result whose worker takes the next tasks (at most two:
    those of ``TAKE_SECRETS``, unless ``secrets`` gives more)."""
    change = Transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", "{}", branch="default"),
        ops,
        fail_reason,
        timer_member=member("lease", flow, 1, 1),
        held_member=member("res", flow, 1, 1),
        held_outcome='{"output":{}}',
        lease_to="w-next",
        take_secrets=secrets or TAKE_SECRETS,
    )
    [reply], _ = await lua.store.transitions([change])
    return reply


async def test_transition_leases_marked_tasks_to_the_worker_and_queues_the_rest(
    lua: Lua,
) -> None:
    queue, mine, other = lua.new_name(), lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    before = await lua.now()

    reply = await complete_leasing(
        lua, flow, [leased(user(2, mine, '"M"')), user(3, other), leased(user(4, mine))]
    )

    assert reply == Applied("ok", (2, 4))
    assert await lua.queue(flow, mine) == []
    assert await lua.queue(flow, other) == [queue_entry(flow, 3, 1)]
    run = await lua.run(flow)
    assert (run["x:2:s"], run["a:2:s"], run["x:2:n"], run["x:2:w"], run["x:2:in"]) == (
        "RUNNING",
        "RUNNING",
        "1",
        "w-next",
        '"M"',
    )
    assert (run["x:2:q"], run["x:3:s"], run["active"]) == (mine, "QUEUED", "3")
    # The k-th task leased takes the k-th secret; the queued one has none.
    assert (run["x:2:k"], run["x:4:k"], run.get("x:3:k")) == ("c" * 32, "d" * 32, None)
    lease_due = await lua.score(flow, member("lease", flow, 2, 1))
    assert lease_due is not None and before + LEASE_MS <= lease_due <= await lua.now() + LEASE_MS
    history = await lua.history(flow)
    seq_two = [entry for entry in history if entry.get("seq") == 2]
    assert [entry["event"] for entry in seq_two] == ["QUEUED", "RUNNING"]
    assert seq_two[1]["worker"] == "w-next"


async def test_transition_leases_nothing_without_a_worker_or_a_lease_time(lua: Lua) -> None:
    queue, mine = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    change = Transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", "{}", branch="default"),
        [leased(user(2, mine))],
        timer_member=member("lease", flow, 1, 1),
    )

    [reply], _ = await lua.store.transitions([change])

    assert reply == Applied("ok")
    assert await lua.queue(flow, mine) == [queue_entry(flow, 2, 1)]


async def test_transition_that_ends_the_run_returns_no_leased_task(lua: Lua) -> None:
    queue, mine = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    reply = await complete_leasing(lua, flow, [leased(user(2, mine))], fail_reason="stop here")

    assert reply == Applied("ok")
    run = await lua.run(flow)
    assert (run["status"], run["x:2:s"], run["active"]) == ("FAILED", "FAILED", "0")


async def test_transition_of_a_paused_run_leases_nothing(lua: Lua) -> None:
    queue, mine = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow, by="tester") == "ok"

    reply = await complete_leasing(lua, flow, [leased(user(2, mine))])

    assert reply == Applied("held")
    run = await lua.run(flow)
    assert "x:2:s" not in run
    assert await lua.queue(flow, mine) == []


# -- the run's revision (ARGV[19]) -----------------------------------------------------


async def test_each_change_raises_the_revision_once(lua: Lua) -> None:
    queue, following = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue)])
    assert (await lua.run(flow))["rev"] == "1"
    await lua.poll(flow, queue, most=1)
    assert (await lua.run(flow))["rev"] == "2"
    # One script, several history entries: one revision.
    await lua.complete(flow, 1, ops=[user(3, following), user(4, following)])
    assert (await lua.run(flow))["rev"] == "3"
    assert await lua.store.pause(flow, by="tester") == "ok"
    assert (await lua.run(flow))["rev"] == "4"


async def test_transition_planned_from_an_older_revision_is_moved_and_changes_nothing(
    lua: Lua,
) -> None:
    queue, following = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    run_before, history_before = await lua.run(flow), await lua.history(flow)
    lease = member("lease", flow, 1, 1)
    done = Outcome("COMPLETED", "{}", branch="default")

    def planned_from(rev: str) -> Transition:
        return Transition(
            flow, 1, "RUNNING", 1, done, [user(2, following)], timer_member=lease, expected_rev=rev
        )

    [moved], _ = await lua.store.transitions([planned_from("1")])
    assert moved == Applied("moved")
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.score(flow, lease) is not None

    [applied], [read] = await lua.store.transitions(
        [planned_from(run_before["rev"])], then_read=[flow]
    )
    assert applied == Applied("ok")
    assert read == await lua.run(flow)
    assert (read["x:1:s"], read["x:2:s"], int(read["rev"])) == (
        "COMPLETED",
        "QUEUED",
        int(run_before["rev"]) + 1,
    )


# -- wide transitions: all of them or nothing ----------------------------------------------

WIDE = 10_000
"""More values than Lua's ``unpack`` takes at once (about 8,000)."""


async def test_transition_applies_ten_thousand_ops(lua: Lua) -> None:
    queue, wide = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, ops=[user(aid, wide) for aid in range(2, WIDE + 2)]) == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["seq"], run["active"]) == ("RUNNING", str(WIDE + 1), str(WIDE))
    assert await lua.client.llen(lua.queue_key(flow, wide)) == WIDE
    history = await lua.history(flow)
    assert events_of(history[-WIDE - 1 :]) == ["COMPLETED"] + ["QUEUED"] * WIDE


async def test_transition_leases_ten_thousand_tasks_at_once(lua: Lua) -> None:
    queue, mine = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    reply = await complete_leasing(
        lua,
        flow,
        [leased(user(aid, mine)) for aid in range(2, WIDE + 2)],
        secrets=lease_secrets(WIDE),
    )

    assert reply == Applied("ok", tuple(range(2, WIDE + 2)))
    run = await lua.run(flow)
    assert (run["active"], run[f"x:{WIDE + 1}:s"], run[f"x:{WIDE + 1}:w"]) == (
        str(WIDE),
        "RUNNING",
        "w-next",
    )
    history = await lua.history(flow)
    assert events_of(history[-2 * WIDE - 1 :]) == ["COMPLETED"] + ["QUEUED", "RUNNING"] * WIDE


async def test_transition_with_a_queue_key_of_another_type_changes_nothing(lua: Lua) -> None:
    queue, good, broken = lua.new_name(), lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    await lua.client.set(lua.queue_key(flow, broken), "not a list")
    run, history = await lua.run(flow), await lua.history(flow)
    lease = member("lease", flow, 1, 1)
    lease_due = await lua.score(flow, lease)

    with pytest.raises(ResponseError, match="holds a string, not a list"):
        await lua.complete(flow, 1, ops=[user(2, good), user(3, broken)])

    assert await lua.run(flow) == run
    assert await lua.history(flow) == history
    assert await lua.score(flow, lease) == lease_due
    assert await lua.queue(flow, good) == []
