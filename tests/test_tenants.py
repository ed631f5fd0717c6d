"""Tenants (namespaces) isolated end to end, on one Redis (a private ``redis-server``) and on
a private Redis Cluster, two ways: two single-tenant servers (``ORCHY_NAMESPACE=a`` and
``=b``), and one server whose API keys belong to tenant a or b (an operator's key and a
worker's key each), each tenant with a real worker over HTTP. The two tenants register a
workflow of the same name, queue tasks for the same action name and wait for events of the
same name and key; neither sees anything of the other (runs, history, listing, definitions,
queues, events), and every Redis key of each lives under its own prefix."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.security.principal import Role
from app.settings import Settings
from app.store.connection import client_for_url
from app.store.keys import Keys
from orchy import Worker
from tests.helpers.auth import Key
from tests.helpers.cluster import private_cluster
from tests.helpers.definitions import set_action, system, user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.processes import Processes, RedisProcess
from tests.helpers.waiting import wait_until
from tests.helpers.worker_wire import LIGHT_SERVER, fast_worker, running

TENANT_A, TENANT_B = "a", "b"
NAME = "order"  # the same workflow name in both tenants
QUEUE = "charge"  # the same action (queue) name in both
EVENT, KEY = "paid", "k-1"  # the same correlated event and key in both
RUNS = 3
WAIT = 30.0
TEST_TIMEOUT_SECONDS = 240


def definition(tenant: str) -> dict[str, Any]:
    """Charge (a user task that names its tenant), then wait for the order's payment."""
    return workflow(
        NAME,
        user(1, QUEUE, {"default": [2]}, tenant=tenant, n="{$.input.n}"),
        system(2, "wait", event=EVENT, correlationKey="{$.input.key}"),
    )


@dataclass(frozen=True)
class TenantSide:
    """How a test reaches one tenant: a server, and the keys of its operator and worker (None
    for a single-tenant server, which checks no credentials)."""

    url: str
    operator: Key | None = None
    worker: Key | None = None


@contextlib.contextmanager
def tenant_server(settings: Settings, redis_url: str, tenant: str) -> Iterator[ServerThread]:
    update = {"redis_url": redis_url, "namespace": tenant, **LIGHT_SERVER}
    with serving(settings.model_copy(update=update)) as server:
        yield server


@contextlib.contextmanager
def namespaced_servers(settings: Settings, redis_url: str) -> Iterator[list[TenantSide]]:
    """Two servers, one per tenant (``ORCHY_NAMESPACE``)."""
    with (
        tenant_server(settings, redis_url, TENANT_A) as server_a,
        tenant_server(settings, redis_url, TENANT_B) as server_b,
    ):
        yield [TenantSide(server_a.url), TenantSide(server_b.url)]


@contextlib.contextmanager
def one_server_with_keys(settings: Settings, redis_url: str) -> Iterator[list[TenantSide]]:
    """One server of the default namespace; each tenant's keys take its requests to it."""
    sides = {
        tenant: (
            Key.new(f"ops-{tenant}", Role.OPERATOR, tenant=tenant),
            Key.new(f"worker-{tenant}", Role.WORKER, tenant=tenant, actions=[QUEUE]),
        )
        for tenant in (TENANT_A, TENANT_B)
    }
    entries = [key.entry.model_dump(exclude_none=True) for pair in sides.values() for key in pair]
    update = {"redis_url": redis_url, "api_keys": json.dumps(entries), **LIGHT_SERVER}
    with serving(settings.model_copy(update=update)) as server:
        yield [TenantSide(server.url, *sides[tenant]) for tenant in (TENANT_A, TENANT_B)]


@contextlib.asynccontextmanager
async def tenant_api(side: TenantSide) -> AsyncIterator[Api]:
    headers = side.operator.headers if side.operator else {}
    async with httpx.AsyncClient(base_url=side.url, timeout=WAIT, headers=headers) as http:
        yield Api(http)


