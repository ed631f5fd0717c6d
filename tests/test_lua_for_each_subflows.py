"""A for-each whose body is a sub-workflow, in the scripts: the "subeach" op (start_for_each
and start_item in common.lua), child_ended.lua's "istep" timer for an item, and the "item"
op starting the next child.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json

from app.engine.children import item_end
from app.engine.ids import TimerKind, TimerMember
from app.engine.snapshot import RunSnapshot
from app.store.store import PlannedOp
from tests.helpers.lua import Lua, events_of, limit, member


def request(value: int) -> str:
    return json.dumps({"workflow": "ship", "version": None, "input": {"n": value}})


def subeach(aid: int, count: int, concurrency: int, mode: str = "fail") -> PlannedOp:
    """A for-each of ``count`` sub-workflow items of "ship", item k at index 10 * k."""
    lines = [f"{concurrency} {mode}", *(f"{10 * k} {request(k)}" for k in range(count))]
    return PlannedOp("subeach", aid, "ship", "\n".join(lines), input='{"items":3}')


async def end_item(lua: Lua, flow: str, seq: int, error: str | None = None) -> str:
    """Item ``seq``'s child has ended (child_ended.lua), and its istep timer ends the item
    with the "item" op, as the engine plans it."""
    child_status = "COMPLETED" if error is None else "FAILED"
    output = "" if error is None else json.dumps({"r": seq})
    told = await lua.store.child_ended(flow, seq, lua.new_flow(), child_status, output, error or "")
    assert told == "delivered"
    [fields] = await lua.store.read_executions([(flow, seq)])
    execution = RunSnapshot(flow, fields).execution(seq)
    assert execution is not None
    timer = TimerMember(TimerKind.ITEM_STEP, flow, seq, 2)
    change = item_end(flow, execution, timer, {"r": seq}, error)
    [applied], _ = await lua.store.transitions([change])
    return applied.status


async def test_subeach_starts_its_first_items_as_children_to_spawn(lua: Lua) -> None:
    before = await lua.now()
    flow = await lua.start([subeach(1, 3, 2)])
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["x:1:s"], run["a:1:s"], run["x:1:fw"], run["x:1:ft"], run["x:1:fn"]) == (
        "WAITING",
        "WAITING",
        "ship",
        "3",
        "2",
    )
    for seq, k in ((2, 0), (3, 1)):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:n"], run[f"x:{seq}:cw"]) == (
            "WAITING",
            "1",
            "ship",
        )
        assert (run[f"x:{seq}:p"], run[f"x:{seq}:i"], run[f"x:{seq}:in"]) == (
            "1",
            str(10 * k),
            request(k),
        )
        assert f"x:{seq}:q" not in run
        due = await lua.score(flow, member("spawn", flow, seq, 1))
        assert due is not None and before <= due <= after
    assert run["x:1:pi:2"] == f"20 {request(2)}" and "x:4:a" not in run
    assert (run["active"], run["seq"], run["a:1:x"]) == ("3", "3", "1")
    history = await lua.history(flow)
    assert events_of(history)[1:] == ["WAITING", "WAITING", "WAITING"]
    assert [(entry.get("workflow"), entry.get("item")) for entry in history[2:]] == [
        ("ship", 0),
        ("ship", 10),
    ]


async def test_an_items_child_end_adds_an_istep_timer(lua: Lua) -> None:
    flow = await lua.start([subeach(1, 1, 1)])
    child = lua.new_flow()
    assert await lua.store.child_ended(flow, 2, child, "COMPLETED", '{"ok":1}', "") == ("delivered")
    run = await lua.run(flow)
    assert (run["x:2:cs"], run["x:2:co"], run["x:2:n"], run["x:2:cid"]) == (
        "COMPLETED",
        '{"ok":1}',
        "2",
        child,
    )
    assert await lua.score(flow, member("istep", flow, 2, 2)) is not None
    assert await lua.score(flow, member("step", flow, 2, 2)) is None


async def test_an_ended_item_starts_the_next_child_and_the_last_readies_the_for_each(
    lua: Lua,
) -> None:
    flow = await lua.start([subeach(1, 3, 2)])

    assert await end_item(lua, flow, 2) == "ok"

    run = await lua.run(flow)
    assert (run["x:2:s"], run["x:2:o"], run["x:1:fd"], run["x:1:fn"]) == (
        "COMPLETED",
        '{"r":2}',
        "1",
        "3",
    )
    assert (run["x:4:s"], run["x:4:cw"], run["x:4:in"], run["x:4:i"]) == (
        "WAITING",
        "ship",
        request(2),
        "20",
    )
    assert await lua.score(flow, member("spawn", flow, 4, 1)) is not None
    assert await lua.score(flow, member("istep", flow, 2, 2)) is None
    assert "x:1:pi:2" not in run and run["active"] == "3"

    assert await end_item(lua, flow, 3) == "ok"
    assert await lua.score(flow, member("step", flow, 1, 2)) is None
    assert await end_item(lua, flow, 4) == "ok"
    run = await lua.run(flow)
    assert (run["x:1:fd"], run["x:1:n"], run["active"]) == ("3", "2", "1")
    assert await lua.score(flow, member("step", flow, 1, 2)) is not None
    assert events_of(await lua.history(flow))[-1] == "FOR_EACH_READY"


async def test_a_failed_child_fails_the_for_each_and_starts_no_more(lua: Lua) -> None:
    flow = await lua.start([subeach(1, 4, 2)])

    assert await end_item(lua, flow, 3, "sub-workflow ship run c FAILED: boom") == "ok"

    run = await lua.run(flow)
    assert (run["x:3:s"], run["x:1:ff"], run["x:1:fn"]) == ("FAILED", "3", "2")
    assert json.loads(run["x:3:o"]) == {"error": "sub-workflow ship run c FAILED: boom"}
    assert "x:4:a" not in run
    assert await lua.score(flow, member("step", flow, 1, 2)) is not None


async def test_collect_goes_on_after_a_failed_child(lua: Lua) -> None:
    flow = await lua.start([subeach(1, 3, 1, "collect")])
    assert await end_item(lua, flow, 2, "sub-workflow ship run c FAILED: boom") == "ok"
    run = await lua.run(flow)
    assert "x:1:ff" not in run and run["x:3:s"] == "WAITING" and run["x:3:cw"] == "ship"
    assert await lua.score(flow, member("spawn", flow, 3, 1)) is not None


async def test_ending_the_run_kills_the_open_items_children_only(lua: Lua) -> None:
    flow = await lua.start([subeach(1, 5, 2)])
    assert await end_item(lua, flow, 2) == "ok"  # item 4 starts

    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"

    for seq in (3, 4):
        assert await lua.score(flow, member("kill", flow, seq, 1)) is not None
    for seq in (1, 2):
        assert await lua.score(flow, member("kill", flow, seq, 1)) is None
    run = await lua.run(flow)
    assert "x:5:a" not in run and run["status"] == "TERMINATED"


async def test_sub_items_count_toward_the_runs_limit(lua: Lua) -> None:
    flow = await lua.start([limit(3), subeach(1, 3, 3)])
    run = await lua.run(flow)
    assert run["status"] == "FAILED" and "limit of 3 executions" in run["reason"]
    assert "x:1:a" not in run
