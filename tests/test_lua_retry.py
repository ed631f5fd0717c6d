"""retry.lua and note_rerun.lua (and the "rerun" op of common.lua).

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.store.store import ForEachRetry, Outcome, PlannedOp, RunRetry
from tests.helpers.lua import (
    RETENTION,
    Lua,
    done,
    each,
    events_of,
    item,
    join,
    queue_entry,
    sleep,
    user,
    wait,
)


async def _retry(
    lua: Lua,
    flow: str,
    replaced: Sequence[int],
    ops: Sequence[PlannedOp],
    for_each: Sequence[ForEachRetry] = (),
    rev: str | None = None,
) -> str:
    if rev is None:
        rev = (await lua.run(flow)).get("rev", "")
    actions = [int((await lua.run(flow))[f"x:{seq}:a"]) for seq in replaced]
    change = RunRetry(flow, rev, "ops-team", "", replaced, actions, for_each, ops)
    return await lua.store.retry(change)


async def test_a_failed_task_starts_again_as_a_new_execution(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([done(1), user(2, queue, '{"a":1}')])
    await lua.poll(flow, queue)
    assert await lua.fail(flow, 2, "boom", fail_reason="action 2 failed: boom") == "ok"
    keys = lua.run_keys(flow)
    assert await lua.ttl(keys.run) > 0

    assert await _retry(lua, flow, [2], [user(2, queue, '{"a":2}')]) == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"]) == ("RUNNING", "", "1")
    assert "finishedAt" not in run
    assert (run["x:2:s"], run["x:2:e"]) == ("FAILED", "boom")  # the failed one is kept
    assert (run["x:3:a"], run["x:3:s"], run["x:3:n"], run["x:3:in"]) == (
        "2",
        "QUEUED",
        "1",
        '{"a":2}',
    )
    assert (run["a:2:x"], run["a:2:s"], run["x:1:s"]) == ("3", "QUEUED", "COMPLETED")
    assert await lua.queue(flow, queue) == [queue_entry(flow, 3, 1)]
    for key in (keys.run, keys.history):
        assert await lua.ttl(key) == -1
    history = await lua.history(flow)
    retried = next(entry for entry in history if entry["event"] == "RUN_RETRIED")
    assert (retried["by"], retried["actions"], retried["replaced"]) == ("ops-team", [2], [2])
    assert events_of(history)[-2:] == ["RUN_RETRIED", "QUEUED"]


async def test_refusals_change_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    running = await lua.start([user(1, queue)])
    assert await _retry(lua, running, [1], [user(1, queue)]) == "RUNNING"
    completed = await lua.start([done(1)])
    assert await _retry(lua, completed, [], []) == "COMPLETED"
    assert await lua.store.retry(RunRetry(lua.new_flow(), "", "x", "", [], [], [], [])) == (
        "missing"
    )
    flow = await lua.start([user(1, queue)])
    await lua.store.terminate(flow, "stop", by="tester")
    before = await lua.run(flow)
    assert await _retry(lua, flow, [1], [user(1, queue)], rev="0") == "moved"
    assert await lua.run(flow) == before


async def test_a_terminated_task_in_flight_is_replaced_and_its_lease_refused(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), sleep(2, 60_000), wait(3, "go")])
    await lua.poll(flow, queue)
    old_secret = await lua.secret(flow, 1)
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    run = await lua.run(flow)
    assert [run[f"x:{seq}:cl"] for seq in (1, 2, 3)] == ["1", "1", "1"]

    ops = [user(1, queue), sleep(2, 60_000), wait(3, "go")]
    assert await _retry(lua, flow, [1, 2, 3], ops) == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["active"]) == ("RUNNING", "3")
    assert [run[f"x:{seq}:s"] for seq in (4, 5, 6)] == ["QUEUED", "WAITING", "WAITING"]
    assert not any(f"x:{seq}:cl" in run for seq in (1, 2, 3))
    assert await lua.waiters(flow) == ["6|go"]  # the old wait's entry is gone
    # The old lease's late result changes nothing: its execution is no longer open.
    assert await lua.complete(flow, 1, secret=old_secret or "") == "stale"
    assert (await lua.run(flow))["x:4:s"] == "QUEUED"


async def test_an_event_a_wait_received_is_given_to_its_new_wait(lua: Lua) -> None:
    flow = await lua.start([wait(1, "go")])
    assert await lua.store.send_event(flow, "go", '{"v":1}', by="tester") == "delivered"
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"  # before the wait's step
    assert await _retry(lua, flow, [1], [wait(1, "go")]) == "ok"
    run = await lua.run(flow)
    assert (run["x:2:evn"], run["x:2:evd"], run["x:2:n"]) == ("go", '{"v":1}', "2")
    assert await lua.events(flow) == []


async def test_a_join_keeps_the_arrivals_of_completed_branches(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue)])
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1, ops=[join(3, "1,2")]) == "ok"
    assert await lua.fail(flow, 2, "boom", fail_reason="action 2 failed: boom") == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["x:3:s"], run["x:3:cl"]) == ("FAILED", "FAILED", "1")

    assert await _retry(lua, flow, [2, 3], [user(2, queue), join(3, "1,2")]) == "ok"
    run = await lua.run(flow)
    assert (run["x:4:a"], run["x:5:a"], run["x:5:s"], run["joins"]) == ("2", "3", "WAITING", "3")
    [task] = await lua.poll(flow, queue)
    assert await lua.complete(flow, 4, secret=task.task_id.split(".")[3]) == "ok"
    run = await lua.run(flow)
    assert (run["a:3:jf"], run["x:5:n"]) == ("1", "2")  # the join is ready: 1 and 2 arrived


async def test_a_for_each_goes_on_with_its_failed_items_only(lua: Lua) -> None:
    queue = lua.new_name()
    payloads = ['{"n":0}', '{"n":1}', '{"n":2}', '{"n":3}']
    flow = await lua.start([each(1, queue, payloads, 2)])
    await lua.poll(flow, queue)
    assert await lua.complete(flow, 2, ops=[item(1, queue, 2)]) == "ok"  # starts item 20
    assert await lua.fail(flow, 3, "boom", ops=[item(1, queue, 3)]) == "ok"
    run = await lua.run(flow)
    assert (run["x:1:ff"], run["x:1:n"]) == ("3", "2")
    failing = Outcome("FAILED", '{"error":"item 10 failed: boom"}', error="item 10 failed: boom")
    reason = "action 1 failed: item 10 failed: boom"
    answer = await lua.store.transition(flow, 1, "WAITING", 2, failing, fail_reason=reason)
    assert answer == "ok"
    assert (await lua.run(flow))["status"] == "FAILED"  # item 20 (seq 4) was closed

    spec = ForEachRetry(1, queue, 0, 2)
    assert await _retry(lua, flow, [], [], for_each=[spec]) == "ok"
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["x:1:fd"], run["a:1:s"]) == (
        "WAITING",
        "1",
        "1",
        "WAITING",
    )
    assert "x:1:ff" not in run
    # Items 10 and 20 start again as seqs 5 and 6; item 0's output is kept.
    assert (run["x:3:rp"], run["x:4:rp"]) == ("1", "1")
    assert "x:3:p" not in run and "x:4:p" not in run
    assert [(run[f"x:{seq}:i"], run[f"x:{seq}:s"]) for seq in (5, 6)] == [
        ("10", "QUEUED"),
        ("20", "QUEUED"),
    ]
    assert (run["x:2:s"], run["x:2:p"], run["active"], run["x:1:fn"]) == (
        "COMPLETED",
        "1",
        "3",
        "3",
    )
    # The closed item's entry stays behind them: a poll drops it (its execution is FAILED).
    assert (await lua.queue(flow, queue))[-2:] == [queue_entry(flow, 5, 1), queue_entry(flow, 6, 1)]
    leased = await lua.poll(flow, queue)
    assert sorted(task.task_id.split(".")[1] for task in leased) == ["5", "6"]


async def test_rerun_op_and_note(lua: Lua) -> None:
    old = await lua.start([done(1)])
    new = await lua.start([PlannedOp("rerun", 0, old, "ops-team"), done(1)])
    assert (await lua.run(new))["rerunOf"] == old
    entry = (await lua.history(new))[1]
    assert (entry["event"], entry["flow"], entry["by"]) == ("RERUN_OF", old, "ops-team")

    ttl = await lua.ttl(lua.run_keys(old).history)
    assert 0 < ttl <= RETENTION
    assert await lua.store.note_rerun(old, new, "ops-team") == "ok"
    last = (await lua.history(old))[-1]
    assert (last["event"], last["flow"], last["by"]) == ("RERUN", new, "ops-team")
    assert 0 < await lua.ttl(lua.run_keys(old).history) <= RETENTION
    assert await lua.store.note_rerun(lua.new_flow(), new, "x") == "missing"
