"""The sub-workflow hand-offs are exactly once: the pieces are called in order by the test
(an engine on the tests' Redis with a private key prefix, so no server's sweeper takes its
timers), with a crash simulated between two of them (the pieces before it done, the handler
then run again as a sweeper would after its claim expired), and each handler run twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio

from app.engine.engine import Engine
from app.engine.ids import child_flow_id, idempotent_flow_id
from app.engine.snapshot import RunSnapshot
from app.settings import Settings
from tests.helpers.definitions import sub_workflow, system, user, workflow
from tests.helpers.lua import Lua, events_of, member
from tests.helpers.waiting import unique


@pytest_asyncio.fixture
async def engine(lua: Lua, settings: Settings) -> AsyncIterator[Engine]:
    engine = Engine(lua.store, settings)
    try:
        yield engine
    finally:
        engine.close()


async def start_apart(engine: Engine, name: str) -> str:
    """A run of ``name`` whose first execution's child lands in another partition."""
    keys = engine.store.keys
    for number in range(1000):
        key = f"{name}-{number}"
        parent = idempotent_flow_id(name, key)
        if keys.partition_of(parent) != keys.partition_of(child_flow_id(parent, 1)):
            flow_id, created = await engine.start(
                name, {"total": 5}, idempotency_key=key, by="tester"
            )
            assert created
            return flow_id
    raise AssertionError("no key puts the child elsewhere")


@dataclass(frozen=True)
class Pair:
    name: str  # the parent workflow
    charge: str  # the child's user action
    after: str  # the parent's user action after the child


async def register_pair(engine: Engine) -> Pair:
    """A parent workflow whose action 1 runs a child waiting for a user task (``charge``),
    then queues ``after`` with the child's output."""
    name, child = unique("handoff"), unique("handoff-child")
    charge, after = f"{child}-charge", f"{name}-after"
    await engine.catalog.register_workflow(
        workflow(child, user(1, charge, amount="{$.input.amount}"), output="{$.1.output}")
    )
    await engine.catalog.register_workflow(
        workflow(
            name,
            sub_workflow(1, child, {"default": [2]}, amount="{$.input.total}"),
            user(2, after, got="{$.1.output}"),
        )
    )
    return Pair(name, charge, after)


async def snapshot(engine: Engine, flow_id: str) -> RunSnapshot:
    return await engine.snapshot(flow_id)


async def run_of(lua: Lua, flow_id: str) -> dict[str, str]:
    return await lua.run(flow_id)


async def complete_one(engine: Engine, queue: str, output: dict[str, Any]) -> dict[str, Any]:
    [task] = await engine.poll("w-1", [queue], 1, 0)
    assert await engine.complete_task(task.task_id, output) == "ok"
    return {"flowId": task.flow_id, "input": task.input_json}


async def test_a_spawn_handler_run_again_starts_one_child(engine: Engine, lua: Lua) -> None:
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    spawn = member("spawn", parent, 1, 1)
    assert await lua.score(parent, spawn) is not None

    # The handler starts the child, and its server dies before recording it.
    view = await snapshot(engine, parent)
    execution = view.execution(1)
    assert execution is not None
    child = await engine.children.start_child(view, execution)
    assert child == child_flow_id(parent, 1)
    assert (await run_of(lua, child))["parent"] == parent
    assert "x:1:cid" not in await run_of(lua, parent)
    assert await lua.score(parent, spawn) is not None

    # The timer's claim expires; the handler runs again (and once more).
    assert await engine.handle_timer(str(spawn)) == "ok"
    assert await engine.handle_timer(str(spawn)) == "ok"
    assert (await run_of(lua, parent))["x:1:cid"] == child
    assert await lua.score(parent, spawn) is None
    assert events_of(await lua.history(parent)).count("CHILD_STARTED") == 1
    assert events_of(await lua.history(child)).count("RUN_STARTED") == 1
    child_run = await run_of(lua, child)
    assert (child_run["pseq"], child_run["paid"], child_run["depth"]) == ("1", "1", "1")
    assert child_run["lim"] == str(engine.settings.max_run_executions)  # a run's own limit
    assert engine.store.keys.partition_of(child) != engine.store.keys.partition_of(parent)
    # The child's one task.
    [task] = await engine.poll("w-1", [pair.charge], 10, 0)
    assert task.flow_id == child and task.input_json == '{"amount":5}'
    assert await engine.poll("w-1", [pair.charge], 10, 0) == []


