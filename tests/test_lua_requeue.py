"""requeue.lua: a retry's back-off is over.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ResponseError

from tests.helpers.lua import (
    Lua,
    entry_of,
    member,
    messages,
    queue_entry,
    user,
)


async def retried(lua: Lua, queue: str) -> str:
    """A run whose action 1 failed once and waits for its second attempt."""
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.fail_retryable(flow, 1, "e") == "ok"
    return flow


async def test_requeue_puts_the_next_attempt_on_the_queue(lua: Lua, pubsub: Any) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    partition = lua.partition(flow)
    # start's queue message, then the lease timer and the enq timer (each the earliest).
    earlier = await messages(pubsub, 3)
    assert earlier[0] == f"q|{partition}|{queue}"
    assert [text.split("|")[:2] for text in earlier[1:]] == [["t", str(partition)]] * 2
    enq = member("enq", flow, 1, 2)
    assert await lua.score(flow, enq) is not None

    before = await lua.now()
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "ok"

    assert int((await lua.run(flow))["updatedAt"]) >= before
    # When the attempt was queued again (GET /tasks/queues: the oldest task's age).
    assert before <= int((await lua.run(flow))["x:1:tq"]) <= await lua.now()
    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 2)]
    assert await lua.score(flow, enq) is None
    assert await messages(pubsub, 1) == [f"q|{partition}|{queue}"]
    assert (await lua.history(flow))[-1]["event"] == "QUEUED"
    assert (await lua.history(flow))[-1]["attempt"] == 2
    tasks = await lua.poll(flow, queue)
    assert [(entry_of(task.task_id), task.attempt) for task in tasks] == [
        (queue_entry(flow, 1, 2), 2)
    ]
    assert await lua.score(flow, member("lease", flow, 1, 2)) is not None
    # Once leased, the same enq timer handled again is stale and queues nothing.
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "stale"
    assert await lua.queue(flow, queue) == []


async def test_requeue_of_a_stale_attempt_is_refused(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    old = member("enq", flow, 1, 1)
    await lua.client.zadd(lua.timers_key(flow), {old: 1})
    run_before = await lua.run(flow)

    assert await lua.store.requeue(flow, 1, 1, old, queue) == "stale"
    assert await lua.store.requeue(flow, 5, 1, member("enq", flow, 5, 1), queue) == "stale"

    assert await lua.queue(flow, queue) == []
    assert await lua.score(flow, old) is None
    assert await lua.run(flow) == run_before
    # The current attempt's timer is untouched.
    assert await lua.score(flow, member("enq", flow, 1, 2)) is not None


async def test_requeue_of_a_paused_run_is_held(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    enq = member("enq", flow, 1, 2)
    assert await lua.store.pause(flow, by="tester") == "ok"

    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "held"

    assert await lua.held(flow) == {enq}
    assert await lua.score(flow, enq) is None
    assert await lua.queue(flow, queue) == []
    assert await lua.store.resume(flow, by="tester") == "ok"
    assert await lua.score(flow, enq) is not None
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "ok"
    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 2)]


async def test_requeue_of_ended_or_missing_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    enq = member("enq", flow, 1, 2)
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    assert await lua.store.requeue(flow, 1, 2, enq, queue) == "terminal"
    assert await lua.score(flow, enq) is None
    assert await lua.queue(flow, queue) == []

    ghost = lua.new_flow()
    ghost_enq = member("enq", ghost, 1, 2)
    await lua.client.zadd(lua.timers_key(ghost), {ghost_enq: 1})
    assert await lua.store.requeue(ghost, 1, 2, ghost_enq, queue) == "missing"
    assert await lua.score(ghost, ghost_enq) is None
    assert await lua.queue(ghost, queue) == []


async def test_requeue_to_a_queue_key_of_another_type_changes_nothing(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    enq = member("enq", flow, 1, 2)
    await lua.client.set(lua.queue_key(flow, queue), "not a list")
    run, history, due = await lua.run(flow), await lua.history(flow), await lua.score(flow, enq)

    with pytest.raises(ResponseError, match="holds a string, not a list"):
        await lua.store.requeue(flow, 1, 2, enq, queue)

    assert await lua.run(flow) == run
    assert await lua.history(flow) == history
    assert await lua.score(flow, enq) == due


async def test_requeue_with_a_poll_timeout_starts_its_timer(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await retried(lua, queue)
    enq = member("enq", flow, 1, 2)

    before = await lua.now()
    assert await lua.store.requeue(flow, 1, 2, enq, queue, poll_timeout_ms=4000) == "ok"
    after = await lua.now()

    due = await lua.score(flow, member("pto", flow, 1, 2))
    assert due is not None and before + 4000 <= due <= after + 4000
    assert await lua.score(flow, member("pto", flow, 1, 1)) is None
    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 2)]
