"""The "var" op of apply_ops (common.lua): a workflow variable written by start.lua and
transition.lua, each write recorded in the history, and never applied to a run that moved
since the engine read it.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from app.store.store import Applied, Outcome, PlannedOp, Transition
from tests.helpers.lua import Lua, events_of, member, user


def var(name: str, value: str, op: str = "", aid: int = 0) -> PlannedOp:
    return PlannedOp("var", aid, name, value, input=op)


async def test_start_writes_initial_values_without_history(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([var("count", "0"), var("items", "[]"), user(1, queue)])

    run = await lua.run(flow)
    assert (run["v:count"], run["v:items"]) == ("0", "[]")
    assert "VAR_SET" not in events_of(await lua.history(flow))


async def test_transition_writes_a_var_and_records_the_change(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([var("count", "0"), user(1, queue)])
    await lua.poll(flow, queue)

    answer = await lua.complete(flow, 1, ops=[var("count", "5", "add", aid=1)])

    assert answer == "ok"
    run = await lua.run(flow)
    assert (run["v:count"], run["status"]) == ("5", "COMPLETED")
    history = await lua.history(flow)
    [change] = [entry for entry in history if entry["event"] == "VAR_SET"]
    assert (change["action"], change["var"], change["op"]) == (1, "count", "add")
    assert events_of(history)[-3:] == ["COMPLETED", "VAR_SET", "RUN_COMPLETED"]


async def test_a_var_write_planned_from_an_older_revision_changes_nothing(lua: Lua) -> None:
    """Two parallel branches read the run at one revision: the first to complete writes
    its value; the second, planned from the same read, is told "moved" and writes nothing
    (the engine plans it again from a fresh read)."""
    left, right = lua.new_name(), lua.new_name()
    flow = await lua.start([var("count", "0"), user(1, left), user(2, right)])
    await lua.poll(flow, left)
    await lua.poll(flow, right)
    rev = (await lua.run(flow))["rev"]
    done = Outcome("COMPLETED", "{}", branch="default")

    def plus_one(seq: int, aid: int) -> Transition:
        return Transition(
            flow,
            seq,
            "RUNNING",
            1,
            done,
            [var("count", "1", "add", aid=aid)],
            timer_member=member("lease", flow, seq, 1),
            expected_rev=rev,
        )

    first, second = (await lua.store.transitions([plus_one(1, 1), plus_one(2, 2)]))[0]

    assert (first, second) == (Applied("ok"), Applied("moved"))
    run = await lua.run(flow)
    assert (run["v:count"], run["x:1:s"], run["x:2:s"]) == ("1", "COMPLETED", "RUNNING")
    changes = [entry for entry in await lua.history(flow) if entry["event"] == "VAR_SET"]
    assert [change["action"] for change in changes] == [1]
