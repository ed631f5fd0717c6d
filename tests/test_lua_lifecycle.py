"""pause.lua, resume.lua and terminate.lua.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from app.store.store import Outcome
from tests.helpers.lua import (
    RETENTION,
    Lua,
    done,
    end,
    member,
    queue_entry,
    sleep,
    user,
    wait,
)


async def test_pause_and_its_refusals(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])

    before = await lua.now()
    assert await lua.store.pause(flow, by="ops-ann") == "ok"
    run = await lua.run(flow)
    assert run["status"] == "PAUSED"
    assert before <= int(run["updatedAt"])
    paused = (await lua.history(flow))[-1]
    assert (paused["event"], paused["by"]) == ("RUN_PAUSED", "ops-ann")

    # A refused pause writes nothing, and names nobody.
    assert await lua.store.pause(flow, by="ops-bob") == "not_running"
    assert (await lua.history(flow))[-1] == paused
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"
    assert await lua.store.pause(flow, by="tester") == "not_running"
    assert (await lua.run(flow))["status"] == "TERMINATED"
    completed = await lua.start([])
    assert await lua.store.pause(completed, by="tester") == "not_running"
    assert await lua.store.pause(lua.new_flow(), by="tester") == "missing"


async def test_resume_releases_everything_held(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue), sleep(3, 0)])
    await lua.poll(flow, queue)
    # Action 2 fails once: its retry waits on an enq timer.
    retry = await lua.store.transition(
        flow,
        2,
        "RUNNING",
        1,
        Outcome("QUEUED", error="e"),
        timer_member=member("lease", flow, 2, 1),
    )
    assert retry == "ok"
    assert await lua.store.resume(flow, by="tester") == "not_paused"
    assert await lua.store.pause(flow, by="tester") == "ok"
    assert await lua.complete(flow, 1) == "held"
    assert await lua.store.requeue(flow, 2, 2, member("enq", flow, 2, 2), queue) == "held"
    assert await lua.finish_waiting(flow, 3, "fire", 1) == "held"
    held = {member("res", flow, 1, 1), member("enq", flow, 2, 2), member("fire", flow, 3, 1)}
    assert await lua.held(flow) == held
    for timer in held:
        assert await lua.score(flow, timer) is None

    before = await lua.now()
    assert await lua.store.resume(flow, by="tester") == "ok"
    after = await lua.now()

    run = await lua.run(flow)
    assert run["status"] == "RUNNING"
    assert before <= int(run["updatedAt"]) <= after
    for timer in held:
        due = await lua.score(flow, timer)
        assert due is not None, timer
        assert before <= due <= after, timer
    assert await lua.client.exists(lua.run_keys(flow).held) == 0
    resumed = (await lua.history(flow))[-1]
    assert (resumed["event"], resumed["released"], resumed["by"]) == ("RUN_RESUMED", 3, "tester")
    assert await lua.store.resume(flow, by="ops-bob") == "not_paused"
    assert (await lua.history(flow))[-1] == resumed
    assert await lua.store.resume(lua.new_flow(), by="tester") == "missing"


async def test_terminate_closes_open_executions_and_hides_queued_tasks(lua: Lua) -> None:
    queue = lua.new_name()
    event = lua.new_name("ev")
    flow = await lua.start(
        [done(1), user(2, queue), user(3, queue), sleep(4, 60_000), wait(5, event, 60_000)]
    )
    await lua.poll(flow, queue, most=1)

    before = await lua.now()
    assert await lua.store.terminate(flow, "stopped by test", by="ops-ann") == "ok"
    after = await lua.now()

    run = await lua.run(flow)
    assert (run["status"], run["reason"], run["active"], run["joins"]) == (
        "TERMINATED",
        "stopped by test",
        "0",
        "",
    )
    assert before <= int(run["finishedAt"]) <= after
    assert run["x:1:s"] == "COMPLETED"
    assert "x:1:e" not in run
    for seq in (2, 3, 4, 5):
        assert (run[f"x:{seq}:s"], run[f"x:{seq}:e"]) == ("FAILED", "stopped by test"), seq
        assert run[f"a:{seq}:e"] == "stopped by test"
    ended = (await lua.history(flow))[-1]
    assert ended == {
        "event": "RUN_TERMINATED",
        "reason": "stopped by test",
        "by": "ops-ann",
        "at": int(run["finishedAt"]),
    }
    assert 0 < await lua.ttl(lua.run_keys(flow).run) <= RETENTION

    assert await lua.queue(flow, queue) == [queue_entry(flow, 3, 1)]
    assert await lua.poll(flow, queue) == []
    assert await lua.queue(flow, queue) == []
    assert (await lua.run(flow))["x:3:s"] == "FAILED"

    assert await lua.store.terminate(flow, "again", by="ops-bob") == "terminal"
    assert (await lua.run(flow))["reason"] == "stopped by test"
    assert (await lua.history(flow))[-1] == ended
    assert await lua.store.terminate(lua.new_flow(), "x", by="tester") == "missing"


async def test_terminate_a_paused_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    assert await lua.store.pause(flow, by="tester") == "ok"
    assert await lua.complete(flow, 1) == "held"

    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"

    run = await lua.run(flow)
    assert (run["status"], run["x:1:s"]) == ("TERMINATED", "FAILED")
    assert await lua.store.resume(flow, by="tester") == "not_paused"
    assert 0 < await lua.ttl(lua.run_keys(flow).held) <= RETENTION


async def test_a_run_that_ends_on_its_own_names_nobody(lua: Lua) -> None:
    """``by`` is who asked: a run's own end (its last action done, a terminate action) is
    nobody's request."""
    completed = await lua.start([done(1)])
    ended = (await lua.history(completed))[-1]
    assert ended["event"] == "RUN_COMPLETED"
    assert "by" not in ended
    stopped = await lua.start([done(1), end(2, "FAILED", "refused")])
    ended = (await lua.history(stopped))[-1]
    assert (ended["event"], ended["action"]) == ("RUN_FAILED", 2)
    assert "by" not in ended
