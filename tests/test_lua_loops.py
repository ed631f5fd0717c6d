"""common.lua's part in loops: the run's limit of executions (the "limit" op, and the op
that would go past it failing the run) and the "loop" op that lets a join fire once per pass.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.planner import limit_reason
from app.store.store import Outcome, PlannedOp
from tests.helpers.lua import Lua, done, events_of, join, limit, loop, member, user


async def test_the_op_that_would_pass_the_limit_fails_the_run_at_start(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([limit(3), user(1, queue), done(2), done(3), done(4), user(5, queue)])

    run = await lua.run(flow)
    assert (run["lim"], run["seq"], run["status"], run["reason"]) == (
        "3",
        "3",
        "FAILED",
        limit_reason(3),
    )
    assert "x:4:a" not in run and "a:5:s" not in run
    assert (run["x:1:s"], run["x:1:e"], run["active"]) == ("FAILED", limit_reason(3), "0")
    history = await lua.history(flow)
    assert events_of(history) == ["RUN_STARTED", "QUEUED", "COMPLETED", "COMPLETED", "RUN_FAILED"]
    assert (
        history[-1]["reason"] == "run reached its limit of 3 executions (ORCHY_MAX_RUN_EXECUTIONS)"
    )


async def test_a_transition_that_would_pass_the_limit_fails_the_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([limit(3), user(1, queue)])
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, ops=[done(2), done(3), user(4, queue)]) == "ok"

    run = await lua.run(flow)
    assert (run["seq"], run["status"], run["reason"]) == ("3", "FAILED", limit_reason(3))
    assert run["x:1:s"] == "COMPLETED"
    assert await lua.queue(flow, queue) == []


async def test_exactly_the_limit_is_allowed(lua: Lua) -> None:
    flow = await lua.start([limit(3), done(1), done(2), done(3)])

    run = await lua.run(flow)
    assert (run["seq"], run["status"]) == ("3", "COMPLETED")


async def test_a_run_started_without_a_limit_has_none(lua: Lua) -> None:
    flow = await lua.start([done(action) for action in range(1, 51)])

    run = await lua.run(flow)
    assert (run["seq"], run["status"]) == ("50", "COMPLETED")
    assert "lim" not in run


async def test_an_arrival_at_a_waiting_join_creates_nothing_so_passes_at_the_limit(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    flow = await lua.start([limit(3), user(1, queue), user(2, queue), join(3, "1,2")])
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, ops=[join(3, "1,2")]) == "ok"

    run = await lua.run(flow)
    assert (run["seq"], run["status"]) == ("3", "RUNNING")
    assert events_of(await lua.history(flow))[-1] == "JOIN_ARRIVAL"


async def complete_join(lua: Lua, flow: str, seq: int, ops: Sequence[PlannedOp]) -> None:
    step = member("step", flow, seq, 2)
    answer = await lua.store.transition(
        flow,
        seq,
        "WAITING",
        2,
        Outcome("COMPLETED", "{}", branch="default"),
        ops,
        timer_member=step,
        held_member=step,
    )
    assert answer == "ok"


async def test_a_loop_op_lets_a_join_fire_again_once_its_actions_ran_in_the_pass(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    # Pass 1: 1 and 2 (seqs 1, 2) -> join 3 (seq 3), which fires.
    flow = await lua.start([user(1, queue), user(2, queue), join(3, "1,2")])
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1, ops=[join(3, "1,2")]) == "ok"
    assert await lua.complete(flow, 2, ops=[join(3, "1,2")]) == "ok"
    assert (await lua.run(flow))["a:3:jf"] == "1"

    # The join leads to while 4, which starts pass 2 (seq 4): 1 (seq 5) and 8 (seq 6), which
    # leads to 2 later.
    await complete_join(
        lua, flow, 3, [done(4, branch="body"), loop(4, "3"), user(1, queue), user(8, queue)]
    )
    run = await lua.run(flow)
    assert (run["a:3:jp"], run["seq"], run["status"]) == ("4", "6", "RUNNING")
    assert "a:3:jf" not in run
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 5, ops=[join(3, "1,2")]) == "ok"

    # The join waits again (seq 7): 2 has finished, but in pass 1, before this pass began.
    run = await lua.run(flow)
    assert (run["a:3:jw"], run["x:7:s"], run["joins"], run["a:2:s"]) == (
        "7",
        "WAITING",
        "3",
        "COMPLETED",
    )
    assert await lua.complete(flow, 6, ops=[user(2, queue)]) == "ok"
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 8, ops=[join(3, "1,2")]) == "ok"

    run = await lua.run(flow)
    assert (run["a:3:jf"], run["joins"], run["x:7:n"]) == ("1", "", "2")
    ready = [e["seq"] for e in await lua.history(flow) if e["event"] == "JOIN_READY"]
    assert ready == [3, 7]


async def test_a_loop_op_leaves_a_join_not_reached_yet_alone(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([done(4, branch="body"), loop(4, "3"), user(1, queue)])

    run = await lua.run(flow)
    assert not [field for field in run if field.startswith("a:3:")]
