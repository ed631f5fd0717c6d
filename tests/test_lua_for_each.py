"""The for-each ops of common.lua: "each" (start.lua, transition.lua) creates a for-each and
its first items; "item" (transition.lua) counts an item that ended and starts the next.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from app.engine.ids import ITEM_SUFFIX, TaskId
from app.engine.planner import limit_reason
from tests.helpers.lua import Lua, each, events_of, item, limit, member, queue_entry, user


async def test_each_creates_the_for_each_and_starts_its_first_items(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ['{"n":0}', '{"n":1}', '{"n":2}'], 2)])

    run = await lua.run(flow)
    assert (run["x:1:s"], run["a:1:s"], run["a:1:x"], run["x:1:in"]) == (
        "WAITING",
        "WAITING",
        "1",
        '{"items":3}',
    )
    assert (run["x:1:ft"], run["x:1:fd"], run["x:1:fn"], run["x:1:fm"]) == ("3", "0", "2", "fail")
    assert [(run[f"x:{s}:p"], run[f"x:{s}:i"], run[f"x:{s}:in"]) for s in (2, 3)] == [
        ("1", "0", '{"n":0}'),
        ("1", "10", '{"n":1}'),
    ]
    assert (run["x:2:s"], run["x:2:q"], run["x:2:a"]) == ("QUEUED", queue, "1")
    assert run["x:1:pi:2"] == '20 {"n":2}'
    assert (run["active"], run["seq"], run["status"]) == ("3", "3", "RUNNING")
    assert await lua.queue(flow, queue) == [queue_entry(flow, 2, 1), queue_entry(flow, 3, 1)]
    history = await lua.history(flow)
    assert events_of(history)[1:] == ["WAITING", "QUEUED", "QUEUED"]
    assert [entry.get("item") for entry in history[2:]] == [0, 10]


async def test_an_item_is_leased_with_a_task_id_marking_it(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["{}"], 1)])

    [task] = await lua.poll(flow, queue)

    assert task.task_id.endswith(ITEM_SUFFIX)
    parsed = TaskId.parse(task.task_id)
    assert parsed is not None and parsed.item and (parsed.seq, parsed.attempt) == (2, 1)
    run = await lua.run(flow)
    assert (run["x:2:s"], run["a:1:s"]) == ("RUNNING", "WAITING")


async def test_an_ended_item_keeps_its_output_and_starts_the_next(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ['"a"', '"b"', '"c"'], 1)])
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 2, output='{"r":1}', ops=[item(1, queue, 2)]) == "ok"

    run = await lua.run(flow)
    assert (run["x:2:s"], run["x:2:o"], run["x:1:fd"], run["x:1:fn"]) == (
        "COMPLETED",
        '{"r":1}',
        "1",
        "2",
    )
    assert "a:1:o" not in run and run["a:1:s"] == "WAITING" and run["a:1:x"] == "1"
    assert (run["x:3:s"], run["x:3:in"], run["x:3:i"]) == ("QUEUED", '"b"', "10")
    assert "x:1:pi:1" not in run and run["x:1:pi:2"] == '20 "c"'
    assert (run["active"], run["status"]) == ("2", "RUNNING")
    assert await lua.queue(flow, queue) == [queue_entry(flow, 3, 1)]


async def test_the_last_item_ends_the_for_each_through_its_step_timer(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["1", "2"], 2)])
    await lua.poll(flow, queue)
    await lua.complete(flow, 3, output='{"r":2}', ops=[item(1, queue, 3)])
    assert await lua.score(flow, member("step", flow, 1, 2)) is None

    await lua.complete(flow, 2, output='{"r":1}', ops=[item(1, queue, 2)])

    run = await lua.run(flow)
    assert (run["x:1:fd"], run["x:1:n"], run["active"]) == ("2", "2", "1")
    assert await lua.score(flow, member("step", flow, 1, 2)) is not None
    assert events_of(await lua.history(flow))[-1] == "FOR_EACH_READY"
    assert await lua.finish_waiting(flow, 1, "step", 2, output='[{"r":1},{"r":2}]') == "ok"
    run = await lua.run(flow)
    # The for-each's output is its execution's, which is its action's latest.
    assert (run["a:1:s"], run["x:1:o"], run["status"]) == (
        "COMPLETED",
        '[{"r":1},{"r":2}]',
        "COMPLETED",
    )


async def test_fail_mode_stops_at_the_first_failure_and_lets_running_items_finish(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["1", "2", "3", "4"], 2)])
    await lua.poll(flow, queue)

    assert await lua.fail(flow, 2, "boom", ops=[item(1, queue, 2)]) == "ok"

    run = await lua.run(flow)
    assert (run["x:2:o"], run["x:1:ff"], run["x:1:fd"], run["x:1:fn"]) == (
        '{"error": "boom"}',
        "2",
        "1",
        "2",
    )
    assert await lua.score(flow, member("step", flow, 1, 2)) is not None
    assert await lua.queue(flow, queue) == []
    # The other running item ends: it is counted, nothing starts, the step is not added twice.
    await lua.complete(flow, 3, ops=[item(1, queue, 3)])
    run = await lua.run(flow)
    assert (run["x:1:fd"], run["x:1:fn"], run["seq"], run["active"]) == ("2", "2", "3", "1")
    assert events_of(await lua.history(flow)).count("FOR_EACH_READY") == 1


async def test_collect_mode_counts_a_failure_and_goes_on(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["1", "2"], 1, mode="collect")])
    await lua.poll(flow, queue)

    await lua.fail(flow, 2, "boom", ops=[item(1, queue, 2)])

    run = await lua.run(flow)
    assert "x:1:ff" not in run
    assert (run["x:2:s"], run["x:3:s"], run["x:1:fd"]) == ("FAILED", "QUEUED", "1")


async def test_a_retried_item_is_not_counted_until_it_ends(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["1", "2"], 1)])
    await lua.poll(flow, queue)

    assert await lua.fail_retryable(flow, 2, "flaky") == "ok"

    run = await lua.run(flow)
    assert (run["x:2:s"], run["x:2:n"], run["x:1:fd"], run["active"]) == ("QUEUED", "2", "0", "2")
    assert "x:3:s" not in run


async def test_next_items_get_the_poll_timeout_of_the_item_op(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["1", "2"], 1)])
    await lua.poll(flow, queue)

    await lua.complete(flow, 2, ops=[item(1, queue, 2, poll_timeout_ms=60_000)])

    assert await lua.score(flow, member("pto", flow, 3, 1)) is not None


async def test_a_for_each_with_no_item_is_ready_at_once(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, [], 4)])

    run = await lua.run(flow)
    assert (run["x:1:ft"], run["x:1:n"], run["active"]) == ("0", "2", "1")
    assert await lua.score(flow, member("step", flow, 1, 2)) is not None


async def test_terminating_the_run_closes_its_items(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ["1", "2", "3"], 2)])
    await lua.poll(flow, queue)

    await lua.store.terminate(flow, "stop", by="tester")

    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:2:s"], run["x:3:s"], run["active"]) == (
        "FAILED",
        "FAILED",
        "FAILED",
        "0",
    )
    assert run["status"] == "TERMINATED"


async def test_items_count_toward_the_runs_limit_of_executions(lua: Lua) -> None:
    queue = lua.new_name()
    # The for-each and its two first items are 3 executions: within a limit of 3.
    flow = await lua.start([limit(3), each(1, queue, ["1", "2", "3"], 2)])
    await lua.poll(flow, queue)

    # The third item would be the fourth execution: the run fails instead.
    assert await lua.complete(flow, 2, ops=[item(1, queue, 2)]) == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["seq"]) == ("FAILED", limit_reason(3), "3")
    assert "x:4:s" not in run and "x:1:pi:2" in run


async def test_an_each_op_past_the_limit_fails_the_run_and_creates_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([limit(2), each(1, queue, ["1", "2", "3"], 2), user(5, queue)])

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["seq"]) == ("FAILED", limit_reason(2), "0")
    assert await lua.queue(flow, queue) == []
