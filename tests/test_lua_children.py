"""Sub-workflows in the scripts: the "sub" and "child" ops and the timers that common.lua's
finish_run and close_open_execs add for them, child_started.lua and child_ended.lua.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json

from app.store.store import PlannedOp
from tests.helpers.lua import Lua, done, events_of, member, user

REQUEST = json.dumps({"workflow": "pay", "version": None, "input": {"amount": 3}})


def sub(aid: int, workflow: str = "pay", request: str = REQUEST) -> PlannedOp:
    """A subWorkflow execution waiting for a run of ``workflow``, as the planner sends it."""
    return PlannedOp("sub", aid, workflow, input=request)


def child(parent: str, pseq: int, paid: int, depth: int) -> PlannedOp:
    """The first op of a child run's start: its parent."""
    return PlannedOp("child", paid, parent, str(pseq), depth)


async def test_a_sub_op_waits_with_its_request_and_a_spawn_timer_due_now(lua: Lua) -> None:
    before = await lua.now()
    flow = await lua.start([sub(4)])
    after = await lua.now()
    run = await lua.run(flow)
    assert (run["x:1:a"], run["x:1:s"], run["x:1:n"]) == ("4", "WAITING", "1")
    assert (run["x:1:cw"], run["x:1:in"]) == ("pay", REQUEST)
    assert run["active"] == "1" and run["status"] == "RUNNING"
    due = await lua.score(flow, member("spawn", flow, 1, 1))
    assert due is not None and before <= due <= after
    waiting = (await lua.history(flow))[-1]
    assert (waiting["event"], waiting["action"], waiting["seq"], waiting["workflow"]) == (
        "WAITING",
        4,
        1,
        "pay",
    )


async def test_a_child_run_records_its_parent_and_its_end_adds_a_cend_timer(lua: Lua) -> None:
    parent = lua.new_flow()
    before = await lua.now()
    flow = await lua.start([child(parent, 7, 3, 2), done(1)])
    run = await lua.run(flow)
    assert run["status"] == "COMPLETED"
    assert (run["parent"], run["pseq"], run["paid"], run["depth"]) == (parent, "7", "3", "2")
    due = await lua.score(flow, member("cend", flow, 0, 1))
    assert due is not None and before <= due

    # Any end: a terminated child tells its parent too.
    queue = lua.new_name()
    waiting = await lua.start([child(parent, 8, 3, 1), user(1, queue)])
    assert await lua.score(waiting, member("cend", waiting, 0, 1)) is None
    assert await lua.store.terminate(waiting, "stop", by="tester") == "ok"
    assert await lua.score(waiting, member("cend", waiting, 0, 1)) is not None


async def test_a_run_without_parent_adds_no_cend_timer(lua: Lua) -> None:
    flow = await lua.start([done(1)])
    assert (await lua.run(flow))["status"] == "COMPLETED"
    assert await lua.score(flow, member("cend", flow, 0, 1)) is None


