"""heartbeat.lua: extending a lease.

Each test runs on a private key prefix; see tests/helpers/lua.py for the harness.
"""

from __future__ import annotations

from app.store.store import Outcome
from tests.helpers.lua import (
    Lua,
    member,
    user,
)


async def test_heartbeat_extends_the_lease(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue)])
    await lua.poll(flow, queue, most=1, lease_ms=1000)
    lease = member("lease", flow, 1, 1)
    secret = await lua.secret(flow, 1)
    assert secret is not None
    first = await lua.score(flow, lease)
    assert first is not None

    before = await lua.now()
    assert await lua.store.heartbeat(flow, 1, 1, 90_000, lease, secret) == "ok"
    after = await lua.now()

    later = await lua.score(flow, lease)
    assert later is not None
    assert before + 90_000 <= later <= after + 90_000
    assert later > first
    # Not this attempt, or not running: nothing moves.
    assert (
        await lua.store.heartbeat(flow, 1, 2, 500_000, member("lease", flow, 1, 2), secret)
        == "stale"
    )
    assert (
        await lua.store.heartbeat(flow, 2, 1, 500_000, member("lease", flow, 2, 1), secret)
        == "stale"
    )
    assert await lua.store.heartbeat(flow, 9, 1, 500_000, lease, secret) == "stale"
    assert await lua.score(flow, lease) == later
    assert await lua.score(flow, member("lease", flow, 1, 2)) is None
    assert await lua.score(flow, member("lease", flow, 2, 1)) is None


async def test_heartbeat_of_ended_or_missing_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    secret = await lua.secret(flow, 1) or ""
    due = await lua.score(flow, lease)
    assert await lua.store.terminate(flow, "stop", by="tester") == "ok"

    assert await lua.store.heartbeat(flow, 1, 1, 500_000, lease, secret) == "terminal"
    assert await lua.score(flow, lease) == due
    ghost = lua.new_flow()
    ghost_lease = member("lease", ghost, 1, 1)
    assert await lua.store.heartbeat(ghost, 1, 1, 500_000, ghost_lease, secret) == "missing"
    assert await lua.score(ghost, member("lease", ghost, 1, 1)) is None


async def test_heartbeat_after_a_held_lease_expiry_is_stale(lua: Lua) -> None:
    """A lease that expired while the run was paused is held, not in the timers: the
    attempt is over, and a heartbeat must not pretend otherwise."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    assert await lua.store.pause(flow, by="tester") == "ok"
    expiry = Outcome("QUEUED", error="lease expired", retry_delay_ms=0)
    held = await lua.store.transition(
        flow, 1, "RUNNING", 1, expiry, timer_member=lease, held_member=lease
    )
    assert held == "held"
    assert await lua.score(flow, lease) is None
    secret = await lua.secret(flow, 1) or ""
    assert await lua.store.heartbeat(flow, 1, 1, 90_000, lease, secret) == "stale"


async def test_lease_expiry_loses_to_a_heartbeat_after_the_claim(lua: Lua) -> None:
    """The sweeper claimed the lease timer, then a heartbeat moved it: the expiry that the
    sweeper then applies must change nothing."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    claimed = await lua.score(flow, lease)
    assert claimed is not None
    secret = await lua.secret(flow, 1) or ""
    assert await lua.store.heartbeat(flow, 1, 1, 90_000, lease, secret) == "ok"
    expiry = Outcome("QUEUED", error="lease expired", retry_delay_ms=0)
    answer = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        expiry,
        timer_member=lease,
        held_member=lease,
        claimed_score=int(claimed),
    )
    assert answer == "stale"
    run = await lua.run(flow)
    assert (run["x:1:s"], run["x:1:n"]) == ("RUNNING", "1")
    assert await lua.score(flow, lease) is not None
    # With the score it really has, the expiry applies.
    current = await lua.score(flow, lease)
    assert current is not None
    answer = await lua.store.transition(
        flow,
        1,
        "RUNNING",
        1,
        expiry,
        timer_member=lease,
        held_member=lease,
        claimed_score=int(current),
    )
    assert answer == "ok"
    assert (await lua.run(flow))["x:1:s"] == "QUEUED"


async def test_heartbeat_without_the_lease_secret_is_stale(lua: Lua) -> None:
    """Naming the right execution and attempt is not enough: only the lease's holder knows
    its secret, and nothing moves for anyone else."""
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    [task] = await lua.poll(flow, queue, lease_ms=1000)
    lease = member("lease", flow, 1, 1)
    due = await lua.score(flow, lease)
    secret = task.task_id.rsplit(".", 1)[1]

    for forged in ("", "0" * 32, secret.upper(), secret[:-1]):
        assert await lua.store.heartbeat(flow, 1, 1, 500_000, lease, forged) == "stale"
    assert await lua.score(flow, lease) == due
    assert await lua.store.heartbeat(flow, 1, 1, 500_000, lease, secret) == "ok"
    assert await lua.score(flow, lease) != due
