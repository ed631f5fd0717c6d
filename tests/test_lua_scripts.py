"""Every Lua script of app/store/lua, driven through the Store and checked by raw reads: here
register_workflow.lua, claim_timers.lua and the key layout; the other scripts in the other
test_lua_*.py files, all on the harness of tests/helpers/lua.py.

Each test gets a Store whose run keys live under a key prefix of its own (the real key layout
and hash tags, another prefix), so its partition timers, queues and notify channel are
private: the sweeper of a test server running in the same session never claims these timers,
and claim_timers sees only the test's own members. The scripts are synchronous, so nothing
here sleeps; times are checked against Redis's own clock read before and after each call.
"""

from __future__ import annotations

import uuid

import pytest
from redis.crc import key_slot

from app.store.keys import Keys
from tests.helpers.lua import Lua

# -- register_workflow ------------------------------------------------------------------


async def test_register_workflow_versions(lua: Lua) -> None:
    store = lua.store
    name = lua.new_name("wf")
    key = store.keys.workflow(name)

    assert await store.register_workflow(name, "digest-a", '{"v":"a"}') == (1, True)
    assert await lua.client.hgetall(key) == {
        "latest": "1",
        "v:1": '{"v":"a"}',
        "d:digest-a": "1",
    }
    assert name in await store.workflow_names()

    # The same digest is the same version, whatever the source text says.
    assert await store.register_workflow(name, "digest-a", '{"v":"other"}') == (1, False)
    assert await lua.client.hget(key, "latest") == "1"
    assert await lua.client.hget(key, "v:1") == '{"v":"a"}'

    assert await store.register_workflow(name, "digest-b", '{"v":"b"}') == (2, True)
    assert await store.workflow_source(name, None) == (2, '{"v":"b"}')
    assert await store.workflow_source(name, 1) == (1, '{"v":"a"}')
    assert await store.workflow_versions(name) == 2
    # An older digest still names its own version and creates nothing.
    assert await store.register_workflow(name, "digest-a", '{"v":"a"}') == (1, False)
    assert await store.workflow_versions(name) == 2
    assert (await store.workflow_names()).count(name) == 1


async def test_register_workflow_notes_its_user_action_names(lua: Lua) -> None:
    """Every version's user actions are known queues, also when the version existed already
    (so re-registering a definition stored before names were noted adds them)."""
    store = lua.store
    name, first, second = lua.new_name("wf"), lua.new_name(), lua.new_name()
    assert await store.register_workflow(name, "d1", "{}", [first]) == (1, True)
    assert await store.register_workflow(name, "d1", "{}", [first, second]) == (1, False)
    assert {first, second} <= await lua.client.smembers(store.keys.queue_names)


# -- claim_timers ----------------------------------------------------------------------


async def test_claim_timers_claims_due_members(lua: Lua) -> None:
    partition = 0
    key = lua.keys.timers(partition)
    now = await lua.now()
    await lua.client.zadd(
        key, {"fire|a|1|1": now - 2000, "fire|b|1|1": now - 1000, "fire|c|1|1": now + 60_000}
    )

    claim = await lua.store.claim_timers(partition, 10, 30_000)

    assert now <= claim.now_ms <= await lua.now()
    assert claim.due == [("fire|a|1|1", now - 2000), ("fire|b|1|1", now - 1000)]
    assert claim.next_due_ms == claim.now_ms + 30_000
    assert await lua.client.zscore(key, "fire|a|1|1") == claim.now_ms + 30_000
    assert await lua.client.zscore(key, "fire|b|1|1") == claim.now_ms + 30_000
    assert await lua.client.zscore(key, "fire|c|1|1") == now + 60_000

    again = await lua.store.claim_timers(partition, 10, 30_000)
    assert again.due == []
    assert again.next_due_ms == claim.now_ms + 30_000


async def test_claim_timers_respects_most_and_reports_next_due(lua: Lua) -> None:
    partition = 1
    key = lua.keys.timers(partition)
    now = await lua.now()
    await lua.client.zadd(key, {"step|a|1|2": now - 30, "step|b|1|2": now - 20})
    await lua.client.zadd(key, {"step|c|1|2": now - 10, "wto|d|1|1": now + 5000})

    claim = await lua.store.claim_timers(partition, 2, 60_000)

    assert [name for name, _ in claim.due] == ["step|a|1|2", "step|b|1|2"]
    # The third due member was left for the next claim, and is the next due.
    assert claim.next_due_ms == now - 10
    assert await lua.client.zscore(key, "step|c|1|2") == now - 10
    rest = await lua.store.claim_timers(partition, 2, 60_000)
    assert rest.due == [("step|c|1|2", now - 10)]
    assert rest.next_due_ms == now + 5000


async def test_claim_timers_of_an_empty_partition(lua: Lua) -> None:
    claim = await lua.store.claim_timers(2, 10, 1000)
    assert claim.due == []
    assert claim.next_due_ms is None
    assert claim.now_ms > 0


# -- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_every_key_of_a_run_is_on_one_cluster_slot(partitions: int) -> None:
    keys = Keys(partitions)
    for _ in range(20):
        flow = uuid.uuid4().hex
        partition = keys.partition_of(flow)
        run_keys = [
            *keys.run(flow).as_list(),
            keys.queue(partition, "some-action"),
            keys.timers(partition),
            keys.runs_index(partition),
            keys.runs_by_name(partition, "some-workflow"),
            keys.run_prefix(partition) + flow,
            keys.history_prefix(partition) + flow,
            keys.by_status(partition, "RUNNING"),
            keys.by_version(partition, "some-workflow", 2),
            keys.by_value(partition, "input.email", "a@b.c"),
            keys.ended(partition),
            keys.index_prefix(partition) + "s:FAILED",
            keys.runs_by_name_prefix(partition) + "some-workflow",
        ]
        slots = {key_slot(key.encode()) for key in run_keys}
        assert len(slots) == 1, run_keys
        assert keys.run(flow).run == keys.run_prefix(partition) + flow
        assert keys.run(flow).history == keys.history_prefix(partition) + flow
    meta = [keys.workflow("w"), keys.workflow_names, keys.actions, keys.config]
    assert len({key_slot(key.encode()) for key in meta}) == 1