def charging_worker(settings: Settings, side: TenantSide, seen: list[str]) -> Worker:
    """A worker of ``side``'s tenant; notes the tenant named by each task it gets."""
    token = side.worker.key if side.worker else None
    worker = Worker(side.url, token=token, settings=fast_worker(settings))

    @worker.action(QUEUE)
    def charge(task: dict[str, Any]) -> dict[str, Any]:
        seen.append(task["tenant"])
        return {"charged": task["n"], "tenant": task["tenant"]}

    return worker


async def actions_of(api: Api) -> list[dict[str, Any]]:
    response = await api.http.get("/metadata/action")
    assert response.status_code == 200, response.text
    actions: list[dict[str, Any]] = response.json()
    return actions


async def queue_depth(api: Api) -> int:
    response = await api.http.get("/tasks/queues")
    assert response.status_code == 200, response.text
    depths = {queue["action"]: queue["depth"] for queue in response.json()["queues"]}
    return int(depths.get(QUEUE, 0))


async def action_status(api: Api, flow_id: str, action: int) -> str:
    """The action's status; "" before the run reaches it."""
    view = (await api.flow(flow_id))["actions"].get(str(action))
    return "" if view is None else str(view["status"])


async def wait_all_waiting(
    api: Api, flow_ids: list[str], redis_url: str, settings: Settings, tenant: str
) -> None:
    """Every run waits for its payment, and its wait is in the tenant's correlation index
    (a wait registers there just after it starts waiting)."""

    async def waiting() -> bool:
        return all([await action_status(api, flow, 2) == "WAITING" for flow in flow_ids])

    await wait_until(waiting, WAIT, what="every run to wait for its payment")
    index = Keys(settings.partitions, tenant).correlation(EVENT, KEY).waiters
    client = client_for_url(redis_url)
    try:

        async def registered() -> bool:
            return bool(await client.zcard(index) == len(flow_ids))

        await wait_until(registered, WAIT, what=f"{tenant}'s waits in the correlation index")
    finally:
        await client.aclose()


async def start_runs(api: Api) -> list[str]:
    return [await api.start(NAME, {"n": n, "key": KEY}) for n in range(RUNS)]


async def listed(api: Api, params: dict[str, str] | None = None) -> set[str]:
    response = await api.http.get("/flow", params=params or {})
    assert response.status_code == 200, response.text
    return {run["id"] for run in response.json()["runs"]}


async def assert_sees_nothing_of(api: Api, own: list[str], others: list[str]) -> None:
    """``api``'s tenant lists its runs only, and answers 404 for each of the other's."""
    assert await listed(api) == set(own)
    assert await listed(api, {"name": NAME}) == set(own)
    for flow_id in others:
        for path in (f"/flow/{flow_id}", f"/flow/{flow_id}/history"):
            response = await api.http.get(path)
            assert response.status_code == 404, (path, response.text)
        response = await api.http.post(f"/flow/{flow_id}/events/{EVENT}", json={})
        assert response.status_code == 404, response.text
        response = await api.http.post(f"/flow/{flow_id}/terminate")
        assert response.status_code == 404, response.text


async def keys_of(redis_url: str) -> list[str]:
    client = client_for_url(redis_url)
    try:
        return [key async for key in client.scan_iter(match="*", count=1000)]
    finally:
        await client.aclose()


Sides = Callable[[Settings, str], contextlib.AbstractContextManager[list[TenantSide]]]


