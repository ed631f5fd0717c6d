"""Behaviour of the Lua scripts that the other test_lua_*.py files left unchecked: each test
here catches a mutant of tests/mutation/lua_catalogue.py that they let through (its id is in
the test's docstring).

Each test runs on a private key prefix; see test_lua_scripts.py for the helpers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import ResponseError

from app.store.store import Applied, Outcome, PlannedOp, RunStart, Transition
from tests.helpers.lua import (
    Lua,
    assert_no_run,
    done,
    events_of,
    failed,
    join,
    member,
    messages,
    queue_entry,
    user,
    user_with_poll_timeout,
    wait,
)
from tests.helpers.waiting import wait_until

LEASE_MS = 30_000
SECRET = "e" * 32


async def clock_passes(lua: Lua, ms: int) -> None:
    """Waits until Redis's clock is past ``ms``, so that a write stamped now is seen to be."""

    async def passed() -> bool:
        return await lua.now() > ms

    await wait_until(passed, what=f"the Redis clock to pass {ms}")


def leased(op: PlannedOp) -> PlannedOp:
    """``op`` marked to be leased at once to the transition's worker."""
    return PlannedOp(op.kind, op.action_id, op.name, op.payload, LEASE_MS, op.queue)


async def complete_for(lua: Lua, flow: str, ops: list[PlannedOp]) -> Applied:
    """Completes leased execution 1 for a worker that takes the next task at once."""
    change = Transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("COMPLETED", "{}", branch="default"),
        ops,
        timer_member=member("lease", flow, 1, 1),
        lease_to="w-next",
        take_secrets=SECRET,
    )
    [reply], _ = await lua.store.transitions([change])
    return reply


# -- common.lua -------------------------------------------------------------------------


async def test_a_task_leased_at_once_has_both_history_entries_timed(lua: Lua) -> None:
    """common-4: the further entries that one ``hist`` call writes are timed too."""
    queue, mine = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    before = await lua.now()

    assert await complete_for(lua, flow, [leased(user(2, mine))]) == Applied("ok", (2,))

    after = await lua.now()
    seq_two = [entry for entry in await lua.history(flow) if entry.get("seq") == 2]
    assert events_of(seq_two) == ["QUEUED", "RUNNING"]
    assert all(before <= entry["at"] <= after for entry in seq_two), seq_two


async def test_a_queued_task_with_a_poll_timeout_is_not_leased_at_once(lua: Lua) -> None:
    """common-21: only a positive number (a lease time) leases a task at once; a negative one
    is a poll timeout, and its task is queued under its timer."""
    queue, other = lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    assert await complete_for(lua, flow, [user_with_poll_timeout(2, other, 5_000)]) == Applied("ok")

    assert await lua.queue(flow, other) == [queue_entry(flow, 2, 1)]
    run = await lua.run(flow)
    assert (run["x:2:s"], run.get("x:2:w"), run.get("x:2:k")) == ("QUEUED", None, None)
    assert await lua.score(flow, member("pto", flow, 2, 1)) is not None
    assert await lua.score(flow, member("lease", flow, 2, 1)) is None


async def test_leasing_an_older_execution_leaves_its_actions_latest_status(lua: Lua) -> None:
    """common-11: an action's fields describe its latest execution only."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(1, queue)])
    assert (await lua.run(flow))["a:1:x"] == "2"

    [task] = await lua.poll(flow, queue, most=1)

    assert task.task_id.startswith(queue_entry(flow, 1, 1) + ".")
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:2:s"], run["a:1:s"]) == ("RUNNING", "QUEUED", "QUEUED")


async def test_a_wait_consumes_one_of_two_identical_buffered_events(lua: Lua) -> None:
    """common-13: a wait takes one buffered event; an identical one stays for the next."""
    queue, event = lua.new_name(), lua.new_name("ev")
    flow = await lua.start([user(1, queue)])
    for _ in range(2):
        assert await lua.store.send_event(flow, event, '{"same":1}', by="tester") == "buffered"
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, ops=[wait(2, event)]) == "ok"

    assert (await lua.run(flow))["x:2:evd"] == '{"same":1}'
    assert [json.loads(entry) for entry in await lua.events(flow)] == [
        {"n": event, "d": '{"same":1}'}
    ]


async def test_a_lease_stamps_the_run_updated(lua: Lua) -> None:
    """common-17: leasing a task is a change of the run, so its updatedAt moves."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    started = int((await lua.run(flow))["updatedAt"])
    await clock_passes(lua, started)

    await lua.poll(flow, queue)

    assert int((await lua.run(flow))["updatedAt"]) > started


async def test_a_system_action_that_completes_drops_its_earlier_error(lua: Lua) -> None:
    """common-22: an action's error is that of its latest execution, if it failed."""
    queue = lua.new_name()
    flow = await lua.start([failed(2, "boom"), user(1, queue)])
    assert (await lua.run(flow))["a:2:e"] == "boom"
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 2, ops=[done(2, '{"fine":true}')]) == "ok"

    run = await lua.run(flow)
    assert (run["a:2:s"], run["x:3:o"], run.get("a:2:e")) == ("COMPLETED", '{"fine":true}', None)