async def test_a_childs_end_is_delivered_once(engine: Engine, lua: Lua) -> None:
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
    child = child_flow_id(parent, 1)
    await complete_one(engine, pair.charge, {"charged": 5})
    assert (await run_of(lua, child))["status"] == "COMPLETED"
    cend = member("cend", child, 0, 1)
    assert await lua.score(child, cend) is not None

    # The cend handler delivers the end, and its server dies before removing the timer.
    delivered = await engine.store.child_ended(parent, 1, child, "COMPLETED", '{"charged":5}', "")
    assert delivered == "delivered"
    assert await lua.score(child, cend) is not None
    # Run again: the parent was told already; the timer goes.
    assert await engine.handle_timer(str(cend)) == "stale"
    assert await engine.handle_timer(str(cend)) == "stale"
    assert await lua.score(child, cend) is None
    assert events_of(await lua.history(parent)).count("CHILD_ENDED") == 1

    # The parent's step, run twice, continues it once.
    step = str(member("step", parent, 1, 2))
    assert await engine.handle_timer(step) == "ok"
    assert await engine.handle_timer(step) == "stale"
    [task] = await engine.poll("w-1", [pair.after], 10, 0)
    assert (task.flow_id, task.input_json) == (parent, '{"got":{"charged":5}}')
    assert await engine.poll("w-1", [pair.after], 10, 0) == []
    history = await lua.history(parent)
    assert len([e for e in history if e["event"] == "COMPLETED" and e.get("action") == 1]) == 1


async def test_the_cend_handler_run_twice_delivers_once(engine: Engine, lua: Lua) -> None:
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
    child = child_flow_id(parent, 1)
    await complete_one(engine, pair.charge, {"charged": 7})
    cend = str(member("cend", child, 0, 1))
    assert await engine.handle_timer(cend) == "delivered"
    assert await engine.handle_timer(cend) == "stale"
    run = await run_of(lua, parent)
    assert (run["x:1:cs"], run["x:1:co"], run["x:1:n"]) == ("COMPLETED", '{"charged":7}', "2")
    assert events_of(await lua.history(parent)).count("CHILD_ENDED") == 1


async def test_the_kill_handler_run_twice_ends_the_child_once(engine: Engine, lua: Lua) -> None:
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
    child = child_flow_id(parent, 1)
    await engine.terminate(parent, "stop", by="tester")
    kill = str(member("kill", parent, 1, 1))
    assert await lua.score(parent, kill) is not None
    assert await engine.handle_timer(kill) == "ok"
    assert await engine.handle_timer(kill) == "terminal"
    assert await lua.score(parent, kill) is None
    child_run = await run_of(lua, child)
    assert (child_run["status"], child_run["reason"]) == (
        "TERMINATED",
        f"parent run {parent} TERMINATED",
    )
    assert events_of(await lua.history(child)).count("RUN_TERMINATED") == 1
    # The child's end reaches an ended parent: nothing to tell; its timer goes.
    cend = str(member("cend", child, 0, 1))
    assert await engine.handle_timer(cend) == "terminal"
    assert await lua.score(child, cend) is None


async def test_a_child_started_after_its_parent_ended_is_ended(engine: Engine, lua: Lua) -> None:
    """The spawn handler read the parent still running and was slow: the parent ended and
    its kill timer found no child; the child starts after that. Then the handler (or the
    next one, after a crash) ends it."""
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    spawn = str(member("spawn", parent, 1, 1))
    running = await snapshot(engine, parent)
    await engine.terminate(parent, "stop", by="tester")
    assert await engine.handle_timer(str(member("kill", parent, 1, 1))) == "missing"
    execution = running.execution(1)
    assert execution is not None
    child = await engine.children.start_child(running, execution)
    assert (await run_of(lua, child))["status"] == "RUNNING"
    # The handler (run again after its crash) finds the parent ended.
    assert await engine.handle_timer(spawn) == "terminal"
    assert (await run_of(lua, child))["status"] == "TERMINATED"
    assert await lua.score(parent, spawn) is None


async def test_a_paused_parent_holds_its_childs_end_until_resumed(engine: Engine, lua: Lua) -> None:
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
    await engine.pause(parent, by="tester")
    await complete_one(engine, pair.charge, {"charged": 1})
    assert await engine.handle_timer(str(member("cend", child_flow_id(parent, 1), 0, 1))) == (
        "held"
    )
    step = str(member("step", parent, 1, 2))
    assert await engine.handle_timer(step) == "held"
    assert await engine.poll("w-1", [pair.after], 10, 0) == []
    await engine.resume(parent, by="tester")
    assert await engine.handle_timer(step) == "ok"
    [task] = await engine.poll("w-1", [pair.after], 10, 0)
    assert task.input_json == '{"got":{"charged":1}}'


