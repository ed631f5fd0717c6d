"""timer_failed.lua: a timer whose handling raised is counted, written to the history, and
made due again after a pause until its execution has failed as often as allowed.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from typing import Any

from tests.helpers.lua import (
    Lua,
    member,
    messages,
    sleep,
)

RETRY_MS = 500
MOST = 3
FAR_MS = 60_000


async def failed(lua: Lua, flow: str, timer: str, error: str = "boom") -> int:
    return await lua.store.timer_failed(flow, 1, timer, error, RETRY_MS, MOST)


async def test_failures_are_counted_written_and_retried_until_the_limit(
    lua: Lua, pubsub: Any
) -> None:
    flow = await lua.start([sleep(1, FAR_MS)])
    timer = member("fire", flow, 1, 1)
    await messages(pubsub, 1)  # the start's own timer notification
    rev = int((await lua.run(flow))["rev"])

    before = await lua.now()
    assert await failed(lua, flow, timer, "first") == 1
    due = await lua.score(flow, timer)
    assert due is not None and before + RETRY_MS <= due <= await lua.now() + RETRY_MS
    # Now the partition's earliest timer: the sweepers are told.
    assert await messages(pubsub, 1) == [f"t|{lua.partition(flow)}|{int(due)}"]
    run = await lua.run(flow)
    assert (run["x:1:tf"], run["x:1:s"], run["status"]) == ("1", "WAITING", "RUNNING")
    assert int(run["rev"]) == rev + 1
    last = (await lua.history(flow))[-1]
    assert (last["event"], last["seq"], last["timer"], last["attempt"], last["error"]) == (
        "TIMER_FAILED",
        1,
        timer,
        1,
        "first",
    )

    assert await failed(lua, flow, timer) == 2
    # At the limit the timer stays where its claim put it: the engine fails the run now.
    await lua.client.zadd(lua.timers_key(flow), {timer: before + FAR_MS})
    assert await failed(lua, flow, timer, "third") == MOST
    assert await lua.score(flow, timer) == before + FAR_MS
    assert [entry["attempt"] for entry in (await lua.history(flow))[-3:]] == [1, 2, 3]


async def test_a_timer_removed_meanwhile_is_not_brought_back(lua: Lua) -> None:
    flow = await lua.start([sleep(1, FAR_MS)])
    timer = member("fire", flow, 1, 1)
    await lua.client.zrem(lua.timers_key(flow), timer)

    assert await failed(lua, flow, timer) == 1
    assert await lua.score(flow, timer) is None


async def test_a_timer_of_an_ended_or_missing_run_is_dropped(lua: Lua) -> None:
    flow = await lua.start([sleep(1, FAR_MS)])
    timer = member("fire", flow, 1, 1)
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    await lua.client.zadd(lua.timers_key(flow), {timer: await lua.now()})
    history = await lua.history(flow)

    assert await failed(lua, flow, timer) == 0
    assert await lua.score(flow, timer) is None
    assert "x:1:tf" not in await lua.run(flow)
    assert await lua.history(flow) == history

    gone = lua.new_flow()
    stray = member("fire", gone, 1, 1)
    await lua.client.zadd(lua.timers_key(gone), {stray: await lua.now()})
    assert await failed(lua, gone, stray) == 0
    assert await lua.score(gone, stray) is None
    assert await lua.client.exists(lua.run_keys(gone).run) == 0
