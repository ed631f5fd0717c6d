"""Each execution keeps its own status, attempts, input, output, error and times, and each
action counts its executions (common.lua's new_exec, apply_ops and close_open_execs, and
transition.lua): an action's output is its latest execution's, kept once.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json

from app.store.store import Outcome
from tests.helpers.lua import Lua, done, each, failed, item, member, user


async def test_an_action_run_twice_keeps_each_executions_input_output_and_times(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    before = await lua.now()
    flow = await lua.start([user(1, queue, '"first"')])
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, output='{"r":1}', ops=[user(1, queue, '"second"')]) == "ok"

    run = await lua.run(flow)
    after = await lua.now()
    assert (run["x:1:s"], run["x:1:o"], run["x:1:in"]) == ("COMPLETED", '{"r":1}', '"first"')
    assert before <= int(run["x:1:t0"]) <= int(run["x:1:t1"]) <= after
    # The second execution is the latest: open, so no output and no end time yet.
    assert (run["a:1:x"], run["a:1:c"], run["a:1:s"]) == ("2", "2", "QUEUED")
    assert (run["x:2:s"], run["x:2:in"]) == ("QUEUED", '"second"')
    assert int(run["x:2:t0"]) == int(run["x:1:t1"])
    assert "x:2:o" not in run and "x:2:t1" not in run
    # An output is kept once: by its execution, not by its action too.
    assert "a:1:o" not in run

    await lua.poll(flow, queue)
    assert await lua.complete(flow, 2, output='{"r":2}') == "ok"

    run = await lua.run(flow)
    assert (run["x:1:o"], run["x:2:o"], run["a:1:c"], run["status"]) == (
        '{"r":1}',
        '{"r":2}',
        "2",
        "COMPLETED",
    )
    assert int(run["x:2:t1"]) >= int(run["x:2:t0"])


async def test_an_older_execution_that_ends_last_keeps_its_output_but_not_the_actions(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue, '"a"'), user(1, queue, '"b"')])
    assert len(await lua.poll(flow, queue)) == 2

    assert await lua.complete(flow, 2, output='{"from":2}') == "ok"
    assert await lua.fail(flow, 1, "late") == "ok"

    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:e"], json.loads(run["x:1:o"])) == (
        "FAILED",
        "late",
        {"error": "late"},
    )
    assert "x:1:t1" in run
    assert not {"x:1:w", "x:1:k", "x:2:e", "x:2:w", "x:2:k"} & set(run)
    # The action is its latest execution: the second, which completed.
    assert (run["a:1:x"], run["a:1:s"], run["x:2:o"], run["a:1:c"]) == (
        "2",
        "COMPLETED",
        '{"from":2}',
        "2",
    )
    assert "a:1:e" not in run


async def test_system_executions_end_when_created_with_their_output_and_error(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start(
        [done(2, '{"v":1}'), failed(3, "boom"), done(2, '{"v":2}'), user(1, queue)]
    )

    run = await lua.run(flow)
    for seq in (1, 2, 3):
        assert run[f"x:{seq}:t0"] == run[f"x:{seq}:t1"]
    assert (run["x:1:o"], run["x:3:o"], run["a:2:x"], run["a:2:c"]) == (
        '{"v":1}',
        '{"v":2}',
        "3",
        "2",
    )
    assert (run["x:2:e"], json.loads(run["x:2:o"]), run["a:3:c"]) == (
        "boom",
        {"error": "boom"},
        "1",
    )
    assert "x:4:t1" not in run


async def test_a_retry_does_not_end_its_execution(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    assert await lua.fail_retryable(flow, 1, "flaky") == "ok"

    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"], run["x:1:e"], run["a:1:c"]) == (
        "QUEUED",
        "2",
        "flaky",
        "1",
    )
    assert "x:1:t1" not in run and "x:1:o" not in run


async def test_executions_closed_by_the_runs_end_get_their_end_time(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    before = await lua.now()

    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"

    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:e"]) == ("FAILED", "stop")
    assert int(run["x:1:t1"]) >= before
    assert "x:1:o" not in run


async def test_a_held_result_writes_its_output_only_when_applied(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow, by="tester") == "ok"

    assert await lua.complete(flow, 1, output='{"r":1}') == "held"
    run = await lua.run(flow)
    assert "x:1:o" not in run and "x:1:t1" not in run

    assert await lua.store.resume(flow, by="tester") == "ok"
    replay = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", '{"r":1}', branch="default"),
        timer_member=member("res", flow, 1, 1),
    )
    assert replay == "ok"
    run = await lua.run(flow)
    assert (run["x:1:o"], run["status"]) == ('{"r":1}', "COMPLETED")
    assert "x:1:t1" in run


async def test_for_each_items_are_counted_executions_of_its_action_with_their_times(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    flow = await lua.start([each(1, queue, ['"a"', '"b"'], 1)])
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 2, output='{"r":1}', ops=[item(1, queue, 2)]) == "ok"

    run = await lua.run(flow)
    # The for-each (seq 1) and its two items so far; the action stays the for-each's.
    assert (run["a:1:c"], run["a:1:x"], run["x:2:o"]) == ("3", "1", '{"r":1}')
    assert int(run["x:1:t0"]) <= int(run["x:2:t0"]) <= int(run["x:2:t1"]) <= int(run["x:3:t0"])
    assert "x:3:t1" not in run and "x:1:t1" not in run
