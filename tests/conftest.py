"""The fixtures: a real Redis (REDIS_URL, or the embedded one), a real uvicorn server, the
child processes a test starts, the private Store of the Lua script tests. Everything else the
tests share is in ``tests/helpers``.

With ``REDIS_URL`` set the tests use that database and flush it once at the start, so give
them a database number nobody else uses. Without it they start the embedded Redis in a
temporary folder. Tests name their workflows uniquely, so they never need a flush between.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.settings import Settings
from app.store import Store
from app.store.connection import client_for_url
from app.store.embedded import EmbeddedRedis
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.lua import Lua, notify_subscription, private_lua
from tests.helpers.notification import notification_worker_process
from tests.helpers.processes import Processes
from tests.helpers.worker_wire import TappedServer, Wire, tapped_serving

TEST_PARTITIONS = 4


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    embedded.start(timeout_seconds=10)
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        partitions=TEST_PARTITIONS,
        default_retry_after_seconds=0.05,
        default_timeout_seconds=5.0,
        poll_recheck_seconds=0.5,
    )


@pytest_asyncio.fixture(scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    client = client_for_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest_asyncio.fixture(scope="session")
async def store(redis_client: Any, settings: Settings) -> Store:
    return Store(redis_client, settings.partitions, settings.retention_seconds)


@pytest.fixture(scope="session")
def server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    with serving(settings) as thread:
        yield thread


@pytest_asyncio.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture
async def api(http: httpx.AsyncClient) -> Api:
    return Api(http)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Server and Redis processes the test starts; killed at the end, whatever happened."""
    started = Processes()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def tapped(settings: Settings, redis_client: Any) -> Iterator[TappedServer]:
    """A server on the tests' Redis whose exchanges are recorded: the workers' server."""
    with tapped_serving(settings) as server:
        yield server


@pytest.fixture
def wire(tapped: TappedServer) -> Wire:
    """The recorded exchanges of ``tapped``, emptied for the test."""
    tapped.wire.clear()
    return tapped.wire


@pytest.fixture
def lua(store: Store) -> Lua:
    """The Lua script harness on a key prefix of the test's own."""
    return private_lua(store)


@pytest_asyncio.fixture
async def pubsub(lua: Lua, redis_url: str) -> AsyncIterator[Any]:
    """A subscription to the private notify channel of ``lua``."""
    async with notify_subscription(lua, redis_url) as channel:
        yield channel


@pytest.fixture
def notification_worker(server: ServerThread) -> Iterator[subprocess.Popen[bytes]]:
    """The notification example's worker process against ``server``."""
    with notification_worker_process(server.url) as process:
        yield process
