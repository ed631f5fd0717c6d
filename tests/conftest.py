"""Shared fixtures: a real Redis (REDIS_URL, or the embedded one), a real uvicorn server.

With ``REDIS_URL`` set the tests use that database and flush it once at the start, so give
them a database number nobody else uses. Without it they start the embedded Redis in a
temporary folder. Tests name their workflows uniquely, so they never need a flush between.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from app.api.app import create_app
from app.http_protocol import OneWriteHttpToolsProtocol
from app.settings import Settings
from app.store import Store
from app.store.connection import client_for_url
from app.store.embedded import EmbeddedRedis

TEST_PARTITIONS = 4
SERVER_START_SECONDS = 15.0
DEFAULT_WAIT_SECONDS = 15.0


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """A real uvicorn server running the app in its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        # The HTTP protocol `orchy serve` runs (app/serve.py).
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            http=OneWriteHttpToolsProtocol,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(SERVER_START_SECONDS)


@contextmanager
def serving(settings: Settings, *middleware: Any) -> Iterator[ServerThread]:
    """A real server with ``settings`` (and each of ``middleware`` added to its app), stopped
    at the end of the block."""
    thread = ServerThread(settings)
    for layer in middleware:
        thread.app.add_middleware(layer)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="session")
def server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    with serving(settings) as thread:
        yield thread


@pytest_asyncio.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    timeout: float = DEFAULT_WAIT_SECONDS,
    step: float = 0.02,
    what: str = "condition",
) -> None:
    """Waits for ``condition`` with a deadline; fails the test when it does not come."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


@dataclass
class Api:
    """Small helpers over the HTTP API for tests."""

    http: httpx.AsyncClient

    async def register(self, definition: dict[str, Any]) -> int:
        response = await self.http.post("/metadata/workflow", json=definition)
        assert response.status_code == 200, response.text
        version: int = response.json()["version"]
        return version

    async def start(self, name: str, input_data: Any = None, **extra: Any) -> str:
        body = {"name": name, "input": {} if input_data is None else input_data, **extra}
        response = await self.http.post("/flow/execute", json=body)
        assert response.status_code == 201, response.text
        flow_id: str = response.json()["flowId"]
        return flow_id

    async def flow(self, flow_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/flow/{flow_id}")
        assert response.status_code == 200, response.text
        flow: dict[str, Any] = response.json()
        return flow

    async def wait_status(
        self, flow_id: str, status: str, timeout: float = DEFAULT_WAIT_SECONDS
    ) -> dict[str, Any]:
        async def reached() -> bool:
            return (await self.flow(flow_id))["status"] == status

        await wait_until(reached, timeout, what=f"flow {flow_id} to be {status}")
        return await self.flow(flow_id)

    async def poll(
        self, actions: list[str], most: int = 10, wait: float = 2.0, worker: str = "test"
    ) -> list[dict[str, Any]]:
        body = {"workerId": worker, "actions": actions, "max": most, "waitSeconds": wait}
        response = await self.http.post("/tasks/poll", json=body)
        assert response.status_code == 200, response.text
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    async def poll_one(self, action: str, wait: float = 5.0) -> dict[str, Any]:
        tasks = await self.poll([action], most=1, wait=wait)
        assert len(tasks) == 1, f"no task for {action}"
        return tasks[0]

    async def complete(self, task_id: str, output: dict[str, Any]) -> httpx.Response:
        return await self.http.post(f"/tasks/{task_id}/complete", json={"output": output})

    async def fail(self, task_id: str, error: str, retryable: bool = True) -> httpx.Response:
        body = {"error": error, "retryable": retryable}
        return await self.http.post(f"/tasks/{task_id}/fail", json=body)


@pytest_asyncio.fixture
async def api(http: httpx.AsyncClient) -> Api:
    return Api(http)


SHARED = Path(__file__).resolve().parent.parent / "workflows"