async def two_tenants(settings: Settings, redis_url: str, sides: Sides) -> None:
    with sides(settings, redis_url) as (side_a, side_b):
        async with tenant_api(side_a) as a, tenant_api(side_b) as b:
            # Definitions: the same name is version 1 of each tenant, each its own.
            assert await a.register(definition(TENANT_A)) == 1
            assert await b.register(definition(TENANT_B)) == 1
            for api, tenant in ((a, TENANT_A), (b, TENANT_B)):
                stored = (await api.http.get(f"/metadata/workflow/{NAME}")).json()
                assert stored["actions"][0]["parameters"]["tenant"] == tenant
                names = [
                    entry["name"] for entry in (await api.http.get("/metadata/workflow")).json()
                ]
                assert names == [NAME]
            # Action definitions: a's settings of the action are a's only.
            await set_action(a.http, QUEUE, retryCount=7, timeoutSeconds=11)
            assert [action["name"] for action in await actions_of(a)] == [QUEUE]
            assert await actions_of(b) == []
            answer = (await b.http.get(f"/metadata/action/{QUEUE}")).json()
            assert (answer["retryCount"], answer["timeoutSeconds"]) != (7, 11), answer
            runs_a, runs_b = await start_runs(a), await start_runs(b)
            assert await queue_depth(a) == RUNS and await queue_depth(b) == RUNS
            await assert_sees_nothing_of(a, runs_a, runs_b)
            await assert_sees_nothing_of(b, runs_b, runs_a)

            # Queues: a's worker polls the same action name while b's tasks wait.
            seen_a: list[str] = []
            async with running(charging_worker(settings, side_a, seen_a)):
                await wait_all_waiting(a, runs_a, redis_url, settings, TENANT_A)
                assert seen_a == [TENANT_A] * RUNS
                assert await queue_depth(b) == RUNS
                assert {await action_status(b, flow, 1) for flow in runs_b} == {"QUEUED"}

                # Events: a's publication reaches a's runs only, and is not kept for b's.
                response = await a.http.post(f"/events/{EVENT}", json={"key": KEY})
                assert response.status_code == 200, response.text
                delivered = {item["flowId"] for item in response.json()["delivered"]}
                assert delivered == set(runs_a)
                for flow_id in runs_a:
                    await a.wait_status(flow_id, "COMPLETED")

                seen_b: list[str] = []
                async with running(charging_worker(settings, side_b, seen_b)):
                    await wait_all_waiting(b, runs_b, redis_url, settings, TENANT_B)
                assert seen_b == [TENANT_B] * RUNS
                assert seen_a == [TENANT_A] * RUNS
            response = await b.http.post(f"/events/{EVENT}", json={"key": KEY})
            assert {item["flowId"] for item in response.json()["delivered"]} == set(runs_b)
            for flow_id in runs_b:
                await b.wait_status(flow_id, "COMPLETED")
            await assert_sees_nothing_of(a, runs_a, runs_b)
            await assert_sees_nothing_of(b, runs_b, runs_a)

    # Every key of the database belongs to one of the two tenants, under its prefix with
    # the partition's hash tag, and each run's keys to its own tenant; but the record of
    # the tenants and the server's own (default) namespace's settings, when it has one.
    keys = await keys_of(redis_url)
    prefixes = {TENANT_A: f"orchy:{TENANT_A}:", TENANT_B: f"orchy:{TENANT_B}:"}
    shared = Keys(settings.partitions)
    strays = [
        key
        for key in keys
        if not key.startswith(tuple(prefixes.values()))
        and key not in (shared.tenants, shared.config)
    ]
    assert strays == [], strays
    for tenant, flow_ids in ((TENANT_A, runs_a), (TENANT_B, runs_b)):
        mine = [key for key in keys if key.startswith(prefixes[tenant])]
        tags = {key[len(prefixes[tenant]) :].split("}", 1)[0] + "}" for key in mine}
        assert tags <= {"{meta}"} | {f"{{p{n}}}" for n in range(settings.partitions)}, tags
        assert "{meta}" in tags
        for flow_id in flow_ids:
            holders = [key for key in keys if key.endswith(f":{flow_id}")]
            assert holders and all(key.startswith(prefixes[tenant]) for key in holders), holders


HOW = pytest.mark.parametrize(
    "sides", [namespaced_servers, one_server_with_keys], ids=["namespaces", "api-keys"]
)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
@HOW
async def test_two_tenants_on_one_redis(
    settings: Settings, tmp_path: Path, processes: Processes, sides: Sides
) -> None:
    redis_server = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis_server)
    await redis_server.start()
    await two_tenants(settings, redis_server.url, sides)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
@HOW
async def test_two_tenants_on_a_redis_cluster(
    settings: Settings, tmp_path: Path, sides: Sides
) -> None:
    with private_cluster(tmp_path / "cluster") as url:
        await two_tenants(settings, url, sides)
