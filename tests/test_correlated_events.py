"""Correlated events over HTTP (README: Correlated events): POST /events/{event} with a key
reaches the runs whose wait names that event and key, on the test server (several
partitions, real timers), with the index checked in Redis where placement matters."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.engine.ids import idempotent_flow_id
from app.settings import Settings
from app.store.keys import Keys
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api
from tests.helpers.waiting import unique, wait_until


def correlated(name: str, event: str, timeout: float | None = None) -> dict[str, Any]:
    """A run that waits for ``event`` keyed by its input's orderId, then hands the event's
    data to a user action."""
    wait: dict[str, Any] = {"event": event, "correlationKey": "{$.input.orderId}"}
    if timeout is not None:
        wait["timeoutSeconds"] = timeout
    return workflow(name, system(1, "wait", {"default": [2]}, **wait), user(2, f"{name}-after"))


class Index:
    """The correlation index of (event, key) as the test server keeps it."""

    def __init__(self, redis: Any, keys: Keys, event: str, key: str) -> None:
        self.redis = redis
        self.keys = keys.correlation(event, key)

    async def waiters(self) -> list[str]:
        found: list[str] = await self.redis.zrange(self.keys.waiters, 0, -1)
        return found

    async def registered(self, flow_id: str) -> None:
        async def there() -> bool:
            return f"{flow_id}|1" in await self.waiters()

        await wait_until(there, what=f"run {flow_id} registered in its correlation index")


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.partitions)


async def start_elsewhere(api: Api, keys: Keys, name: str, order: str, avoid: int) -> str:
    """Starts a run (orderId ``order``) whose flow id lies in another partition than
    ``avoid``: the run and the index are then in different slots."""
    for attempt in range(100):
        idempotency = unique(f"{order}-{attempt}")
        if keys.partition_of(idempotent_flow_id(name, idempotency)) != avoid:
            return await api.start(name, {"orderId": order}, idempotencyKey=idempotency)
    raise AssertionError("no flow id outside the index's partition")


async def publish(http: httpx.AsyncClient, event: str, **body: Any) -> dict[str, Any]:
    response = await http.post(f"/events/{event}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def waiting(api: Api, flow_id: str) -> bool:
    flow = await api.flow(flow_id)
    return bool(flow["status"] == "RUNNING" and flow["actions"]["1"]["status"] == "WAITING")


async def test_every_run_waiting_for_the_event_and_key_gets_it(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-all"), unique("paid")
    await api.register(correlated(name, event))
    index = Index(redis_client, keys, event, "o-1")
    first = await start_elsewhere(api, keys, name, "o-1", index.keys.partition)
    second = await start_elsewhere(api, keys, name, "o-1", index.keys.partition)
    other = await api.start(name, {"orderId": "o-2"})
    await index.registered(first)
    await index.registered(second)
    await Index(redis_client, keys, event, "o-2").registered(other)
    assert keys.partition_of(first) != index.keys.partition
    assert keys.partition_of(second) != index.keys.partition

    answer = await publish(http, event, key="o-1", data={"amount": 12})

    assert answer["kept"] is False
    assert sorted(answer["delivered"], key=lambda d: d["flowId"]) == sorted(
        [{"flowId": first, "actionId": 1}, {"flowId": second, "actionId": 1}],
        key=lambda d: d["flowId"],
    )
    for _ in (first, second):
        task = await api.poll_one(f"{name}-after")
        assert task["flowId"] in (first, second)
        await api.complete(task["taskId"], {})
    for flow_id in (first, second):
        done = await api.wait_status(flow_id, "COMPLETED")
        assert done["actions"]["1"]["output"] == {"amount": 12}
        received = [e for e in await api.history(flow_id) if e["event"] == "EVENT_RECEIVED"]
        assert len(received) == 1
    assert await waiting(api, other)
    assert await index.waiters() == []
    # Nobody waits for o-1 any more: the next one is kept.
    assert await publish(http, event, key="o-1", ttlSeconds=0) == {"delivered": [], "kept": False}
    await http.post(f"/flow/{other}/terminate")


async def test_an_event_before_the_wait_is_kept_for_its_ttl(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-kept"), unique("shipped")
    await api.register(correlated(name, event))
    answer = await publish(http, event, key="o-7", data={"carrier": "x"}, ttlSeconds=60)
    assert answer == {"delivered": [], "kept": True}

    # Every run that reaches the wait within the TTL takes it, once.
    for _ in range(2):
        flow_id = await api.start(name, {"orderId": "o-7"})
        task = await api.poll_one(f"{name}-after")
        assert task["flowId"] == flow_id
        await api.complete(task["taskId"], {})
        done = await api.wait_status(flow_id, "COMPLETED")
        assert done["actions"]["1"]["output"] == {"carrier": "x"}

    # After its TTL, it is gone: the run waits.
    answer = await publish(http, event, key="o-8", data={}, ttlSeconds=0.2)
    assert answer["kept"] is True
    index = Index(redis_client, keys, event, "o-8")

    async def expired() -> bool:
        kept = await redis_client.hgetall(index.keys.events)
        seconds, micros = await redis_client.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        return all(json.loads(value)["x"] < now for id_, value in kept.items() if id_.isdigit())

    await wait_until(expired, what="the kept event's TTL to pass")
    late = await api.start(name, {"orderId": "o-8"})
    await index.registered(late)
    assert await waiting(api, late)
    await http.post(f"/flow/{late}/terminate")


async def test_first_only_reaches_the_oldest_waiting_run(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-first"), unique("claim")
    await api.register(correlated(name, event))
    index = Index(redis_client, keys, event, "job")
    oldest = await api.start(name, {"orderId": "job"})
    await index.registered(oldest)
    younger = await api.start(name, {"orderId": "job"})
    await index.registered(younger)

    answer = await publish(http, event, key="job", data={"n": 1}, firstOnly=True)

    assert answer == {"delivered": [{"flowId": oldest, "actionId": 1}], "kept": False}
    await wait_until(lambda: _action_done(api, oldest), what="the oldest wait to complete")
    assert await waiting(api, younger)
    assert await index.waiters() == [f"{younger}|1"]
    await http.post(f"/flow/{younger}/terminate")


async def _action_done(api: Api, flow_id: str) -> bool:
    return bool((await api.flow(flow_id))["actions"]["1"]["status"] == "COMPLETED")


async def test_a_kept_first_only_event_goes_to_the_first_run_only(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-first-kept"), unique("claim")
    await api.register(correlated(name, event))
    answer = await publish(http, event, key="k", data={"n": 2}, firstOnly=True, ttlSeconds=60)
    assert answer == {"delivered": [], "kept": True}

    first = await api.start(name, {"orderId": "k"})
    await wait_until(lambda: _action_done(api, first), what="the first run to take it")
    assert (await api.flow(first))["actions"]["1"]["output"] == {"n": 2}
    second = await api.start(name, {"orderId": "k"})
    await Index(redis_client, keys, event, "k").registered(second)
    assert await waiting(api, second)
    await http.post(f"/flow/{second}/terminate")


async def test_a_correlated_wait_still_times_out(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-timeout"), unique("late")
    await api.register(correlated(name, event, timeout=0.3))
    flow_id = await api.start(name, {"orderId": "t-1"})
    task = await api.poll_one(f"{name}-after")
    await api.complete(task["taskId"], {})
    done = await api.wait_status(flow_id, "COMPLETED")
    assert done["actions"]["1"]["output"] == {"timedOut": True}

    # Its registration, if it was made, is dropped when an event meets it: kept instead.
    answer = await publish(http, event, key="t-1", ttlSeconds=0)
    assert answer == {"delivered": [], "kept": False}
    assert await Index(redis_client, keys, event, "t-1").waiters() == []


async def test_an_event_sent_by_run_id_also_ends_a_correlated_wait(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-by-id"), unique("paid")
    await api.register(correlated(name, event))
    index = Index(redis_client, keys, event, "b-1")
    flow_id = await api.start(name, {"orderId": "b-1"})
    await index.registered(flow_id)
    sent = await http.post(f"/flow/{flow_id}/events/{event}", json={"by": "id"})
    assert sent.json() == {"status": "delivered"}
    await wait_until(lambda: _action_done(api, flow_id), what="the wait to complete")

    # The registration left behind is met, dropped, and the event is kept.
    answer = await publish(http, event, key="b-1", data={"by": "key"}, ttlSeconds=0.5)
    assert answer == {"delivered": [], "kept": True}
    assert await index.waiters() == []
    assert (await api.flow(flow_id))["actions"]["1"]["output"] == {"by": "id"}


async def test_an_event_nobody_waits_for_is_kept(http: httpx.AsyncClient) -> None:
    answer = await publish(http, unique("nobody"), key="x", data=[1, 2])
    assert answer == {"delivered": [], "kept": True}


async def test_a_key_resolving_to_nothing_fails_the_wait(api: Api) -> None:
    name, event = unique("corr-null"), unique("paid")
    await api.register(correlated(name, event))
    flow_id = await api.start(name, {"other": 1})
    failed = await api.wait_status(flow_id, "FAILED")
    assert "correlationKey" in failed["reason"]
    assert "resolved to null" in failed["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": {}}, "key"),
        ({"key": 5}, "key"),
        ({"key": ""}, "key"),
        ({"key": "k", "ttlSeconds": -1}, "ttlSeconds"),
        ({"key": "k", "ttlSeconds": "10"}, "ttlSeconds"),
        ({"key": "k", "ttlSeconds": 10**9}, "ttlSeconds"),
        ({"key": "k", "firstOnly": "yes"}, "firstOnly"),
        ({"key": "k", "extra": 1}, "extra"),
        ([1], "body"),
    ],
)
async def test_bad_bodies_are_refused_naming_the_field(
    http: httpx.AsyncClient, body: Any, field: str
) -> None:
    response = await http.post(f"/events/{unique('bad')}", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


async def test_a_body_beyond_the_event_limit_is_refused(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    data = "x" * (settings.max_event_bytes + 1)
    response = await http.post(f"/events/{unique('big')}", json={"key": "k", "data": data})
    assert response.status_code == 413
    assert "ORCHY_MAX_EVENT_BYTES" in response.json()["error"]


async def test_a_correlation_key_that_is_not_a_string_is_refused(api: Api) -> None:
    definition = correlated(unique("corr-bad"), "paid")
    definition["actions"][0]["correlationKey"] = 5
    response = await api.http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422
    assert "correlationKey" in response.json()["error"]


async def test_a_key_may_be_a_number_or_text_around_references(
    api: Api, http: httpx.AsyncClient, redis_client: Any, keys: Keys
) -> None:
    name, event = unique("corr-text"), unique("paid")
    await api.register(
        workflow(
            name,
            system(1, "wait", {"default": [2]}, event=event, correlationKey="{$.input.n}"),
            system(2, "wait", event=event, correlationKey="order-{$.input.n}"),
        )
    )
    flow_id = await api.start(name, {"n": 42})
    await Index(redis_client, keys, event, "42").registered(flow_id)
    answer = await publish(http, event, key="42", data={"first": True})
    assert answer == {"delivered": [{"flowId": flow_id, "actionId": 1}], "kept": False}

    async def second_registered() -> bool:
        waiters = await Index(redis_client, keys, event, "order-42").waiters()
        return f"{flow_id}|2" in waiters

    await wait_until(second_registered, what="the second wait to register")
    answer = await publish(http, event, key="order-42", data={"second": True})
    assert answer == {"delivered": [{"flowId": flow_id, "actionId": 2}], "kept": False}
    done = await api.wait_status(flow_id, "COMPLETED")
    assert done["actions"]["1"]["input"]["correlationKey"] == 42
    assert done["actions"]["2"]["input"]["correlationKey"] == "order-42"
    assert done["actions"]["2"]["output"] == {"second": True}
