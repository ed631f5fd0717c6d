"""claim_run_end.lua: of the server processes that hear of a run's end, the first claim gets
the run's name and times (it counts the end); later claims, and claims of a run that has
expired, get nothing and write nothing."""

from __future__ import annotations

from tests.helpers.lua import Lua, done
from tests.helpers.waiting import unique


async def test_the_first_claim_counts_a_run_end_and_later_ones_do_not(lua: Lua) -> None:
    flow = await lua.start([done(1)])
    run = await lua.run(flow)
    assert run["status"] == "COMPLETED"
    first, second = await lua.store.claim_run_ends([flow, flow])
    assert first == {
        "name": run["name"],
        "createdAt": run["createdAt"],
        "finishedAt": run["finishedAt"],
    }
    assert second is None
    assert await lua.store.claim_run_ends([flow]) == [None]


async def test_a_run_that_has_expired_is_not_written_to(lua: Lua) -> None:
    gone = unique("expired-run")
    assert await lua.store.claim_run_ends([gone]) == [None]
    assert await lua.store.client.exists(lua.run_keys(gone).run) == 0
