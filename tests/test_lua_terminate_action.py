"""The "end" op of apply_ops (common.lua): a terminate action ends the run in the transition
that reaches it, closing whatever is still open.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from app.store.store import Outcome
from tests.helpers.lua import (
    RETENTION,
    Lua,
    done,
    end,
    join,
    member,
    queue_entry,
    sleep,
    user,
    wait,
)


async def test_end_at_the_start_fails_the_run_and_hides_its_queued_task(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start(
        [user(1, queue), done(9, '{"status":"FAILED"}', ""), end(9, "FAILED", "rejected")]
    )

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"]) == ("FAILED", "rejected", "0")
    assert "finishedAt" in run and "output" not in run
    assert (run["x:1:s"], run["x:1:e"], run["a:1:e"]) == ("FAILED", "rejected", "rejected")
    assert (run["x:2:a"], run["x:2:s"]) == ("9", "COMPLETED")
    ended = [entry for entry in await lua.history(flow) if entry["event"].startswith("RUN_")]
    assert [(e["event"], e.get("reason"), e.get("action")) for e in ended] == [
        ("RUN_STARTED", None, None),
        ("RUN_FAILED", "rejected", 9),
    ]
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION

    assert await lua.queue(flow, queue) == [queue_entry(flow, 1, 1)]
    assert await lua.poll(flow, queue) == []


async def test_end_completed_from_a_result_keeps_the_output_and_closes_the_rest(
    lua: Lua,
) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start(
        [user(1, queue), user(2, queue), sleep(3, 60_000), wait(4, event, 60_000), join(5, "2")]
    )
    await lua.poll(flow, queue)

    reply = await lua.complete(
        flow, 1, ops=[done(9), end(9, "COMPLETED", "approved", '{"total":42}')]
    )
    assert reply == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["output"]) == (
        "COMPLETED",
        "approved",
        '{"total":42}',
    )
    assert (run["active"], run["joins"]) == ("0", "")
    assert run["x:1:s"] == "COMPLETED"
    for seq in (2, 3, 4, 5):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:e"]) == ("FAILED", "approved"), seq
    assert "a:5:jw" not in run
    last = (await lua.history(flow))[-1]
    assert (last["event"], last["reason"], last["action"]) == ("RUN_COMPLETED", "approved", 9)

    # What was open gets nowhere now: the running task's result, the delay's timer.
    assert await lua.complete(flow, 2) == "terminal"
    assert await lua.finish_waiting(flow, 3, "fire", 1) == "terminal"
    assert await lua.score(flow, member("fire", flow, 3, 1)) is None


async def test_end_skips_later_ops_and_ends_the_run_once(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)

    reply = await lua.complete(
        flow,
        1,
        ops=[done(9), end(9, "FAILED", "first"), user(2, queue)],
        fail_reason="second",
    )
    assert reply == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["reason"]) == ("FAILED", "first")
    assert "x:3:a" not in run  # the op after the end was not applied
    assert await lua.queue(flow, queue) == []
    finished = [e for e in await lua.history(flow) if e["event"] in ("RUN_FAILED", "RUN_COMPLETED")]
    assert len(finished) == 1


async def test_end_from_a_fired_delay(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([sleep(1, 0), user(2, queue)])
    reply = await lua.store.transition(
        flow,
        1,
        "WAITING",
        1,
        Outcome("COMPLETED", "{}", branch="default"),
        [done(9), end(9, "FAILED", "too late")],
        timer_member=member("fire", flow, 1, 1),
        held_member=member("fire", flow, 1, 1),
    )
    assert reply == "ok"
    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["x:2:s"]) == ("FAILED", "too late", "FAILED")
    assert await lua.poll(flow, queue) == []
