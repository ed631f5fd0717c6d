"""The search indexes kept by the run-changing scripts (the ``ix_*`` helpers of common.lua)
and search_prune.lua, which takes ended runs out of them.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json

import pytest
from redis.exceptions import ResponseError

from app.store.store import PlannedOp, RunRetry, RunStart
from tests.helpers.lua import Lua, sleep, user

STATUSES = ("RUNNING", "PAUSED", "COMPLETED", "FAILED", "TERMINATED")
VERSION = 3  # the harness's runs are version 3


def index(lua: Lua, flow: str, values: dict[str, str] | None = None, most: int = 256) -> PlannedOp:
    state = {"k": lua.keys.index_prefix(lua.partition(flow)), "m": most, "v": values or {}}
    return PlannedOp("index", 0, payload=json.dumps(state))


def var(name: str, value: str) -> PlannedOp:
    return PlannedOp("var", 0, name, value, input="assign")


async def statuses_of(lua: Lua, flow: str) -> list[str]:
    """The status indexes that hold ``flow``."""
    partition = lua.partition(flow)
    found = []
    for status in STATUSES:
        if await lua.client.zscore(lua.keys.by_status(partition, status), flow) is not None:
            found.append(status)
    return found


async def in_value(lua: Lua, flow: str, path: str, token: str) -> bool:
    key = lua.keys.by_value(lua.partition(flow), path, token)
    return await lua.client.zscore(key, flow) is not None


async def ended_at(lua: Lua, flow: str) -> float | None:
    score: float | None = await lua.client.zscore(lua.keys.ended(lua.partition(flow)), flow)
    return score


async def test_each_status_change_moves_the_run_between_status_indexes(lua: Lua) -> None:
    queue = lua.new_name()
    name = lua.new_name("wf")
    flow = lua.new_flow()
    await lua.start([index(lua, flow), user(1, queue)], flow=flow, name=name)
    run = await lua.run(flow)
    partition = lua.partition(flow)
    created = float(run["createdAt"])
    assert await statuses_of(lua, flow) == ["RUNNING"]
    by_version = lua.keys.by_version(partition, name, VERSION)
    assert await lua.client.zscore(by_version, flow) == created
    assert await lua.client.zscore(lua.keys.by_status(partition, "RUNNING"), flow) == created

    assert await lua.store.pause(flow, by="tester") == "ok"
    assert await statuses_of(lua, flow) == ["PAUSED"]
    assert await lua.store.resume(flow, by="tester") == "ok"
    assert await statuses_of(lua, flow) == ["RUNNING"]
    assert await ended_at(lua, flow) is None
    # A refused change moves nothing.
    assert await lua.store.resume(flow, by="tester") == "not_paused"
    assert await statuses_of(lua, flow) == ["RUNNING"]

    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    assert await statuses_of(lua, flow) == ["TERMINATED"]
    run = await lua.run(flow)
    assert await ended_at(lua, flow) == float(run["finishedAt"])
    assert await lua.client.zscore(lua.keys.by_status(partition, "TERMINATED"), flow) == created


async def test_a_run_that_completes_or_fails_lands_in_its_end_status(lua: Lua) -> None:
    queue = lua.new_name()
    completing = lua.new_flow()
    await lua.start([index(lua, completing), user(1, queue)], flow=completing)
    await lua.poll(completing, queue)
    assert await lua.complete(completing, 1) == "ok"
    assert await statuses_of(lua, completing) == ["COMPLETED"]
    assert await ended_at(lua, completing) is not None

    failing = lua.new_flow()
    await lua.start([index(lua, failing), user(1, queue)], flow=failing)
    await lua.poll(failing, queue)
    assert await lua.fail(failing, 1, "boom", fail_reason="action 1 failed") == "ok"
    assert await statuses_of(lua, failing) == ["FAILED"]

    # Failed at its start: it is never left in RUNNING.
    at_once = lua.new_flow()
    await lua.start([index(lua, at_once)], flow=at_once, fail_reason="bad input")
    assert await statuses_of(lua, at_once) == ["FAILED"]

    # A run started without an index op (before indexes were kept) is in none.
    bare = await lua.start([user(1, queue)])
    assert await lua.store.terminate(bare, "stop", by="tester") == "ok"
    assert await statuses_of(lua, bare) == []
    assert await ended_at(lua, bare) is None


async def test_input_values_are_indexed_at_start(lua: Lua) -> None:
    flow = lua.new_flow()
    values = {"input.email": "a@b.c", "input.missing": ""}
    await lua.start([index(lua, flow, values), user(1, lua.new_name())], flow=flow)
    assert await in_value(lua, flow, "input.email", "a@b.c")
    assert not await in_value(lua, flow, "input.missing", "")


async def test_setting_a_searchable_variable_moves_its_entry(lua: Lua) -> None:
    queue = lua.new_name()
    flow = lua.new_flow()
    values = {"vars.orderId": ""}
    await lua.start(
        [
            index(lua, flow, values, most=8),
            var("orderId", '"A-1"'),
            var("other", '"x"'),
            user(1, queue),
        ],
        flow=flow,
    )
    assert await in_value(lua, flow, "vars.orderId", "A-1")
    # Only declared paths are indexed.
    assert not await in_value(lua, flow, "vars.other", "x")

    await lua.poll(flow, queue)
    assert await lua.complete(flow, 1, ops=[var("orderId", "42"), user(2, queue)]) == "ok"
    assert not await in_value(lua, flow, "vars.orderId", "A-1")
    assert await in_value(lua, flow, "vars.orderId", "42")
    assert json.loads((await lua.run(flow))["ix"])["v"] == {"vars.orderId": "42"}

    # Values that are not indexed: an object, null, and longer than ``m`` (8 bytes).
    for not_indexed in ('{"a":1}', "null", '"123456789"'):
        [task] = await lua.poll(flow, queue)
        seq = task.task_id.split(".")[1]
        assert (
            await lua.complete(flow, int(seq), ops=[var("orderId", not_indexed), user(3, queue)])
            == "ok"
        )
        assert not await in_value(lua, flow, "vars.orderId", "42")
        assert json.loads((await lua.run(flow))["ix"])["v"] == {"vars.orderId": ""}
    [task] = await lua.poll(flow, queue)
    seq = task.task_id.split(".")[1]
    assert await lua.complete(flow, int(seq), ops=[var("orderId", "true")]) == "ok"
    assert await in_value(lua, flow, "vars.orderId", "true")


async def prune(lua: Lua, partition: int, after_ms: int) -> int:
    return await lua.store.prune_search(partition, after_ms, 100)


async def test_prune_takes_ended_runs_out_of_every_index(lua: Lua) -> None:
    queue = lua.new_name()
    name = lua.new_name("wf")
    ended = lua.new_flow()
    values = {"input.email": "a@b.c", "vars.orderId": ""}
    await lua.start(
        [index(lua, ended, values), var("orderId", "7"), user(1, queue)], flow=ended, name=name
    )
    partition = lua.partition(ended)
    # A running run of the same partition stays.
    running = lua.new_flow()
    while lua.partition(running) != partition:
        running = lua.new_flow()
    await lua.start([index(lua, running, values), user(1, queue)], flow=running, name=name)
    assert await lua.store.terminate(ended, "stop", by="tester") == "ok"

    # Ended too recently: kept.
    assert await prune(lua, partition, 3_600_000) == 0
    assert await statuses_of(lua, ended) == ["TERMINATED"]

    assert await prune(lua, partition, 0) == 1
    assert await statuses_of(lua, ended) == []
    assert await ended_at(lua, ended) is None
    assert not await in_value(lua, ended, "input.email", "a@b.c")
    assert not await in_value(lua, ended, "vars.orderId", "7")
    for key in (
        lua.keys.runs_index(partition),
        lua.keys.runs_by_name(partition, name),
        lua.keys.by_version(partition, name, VERSION),
    ):
        assert await lua.client.zscore(key, ended) is None
        assert await lua.client.zscore(key, running) is not None
    assert await statuses_of(lua, running) == ["RUNNING"]
    assert await in_value(lua, running, "input.email", "a@b.c")


async def test_prune_of_a_run_already_expired(lua: Lua) -> None:
    flow = lua.new_flow()
    await lua.start([index(lua, flow), user(1, lua.new_name())], flow=flow)
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    await lua.client.delete(lua.run_keys(flow).run)
    partition = lua.partition(flow)
    assert await prune(lua, partition, 0) == 1
    assert await statuses_of(lua, flow) == []
    assert await ended_at(lua, flow) is None
    assert await lua.client.zscore(lua.keys.runs_index(partition), flow) is None


async def test_a_start_that_fails_midway_leaves_no_index_entry(lua: Lua) -> None:
    queue, name = lua.new_name(), lua.new_name("wf")
    flow = lua.new_flow()
    ops = [index(lua, flow, {"input.email": "a@b.c"}), user(1, queue), sleep(2, 1000)]
    keys, args = lua.store._start_call(RunStart(flow, name, 1, "{}", "", "", ops, by="tester"))
    # The sleep's number is not a number: the script fails after the index op was applied.
    args[args.index(1000)] = "soon"
    with pytest.raises(ResponseError, match="arithmetic"):
        await lua.store.scripts.start(keys=keys, args=args)
    partition = lua.partition(flow)
    assert await statuses_of(lua, flow) == []
    assert not await in_value(lua, flow, "input.email", "a@b.c")
    assert await lua.client.zscore(lua.keys.by_version(partition, name, 1), flow) is None


async def test_a_retried_run_moves_back_to_running_and_leaves_the_ended_index(lua: Lua) -> None:
    queue = lua.new_name()
    flow = lua.new_flow()
    await lua.start([index(lua, flow), user(1, queue)], flow=flow)
    await lua.poll(flow, queue)
    assert await lua.fail(flow, 1, "boom", fail_reason="action 1 failed: boom") == "ok"
    assert await statuses_of(lua, flow) == ["FAILED"]
    assert await ended_at(lua, flow) is not None
    rev = (await lua.run(flow))["rev"]
    change = RunRetry(flow, rev, "tester", "", [1], [1], [], [user(1, queue)])
    assert await lua.store.retry(change) == "ok"
    assert await statuses_of(lua, flow) == ["RUNNING"]
    assert await ended_at(lua, flow) is None