async def test_a_refused_spawn_of_a_paused_parent_fails_the_action_on_resume(
    engine: Engine, lua: Lua
) -> None:
    name = unique("refused")
    await engine.catalog.register_workflow(
        workflow(name, sub_workflow(1, unique("nowhere"), {"error": [2]}), user(2, f"{name}-e"))
    )
    parent, _ = await engine.start(name, {}, by="tester")
    await engine.pause(parent, by="tester")
    spawn = str(member("spawn", parent, 1, 1))
    assert await engine.handle_timer(spawn) == "held"
    assert (await lua.run(parent))["x:1:s"] == "WAITING"
    await engine.resume(parent, by="tester")
    assert await lua.score(parent, spawn) is not None  # made due again
    assert await engine.handle_timer(spawn) == "ok"
    run = await lua.run(parent)
    assert run["x:1:s"] == "FAILED" and run["a:1:e"].endswith("not found")
    [task] = await engine.poll("w-1", [f"{name}-e"], 10, 0)
    assert task.flow_id == parent


async def test_a_failing_cend_or_kill_timer_is_kept_for_another_try(
    engine: Engine, lua: Lua
) -> None:
    """Their runs have ended, so counting the failure on them would drop the timer."""
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
    child = child_flow_id(parent, 1)
    await complete_one(engine, pair.charge, {})
    cend = str(member("cend", child, 0, 1))
    claimed = await lua.score(child, cend)
    partition = engine.store.keys.partition_of(child)
    assert await engine.timer_failed(partition, cend, "RuntimeError: boom") == "retry"
    assert await lua.score(child, cend) == claimed
    assert await engine.handle_timer(cend) == "delivered"


async def test_a_spawn_that_keeps_failing_fails_the_action_and_ends_its_child(
    engine: Engine, lua: Lua, settings: Settings
) -> None:
    pair = await register_pair(engine)
    parent = await start_apart(engine, pair.name)
    view = await engine.snapshot(parent)
    execution = view.execution(1)
    assert execution is not None
    child = await engine.children.start_child(view, execution)  # then the handler raised
    spawn = str(member("spawn", parent, 1, 1))
    partition = engine.store.keys.partition_of(parent)
    answers = [
        await engine.timer_failed(partition, spawn, "RuntimeError: boom")
        for _ in range(settings.timer_max_attempts)
    ]
    assert answers == ["retry"] * (settings.timer_max_attempts - 1) + ["ok"]
    run = await lua.run(parent)
    assert (run["status"], run["x:1:s"]) == ("FAILED", "FAILED")
    child_run = await lua.run(child)
    assert (child_run["status"], child_run["reason"]) == (
        "TERMINATED",
        f"parent run {parent} FAILED",
    )


async def test_a_childs_output_over_the_limit_fails_the_action(
    lua: Lua, settings: Settings
) -> None:
    engine = Engine(lua.store, settings.model_copy(update={"max_output_bytes": 50}))
    try:
        name, child_name = unique("big"), unique("big-child")
        end = {"status": "COMPLETED", "output": {"blob": "{$.input.blob}"}}
        await engine.catalog.register_workflow(
            workflow(child_name, system(1, "terminate", parameters=end))
        )
        await engine.catalog.register_workflow(
            workflow(name, sub_workflow(1, child_name, blob="{$.input.blob}"))
        )
        parent, _ = await engine.start(name, {"blob": "x" * 100}, by="tester")
        assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
        child = child_flow_id(parent, 1)
        assert (await lua.run(child))["status"] == "COMPLETED"
        assert await engine.handle_timer(str(member("cend", child, 0, 1))) == "delivered"
        assert await engine.handle_timer(str(member("step", parent, 1, 2))) == "ok"
        run = await lua.run(parent)
        assert run["status"] == "FAILED"
        assert run["a:1:e"] == (
            f"sub-workflow {child_name} run {child} COMPLETED: its output is 111 bytes; the "
            "limit is 50 bytes (ORCHY_MAX_OUTPUT_BYTES)"
        )
    finally:
        engine.close()


async def test_a_childs_input_over_the_limit_fails_the_action(lua: Lua, settings: Settings) -> None:
    engine = Engine(lua.store, settings.model_copy(update={"max_input_bytes": 200}))
    try:
        name, child_name = unique("wide"), unique("wide-child")
        await engine.catalog.register_workflow(workflow(child_name, user(1, f"{child_name}-x")))
        await engine.catalog.register_workflow(
            workflow(
                name,
                sub_workflow(1, child_name, {"error": [2]}, a="{$.input.blob}", b="{$.input.blob}"),
                user(2, f"{name}-error", why="{$.1.output.error}"),
            )
        )
        parent, _ = await engine.start(name, {"blob": "x" * 100}, by="tester")
        assert await engine.handle_timer(str(member("spawn", parent, 1, 1))) == "ok"
        assert await lua.run(child_flow_id(parent, 1)) == {}
        [task] = await engine.poll("w-1", [f"{name}-error"], 1, 0)
        assert task.input_json == (
            '{"why":"sub-workflow '
            + child_name
            + " not started: its input is 215 bytes; the limit is 200 bytes "
            '(ORCHY_MAX_INPUT_BYTES)"}'
        )
    finally:
        engine.close()
