"""The registry of tenants (app/engine/tenants.py) on a private ``redis-server``: the engine
of a request's principal's tenant (app/api/deps.py), started and recorded on first use; a
tenant name that could break the key layout refused; and a server started later starts
every recorded tenant, so a tenant's due timer fires with no request of that tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request

from app.api.deps import engine_and_settings, get_engine
from app.api.security.principal import PRINCIPAL_SCOPE_KEY, Principal, Role
from app.engine.snapshot import RunSnapshot
from app.engine.status import RunStatus
from app.engine.tenants import TenantRefused, Tenants, TenantUnavailable
from app.settings import Settings
from app.store import Store
from app.store.connection import client_for_url, pubsub_client_for_url
from app.store.keys import TENANTS
from tests.helpers.definitions import system, workflow
from tests.helpers.http import serving
from tests.helpers.processes import Processes, RedisProcess
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import LIGHT_SERVER

ACME = "acme"
DELAY_SECONDS = 2.0
WAIT = 30.0
BAD_NAMES = ("a:b", "{p0}", "-acme", ".acme", "acme corp", "é", "x" * 65)


@pytest_asyncio.fixture
async def private_url(tmp_path: Path, processes: Processes) -> str:
    """A Redis of this test's own: the recorded tenants are the test's only."""
    redis_server = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis_server)
    await redis_server.start()
    return redis_server.url


@pytest.fixture
def private(settings: Settings, private_url: str) -> Settings:
    return settings.model_copy(update={"redis_url": private_url, **LIGHT_SERVER})


@pytest_asyncio.fixture
async def client(private_url: str) -> AsyncIterator[Any]:
    redis = client_for_url(private_url)
    yield redis
    await redis.aclose()


@pytest_asyncio.fixture
async def tenants(private: Settings, client: Any) -> AsyncIterator[Tenants]:
    """The registry a server builds at start-up, in this process."""
    pubsub = pubsub_client_for_url(private.redis_url)
    store = Store(client, private.partitions, private.retention_seconds)
    registry = Tenants(store, pubsub, private)
    try:
        await registry.start()
        yield registry
    finally:
        await registry.stop()
        await pubsub.aclose()


def request_of(tenants: Tenants, settings: Settings, principal: Principal) -> Request:
    """A request of ``principal`` to an app whose state holds ``tenants``."""
    app = Starlette()
    app.state.tenants = tenants
    app.state.settings = settings
    return Request({"type": "http", "app": app, PRINCIPAL_SCOPE_KEY: principal})


async def run_status(client: Any, settings: Settings, namespace: str, flow_id: str) -> RunStatus:
    store = Store(client, settings.partitions, settings.retention_seconds, namespace)
    return RunSnapshot(flow_id, await store.read_run(flow_id)).status


async def test_an_engine_per_tenant_started_and_recorded_on_first_use(
    tenants: Tenants, private: Settings, client: Any
) -> None:
    assert tenants.namespaces() == [""]
    assert await client.smembers(TENANTS) == set()
    ops = Principal("acme-ops", Role.OPERATOR, tenant=ACME)
    engine = await get_engine(request_of(tenants, private, ops))
    assert engine.store.keys.namespace == ACME
    assert engine.store.keys.run("f").run.startswith("orchy:acme:{p")
    assert tenants.namespaces() == ["", ACME]
    assert await client.smembers(TENANTS) == {ACME}
    # Another principal of the tenant, the worker fast path: the same engine.
    worker = Principal("acme-worker", Role.WORKER, tenant=ACME, actions=frozenset({"charge"}))
    assert (await engine_and_settings(request_of(tenants, private, worker)))[0] is engine
    # No tenant: the server's own namespace (ORCHY_NAMESPACE, here the default one).
    anonymous = await get_engine(request_of(tenants, private, Principal("x", Role.ADMIN)))
    assert anonymous is tenants.default.engine and anonymous is not engine
    assert anonymous.store.keys.run("f").run.startswith("orchy:{p")
    # The heavy pools are the registry's, shared by every tenant.
    assert engine.pools is anonymous.pools is tenants.pools
    # Many first requests at once start one stack.
    beta = await asyncio.gather(*(tenants.engine_for("beta") for _ in range(5)))
    assert len({id(each) for each in beta}) == 1
    assert await client.smembers(TENANTS) == {ACME, "beta"}


async def test_a_tenant_name_that_could_break_the_keys_is_refused(
    tenants: Tenants, private: Settings, client: Any
) -> None:
    for name in BAD_NAMES:
        principal = Principal("p", Role.ADMIN, tenant=name)
        with pytest.raises(TenantRefused) as refused:
            await get_engine(request_of(tenants, private, principal))
        assert refused.value.status_code == 403 and repr(name) in refused.value.message
    assert tenants.namespaces() == [""]
    assert await client.smembers(TENANTS) == set()
    with pytest.raises(ValueError, match="ORCHY_NAMESPACE"):
        Tenants(
            tenants.default.engine.store, client, private.model_copy(update={"namespace": "a:b"})
        )


async def test_a_tenant_of_another_partition_count_is_unavailable(
    tenants: Tenants, private: Settings, client: Any
) -> None:
    other = Store(client, private.partitions * 2, private.retention_seconds, "zeta")
    await other.check_partitions()  # zeta's runs are spread over twice as many partitions
    with pytest.raises(TenantUnavailable, match="ORCHY_PARTITIONS") as refused:
        await tenants.engine_for("zeta")
    assert refused.value.status_code == 503
    assert await client.smembers(TENANTS) == set()
    assert tenants.namespaces() == [""]


async def test_a_restarted_server_fires_the_timers_of_every_recorded_tenant(
    tenants: Tenants, private: Settings, client: Any
) -> None:
    engine = await tenants.engine_for(ACME)
    name = unique("nap")
    await engine.catalog.register_workflow(
        workflow(name, system(1, "delay", delaySeconds=DELAY_SECONDS))
    )
    flow_id, _ = await engine.start(name, {}, by="tester")
    assert {key async for key in client.scan_iter(match=f"*{flow_id}*")} == {
        engine.store.keys.run(flow_id).run,
        engine.store.keys.run(flow_id).history,
    }
    assert all(key.startswith("orchy:acme:{p") for key in engine.store.keys.run(flow_id).as_list())
    await tenants.stop()  # the server stops before the delay is over
    with pytest.raises(TenantUnavailable, match="stopping"):
        await tenants.engine_for("late")  # a request that came as it stopped starts nothing
    assert await client.smembers(TENANTS) == {ACME}
    assert await run_status(client, private, ACME, flow_id) is RunStatus.RUNNING

    with serving(private) as server:
        # No request of acme came: its stack started with the server.
        assert server.app.state.tenants.namespaces() == ["", ACME]

        async def completed() -> bool:
            return await run_status(client, private, ACME, flow_id) is RunStatus.COMPLETED

        await wait_until(completed, WAIT, what="acme's delay to end after the restart")
        # A caller without a tenant (the server's own namespace) does not see it.
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get(f"/flow/{flow_id}")).status_code == 404
