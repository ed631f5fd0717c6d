"""event.lua: delivering or buffering events.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

import json

from tests.helpers.lua import (
    Lua,
    member,
    user,
    wait,
)


async def test_event_is_delivered_to_the_oldest_waiter(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event, 60_000), wait(2, event, 60_000)])
    assert await lua.waiters(flow) == [f"1|{event}", f"2|{event}"]

    before = await lua.now()
    assert await lua.store.send_event(flow, event, '{"k":"first"}', by="svc-a") == "delivered"
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["x:1:evn"], run["x:1:evd"], run["x:1:n"]) == (event, '{"k":"first"}', "2")
    assert "x:2:evn" not in run
    assert run["x:2:n"] == "1"
    assert before <= int(run["updatedAt"]) <= after
    assert await lua.score(flow, member("wto", flow, 1, 1)) is None
    step = await lua.score(flow, member("step", flow, 1, 2))
    assert step is not None
    assert before <= step <= after
    assert await lua.score(flow, member("wto", flow, 2, 1)) is not None
    assert await lua.waiters(flow) == [f"2|{event}"]
    received = (await lua.history(flow))[-1]
    assert received == {
        "event": "EVENT_RECEIVED",
        "name": event,
        "seq": 1,
        "by": "svc-a",
        "at": received["at"],
    }
    assert before <= received["at"] <= after

    assert await lua.store.send_event(flow, event, '{"k":"second"}', by="tester") == "delivered"
    run = await lua.run(flow)
    assert (run["x:2:evd"], run["x:2:n"]) == ('{"k":"second"}', "2")
    assert await lua.score(flow, member("wto", flow, 2, 1)) is None
    assert await lua.score(flow, member("step", flow, 2, 2)) is not None
    assert await lua.waiters(flow) == []
    assert await lua.events(flow) == []

    # The step timer completes the wait; its timeout timer would now be stale.
    assert await lua.finish_waiting(flow, 1, "step", 2, '{"k":"first"}') == "ok"
    assert await lua.finish_waiting(flow, 1, "wto", 1) == "stale"
    assert (await lua.run(flow))["x:1:o"] == '{"k":"first"}'


async def test_events_are_buffered_and_consumed_in_order(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start([user(1, queue)])
    assert await lua.store.send_event(flow, event, '"one"', by="svc-a") == "buffered"
    assert await lua.store.send_event(flow, event, '"two"', by="svc-b") == "buffered"
    assert await lua.store.send_event(flow, event, '"three"', by="svc-a") == "buffered"
    assert [json.loads(entry) for entry in await lua.events(flow)] == [
        {"n": event, "d": '"one"'},
        {"n": event, "d": '"two"'},
        {"n": event, "d": '"three"'},
    ]
    buffered = [e for e in await lua.history(flow) if e["event"] == "EVENT_BUFFERED"]
    assert [e["name"] for e in buffered] == [event] * 3
    assert [e["by"] for e in buffered] == ["svc-a", "svc-b", "svc-a"]
    await lua.poll(flow, queue)

    assert await lua.complete(flow, 1, ops=[wait(2, event), wait(3, event)]) == "ok"

    run = await lua.run(flow)
    assert (run["x:2:evd"], run["x:3:evd"]) == ('"one"', '"two"')
    assert [json.loads(entry)["d"] for entry in await lua.events(flow)] == ['"three"']
    assert await lua.waiters(flow) == []


async def test_waiters_of_different_events_are_independent(lua: Lua) -> None:
    left, right, nobody = lua.new_name("ev"), lua.new_name("ev"), lua.new_name("ev")
    flow = await lua.start([wait(1, left, 60_000), wait(2, right, 60_000)])

    assert await lua.store.send_event(flow, right, "2", by="tester") == "delivered"
    assert await lua.store.send_event(flow, nobody, "3", by="tester") == "buffered"

    run = await lua.run(flow)
    assert (run["x:2:evn"], run["x:2:evd"]) == (right, "2")
    assert "x:1:evn" not in run
    assert await lua.waiters(flow) == [f"1|{left}"]
    assert await lua.score(flow, member("wto", flow, 1, 1)) is not None
    assert await lua.score(flow, member("step", flow, 1, 2)) is None
    assert [json.loads(entry)["n"] for entry in await lua.events(flow)] == [nobody]

    assert await lua.store.send_event(flow, left, "1", by="tester") == "delivered"
    assert (await lua.run(flow))["x:1:evd"] == "1"
    assert await lua.waiters(flow) == []


async def test_event_of_ended_or_missing_run(lua: Lua) -> None:
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event)])
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    run_before = await lua.run(flow)

    history_before = await lua.history(flow)

    assert await lua.store.send_event(flow, event, "1", by="tester") == "terminal"
    assert await lua.run(flow) == run_before
    assert await lua.history(flow) == history_before
    assert await lua.events(flow) == []
    ghost = lua.new_flow()
    assert await lua.store.send_event(ghost, event, "1", by="tester") == "missing"
    assert await lua.client.exists(lua.run_keys(ghost).events) == 0
    assert await lua.client.exists(lua.run_keys(ghost).run) == 0


async def test_event_to_a_paused_run_is_answered_held_and_its_step_held(lua: Lua) -> None:
    """The wait takes the event, but nothing moves until the run is resumed: the answer
    says so ("held"), as a worker's result to a paused run is answered."""
    event = lua.new_name("ev")
    flow = await lua.start([wait(1, event)])
    assert await lua.store.pause(flow, by="tester") == "ok"

    assert await lua.store.send_event(flow, event, '"x"', by="tester") == "held"
    assert await lua.finish_waiting(flow, 1, "step", 2) == "held"

    assert await lua.held(flow) == {member("step", flow, 1, 2)}
    assert (await lua.run(flow))["x:1:s"] == "WAITING"
