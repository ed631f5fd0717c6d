"""A real uvicorn server running the app in a thread, and a small client of the HTTP API."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from app.api.app import create_app
from app.http_protocol import OneWriteHttpToolsProtocol
from app.settings import Settings
from tests.helpers.waiting import DEFAULT_WAIT_SECONDS, wait_until

SERVER_START_SECONDS = 15.0


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


@contextlib.contextmanager
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

    async def history(self, flow_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/flow/{flow_id}/history")
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["history"]
        return entries

    async def wait_status(
        self, flow_id: str, status: str, timeout: float = DEFAULT_WAIT_SECONDS
    ) -> dict[str, Any]:
        async def reached() -> bool:
            return bool((await self.flow(flow_id))["status"] == status)

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


@contextlib.asynccontextmanager
async def api_of(url: str) -> AsyncIterator[Api]:
    """An ``Api`` over the server at ``url`` (a child process, say)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield Api(client)
