"""record_poll.lua: a worker's poll noted for its actions and for the worker; workers not
seen since the cut-off forgotten. On a namespace of the test's own (the keys are meta keys)."""

from __future__ import annotations

import orjson

from app.store.store import Store
from tests.helpers.waiting import unique


async def test_a_poll_is_noted_per_action_and_per_worker(store: Store) -> None:
    private = store.in_namespace(unique("rp"))
    keys, client = private.keys, private.client

    await private.workload.record_poll("w1", ["a", "b"], 10_000, 5_000)
    await private.workload.record_poll("w2/x", ["b"], 12_000, 5_000)

    assert await client.hgetall(keys.polls) == {"a": "10000", "b": "12000"}
    seen = await client.zrange(keys.workers_seen, 0, -1, withscores=True)
    assert [(orjson.loads(member), score) for member, score in seen] == [
        (["w1", "a"], 10_000),
        (["w1", "b"], 10_000),
        (["w2/x", "b"], 12_000),
    ]

    # A later poll moves the worker's entry; entries older than the cut-off are removed.
    await private.workload.record_poll("w1", ["b"], 16_000, 5_000)
    seen = await client.zrange(keys.workers_seen, 0, -1, withscores=True)
    assert [(orjson.loads(member), score) for member, score in seen] == [
        (["w2/x", "b"], 12_000),
        (["w1", "b"], 16_000),
    ]
    assert await client.hgetall(keys.polls) == {"a": "10000", "b": "16000"}
    await client.delete(keys.polls, keys.workers_seen)
