"""heartbeat.lua: extending a lease.

Each test runs on a private key prefix; see test_lua_scripts.py for the helpers.
"""

from __future__ import annotations

import pytest

from app.store.store import Store
from tests.test_lua_scripts import (
    Lua,
    member,
    private_lua,
    user,
)


@pytest.fixture
def lua(store: Store) -> Lua:
    return private_lua(store)


async def test_heartbeat_extends_the_lease(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue), user(2, queue)])
    await lua.poll(flow, queue, most=1, lease_ms=1000)
    lease = member("lease", flow, 1, 1)
    first = await lua.score(flow, lease)
    assert first is not None

    before = await lua.now()
    assert await lua.store.heartbeat(flow, 1, 1, 90_000, lease) == "ok"
    after = await lua.now()

    later = await lua.score(flow, lease)
    assert later is not None
    assert before + 90_000 <= later <= after + 90_000
    assert later > first
    # Not this attempt, or not running: nothing moves.
    assert await lua.store.heartbeat(flow, 1, 2, 500_000, member("lease", flow, 1, 2)) == "stale"
    assert await lua.store.heartbeat(flow, 2, 1, 500_000, member("lease", flow, 2, 1)) == "stale"
    assert await lua.store.heartbeat(flow, 9, 1, 500_000, lease) == "stale"
    assert await lua.score(flow, lease) == later
    assert await lua.score(flow, member("lease", flow, 1, 2)) is None
    assert await lua.score(flow, member("lease", flow, 2, 1)) is None


async def test_heartbeat_of_ended_or_missing_run(lua: Lua) -> None:
    queue = lua.new_name()
    flow = await lua.start([user(1, queue)])
    await lua.poll(flow, queue)
    lease = member("lease", flow, 1, 1)
    due = await lua.score(flow, lease)
    assert await lua.store.terminate(flow, "stop") == "ok"

    assert await lua.store.heartbeat(flow, 1, 1, 500_000, lease) == "terminal"
    assert await lua.score(flow, lease) == due
    ghost = lua.new_flow()
    assert await lua.store.heartbeat(ghost, 1, 1, 500_000, member("lease", ghost, 1, 1)) == (
        "missing"
    )
    assert await lua.score(ghost, member("lease", ghost, 1, 1)) is None