async def test_ending_a_run_adds_a_kill_timer_per_open_sub_workflow_execution(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([sub(1), sub(2), user(3, queue)])
    # Execution 2's child has ended and its step completed it: nothing to end there.
    assert await lua.store.child_ended(flow, 2, lua.new_flow(), "COMPLETED", "{}", "") == (
        "delivered"
    )
    assert await lua.finish_waiting(flow, 2, "step", 2) == "ok"
    before = await lua.now()
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:2:s"], run["x:3:s"]) == ("FAILED", "COMPLETED", "FAILED")
    kill = await lua.score(flow, member("kill", flow, 1, 1))
    assert kill is not None and before <= kill
    assert await lua.score(flow, member("kill", flow, 2, 1)) is None
    assert await lua.score(flow, member("kill", flow, 3, 1)) is None


async def test_child_started_records_the_child_once_and_removes_the_spawn_timer(lua: Lua) -> None:
    flow = await lua.start([sub(5)])
    spawn = member("spawn", flow, 1, 1)
    kid = lua.new_flow()
    assert await lua.store.child_started(flow, 1, kid, spawn) == "ok"
    assert (await lua.run(flow))["x:1:cid"] == kid
    assert await lua.score(flow, spawn) is None
    started = [e for e in await lua.history(flow) if e["event"] == "CHILD_STARTED"]
    assert [(e["action"], e["seq"], e["child"], e["workflow"]) for e in started] == [
        (5, 1, kid, "pay")
    ]
    # Again (a handler that ran twice): nothing more.
    rev = (await lua.run(flow))["rev"]
    assert await lua.store.child_started(flow, 1, kid, spawn) == "ok"
    assert (await lua.run(flow))["rev"] == rev
    assert events_of(await lua.history(flow)).count("CHILD_STARTED") == 1


async def test_child_started_on_an_ended_run_says_so(lua: Lua) -> None:
    flow = await lua.start([sub(1)])
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    spawn = member("spawn", flow, 1, 1)
    kid = lua.new_flow()
    assert await lua.store.child_started(flow, 1, kid, spawn) == "terminal"
    assert await lua.score(flow, spawn) is None
    assert (await lua.run(flow))["x:1:cid"] == kid


async def test_child_started_without_such_run_or_execution(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    stray = member("spawn", flow, 1, 1)
    await lua.client.zadd(lua.timers_key(flow), {stray: 1})
    # Execution 1 is no sub-workflow execution: nothing is recorded, the timer goes.
    assert await lua.store.child_started(flow, 1, lua.new_flow(), stray) == "missing"
    assert "x:1:cid" not in await lua.run(flow)
    assert await lua.score(flow, stray) is None
    gone = lua.new_flow()
    assert await lua.store.child_started(gone, 1, lua.new_flow(), "spawn|x|1|1") == "missing"
    assert await lua.run(gone) == {}


async def test_child_ended_delivers_once_and_steps_the_execution(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([sub(2), user(3, queue)])
    kid = lua.new_flow()
    assert await lua.store.child_started(flow, 1, kid, member("spawn", flow, 1, 1)) == "ok"
    before = await lua.now()
    answer = await lua.store.child_ended(flow, 1, kid, "COMPLETED", '{"paid":true}', "")
    assert answer == "delivered"
    run = await lua.run(flow)
    assert (run["x:1:cs"], run["x:1:co"], run["x:1:ce"], run["x:1:n"]) == (
        "COMPLETED",
        '{"paid":true}',
        "",
        "2",
    )
    assert run["x:1:s"] == "WAITING"
    step = await lua.score(flow, member("step", flow, 1, 2))
    assert step is not None and before <= step
    ended = (await lua.history(flow))[-1]
    assert (ended["event"], ended["action"], ended["seq"], ended["child"], ended["status"]) == (
        "CHILD_ENDED",
        2,
        1,
        kid,
        "COMPLETED",
    )
    # Told again (a handler that ran twice): nothing changes.
    rev = run["rev"]
    assert await lua.store.child_ended(flow, 1, kid, "FAILED", "", "other") == "stale"
    run = await lua.run(flow)
    assert (run["rev"], run["x:1:cs"]) == (rev, "COMPLETED")
    # The step completes it; then it is no longer waiting.
    assert await lua.finish_waiting(flow, 1, "step", 2, '{"paid":true}') == "ok"
    assert await lua.store.child_ended(flow, 1, kid, "COMPLETED", "{}", "") == "stale"


async def test_child_ended_before_the_child_was_recorded_records_it(lua: Lua) -> None:
    """A child that ended at once may be heard of before its spawn handler records it."""
    flow = await lua.start([sub(1)])
    kid = lua.new_flow()
    assert await lua.store.child_ended(flow, 1, kid, "FAILED", "", "boom") == "delivered"
    run = await lua.run(flow)
    assert (run["x:1:cid"], run["x:1:cs"], run["x:1:ce"]) == (kid, "FAILED", "boom")
    # The spawn handler's record comes later: it only removes its timer.
    assert await lua.store.child_started(flow, 1, kid, member("spawn", flow, 1, 1)) == "ok"
    assert events_of(await lua.history(flow)).count("CHILD_STARTED") == 0


async def test_child_ended_refuses_another_child_or_execution(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([sub(1), user(2, queue)])
    kid = lua.new_flow()
    assert await lua.store.child_started(flow, 1, kid, member("spawn", flow, 1, 1)) == "ok"
    assert await lua.store.child_ended(flow, 1, lua.new_flow(), "COMPLETED", "{}", "") == "stale"
    assert await lua.store.child_ended(flow, 2, kid, "COMPLETED", "{}", "") == "stale"
    assert await lua.store.child_ended(flow, 9, kid, "COMPLETED", "{}", "") == "stale"
    run = await lua.run(flow)
    assert "x:1:cs" not in run and run["x:1:n"] == "1"


async def test_child_ended_on_a_paused_ended_or_missing_parent(lua: Lua) -> None:
    paused = await lua.start([sub(1)])
    assert await lua.store.pause(paused, by="tester") == "ok"
    kid = lua.new_flow()
    assert await lua.store.child_ended(paused, 1, kid, "COMPLETED", "{}", "") == "held"
    # The step waits for resume, as a wait's does.
    assert await lua.finish_waiting(paused, 1, "step", 2) == "held"
    assert await lua.store.resume(paused, by="tester") == "ok"
    assert await lua.finish_waiting(paused, 1, "step", 2) == "ok"

    ended = await lua.start([sub(1)])
    assert await lua.store.terminate(ended, "stop", by="tester") == "ok"
    assert await lua.store.child_ended(ended, 1, kid, "TERMINATED", "", "x") == "terminal"
    assert "x:1:cs" not in await lua.run(ended)
    assert await lua.store.child_ended(lua.new_flow(), 1, kid, "COMPLETED", "{}", "") == ("missing")