async def test_two_joins_wait_at_once_and_each_fires_on_its_own(lua: Lua) -> None:
    """common-28: the run's list of waiting joins keeps every one of them."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue), join(3, "1"), join(4, "2")])
    assert (await lua.run(flow))["joins"] == "3,4"
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1) == "ok"

    run = await lua.run(flow)
    assert (run["joins"], run.get("a:3:jf"), run.get("a:4:jf")) == ("4", "1", None)
    ready = [entry for entry in await lua.history(flow) if entry["event"] == "JOIN_READY"]
    assert [(entry["action"], entry["seq"]) for entry in ready] == [(3, 3)]
    assert await lua.score(flow, member("step", flow, 3, 2)) is not None


async def test_a_finished_run_is_announced_for_the_run_logs(lua: Lua, pubsub: Any) -> None:
    """common-31: every run that ends publishes f|partition|flow|status|reason."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    assert await messages(pubsub, 1) == [f"q|{lua.partition(flow)}|{queue}"]

    assert await lua.store.terminate(flow, "stop it", by="tester") == "ok"

    assert await messages(pubsub, 1) == [f"f|{lua.partition(flow)}|{flow}|TERMINATED|stop it"]


# -- transition.lua ---------------------------------------------------------------------


async def test_a_held_result_takes_the_place_of_a_held_lease_expiry(lua: Lua) -> None:
    """transition-8: while paused, a lease expires and then the worker's result arrives: only
    the result is held, so that the resume applies it and not the expiry."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow, by="tester") == "ok"
    lease, result = member("lease", flow, 1, 1), member("res", flow, 1, 1)
    expiry = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        Outcome("FAILED", '{"error":"lease expired"}', error="lease expired", branch="error"),
        timer_member=lease,
        held_member=lease,
    )
    assert expiry == "held"
    assert await lua.held(flow) == {lease}

    assert await lua.complete(flow, 1) == "held"

    assert await lua.held(flow) == {result}


async def test_a_completion_drops_the_error_of_a_failed_earlier_attempt(lua: Lua) -> None:
    """transition-14: once an attempt completes, the action has no error."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue)])
    await lua.poll(flow, queue)
    assert await lua.fail_retryable(flow, 1, "flaky") == "ok"
    assert (await lua.run(flow))["a:1:e"] == "flaky"
    assert await lua.store.requeue(flow, 1, 2, member("enq", flow, 1, 2), queue) == "ok"
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, attempt=2) == "ok"

    run = await lua.run(flow)
    assert (run["a:1:s"], run["x:1:n"], run.get("a:1:e")) == ("COMPLETED", "2", None)


async def test_a_transition_whose_first_queue_is_not_a_list_changes_nothing(lua: Lua) -> None:
    """transition-18: check_queues starts at the first queue key, KEYS[7]."""
    queue, broken, good = lua.new_name(), lua.new_name(), lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    await lua.client.set(lua.queue_key(flow, broken), "not a list")
    run, history = await lua.run(flow), await lua.history(flow)

    with pytest.raises(ResponseError, match="holds a string, not a list"):
        await lua.complete(flow, 1, ops=[user(2, broken), user(3, good)])

    assert await lua.run(flow) == run
    assert await lua.history(flow) == history
    assert await lua.queue(flow, good) == []


# -- start.lua --------------------------------------------------------------------------


async def test_a_start_that_fails_after_writing_history_leaves_no_history(lua: Lua) -> None:
    """start-3: the cleanup of a failed start deletes the history too, which a run that
    ends at once writes before it sets its keys' expiry."""
    flow = lua.new_flow()
    keys, args = lua.store._start_call(RunStart(flow, "wf", 1, "{}", "", "", [], by="tester"))
    # Not a number of seconds: the run completes and writes its history, then its EXPIRE
    # fails, as any command failing that late would.
    args[3] = "soon"

    with pytest.raises(ResponseError):
        await lua.store.scripts.start(keys=keys, args=args)

    await assert_no_run(lua, flow, "wf")


async def test_a_start_whose_first_queue_is_not_a_list_changes_nothing(lua: Lua) -> None:
    """start-5: check_queues starts at the first queue key, KEYS[9]."""
    broken, good = lua.new_name(), lua.new_name()
    flow = lua.new_flow()
    await lua.client.set(lua.queue_key(flow, broken), "not a list")

    with pytest.raises(ResponseError, match="holds a string, not a list"):
        await lua.store.start_run(
            flow, "wf", 1, "{}", "", "", [user(1, broken), user(2, good)], by="tester"
        )

    await assert_no_run(lua, flow, "wf")
    assert await lua.queue(flow, good) == []


# -- event.lua --------------------------------------------------------------------------


async def test_an_event_reaches_only_waits_for_exactly_its_name(lua: Lua) -> None:
    """event-5: an event's name must equal the awaited name, not merely be part of it."""
    name = lua.new_name("ev")
    flow = await lua.start([wait(1, f"{name}-late", 60_000)])

    assert await lua.store.send_event(flow, name, "1", by="tester") == "buffered"

    assert await lua.waiters(flow) == [f"1|{name}-late"]
    assert "x:1:evn" not in await lua.run(flow)


# -- pause.lua --------------------------------------------------------------------------


async def test_a_pause_stamps_the_run_updated(lua: Lua) -> None:
    """pause-3: pausing is a change of the run, so its updatedAt moves."""
    flow = await lua.start([user(1, lua.new_name())])
    started = int((await lua.run(flow))["updatedAt"])
    await clock_passes(lua, started)

    assert await lua.store.pause(flow, by="tester") == "ok"

    assert int((await lua.run(flow))["updatedAt"]) > started


# -- register_workflow.lua --------------------------------------------------------------


async def test_a_second_version_registered_again_is_that_version(lua: Lua) -> None:
    """register_workflow-4: a digest names the version it was stored as."""
    name = lua.new_name("wf")
    assert await lua.store.register_workflow(name, "digest-a", '{"v":"a"}') == (1, True)
    assert await lua.store.register_workflow(name, "digest-b", '{"v":"b"}') == (2, True)

    assert await lua.store.register_workflow(name, "digest-b", '{"v":"b"}') == (2, False)

    assert await lua.client.hget(lua.store.keys.workflow(name), "d:digest-b") == "2"
