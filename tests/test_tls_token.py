"""The bearer token: the run client, the worker library (its definitions, polls, heartbeats
and results) and the CLI send ``Authorization: Bearer <token>`` with every request, as a real
HTTP server written here (a socket server, not Orchy's) receives them; the token is in no
``repr``, log line or error message."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from orchy import AsyncClient, Client, ClientSettings, Credentials, Unauthorized, Worker
from tests.helpers.cli import orchy
from tests.helpers.processes import PROCESS_EXIT_SECONDS, ROOT, clean_env
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker, running

TOKEN = "orchy-test-token-5f0c1d"
REFUSED_TOKEN = "refused-token-9a8b7c"
ACTION = "token-action"
TASK_SECONDS = 0.3


@dataclass
class Received:
    """What the server received: (method, path, Authorization header) per request."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    polls: int = 0

    def paths(self) -> set[str]:
        with self.lock:
            return {path for _, path, _ in self.requests}

    def authorizations(self) -> set[str | None]:
        with self.lock:
            return {authorization for _, _, authorization in self.requests}


def answer_for(received: Received, method: str, path: str) -> tuple[int, Any]:
    """Just enough of Orchy's API for a client and a worker: one task on the first poll."""
    if path.startswith("/flow"):
        return 200, {"runs": [], "offset": 0, "limit": 50}
    if path == "/metadata/action":
        return 200, {"name": ACTION}
    if path == "/tasks/poll":
        with received.lock:
            received.polls += 1
            first = received.polls == 1
        task = {"taskId": "t-1", "flowId": "f-1", "actionId": 1, "name": ACTION, "input": {}}
        return 200, {"tasks": [task] if first else []}
    if path == "/tasks/results":
        return 200, {"results": [{"status": 200}]}
    if path.endswith("/heartbeat"):
        return 200, {}
    return 404, {"error": f"no route {method} {path}"}


@dataclass
class TokenServer:
    received: Received
    url: str


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    """A real HTTP server on a free port that records each request's Authorization header
    and answers 401 to ``REFUSED_TOKEN``."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            authorization = self.headers.get("Authorization")
            with received.lock:
                received.requests.append((self.command, path, authorization))
            if authorization == f"Bearer {REFUSED_TOKEN}":
                status, body = 401, {"error": "the token is not valid"}
            else:
                status, body = answer_for(received, self.command, path)
            content = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = handle_one

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenServer(received, f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def test_the_clients_send_the_token_and_never_show_it(token_server: TokenServer) -> None:
    with Client(token_server.url, token=TOKEN) as client:
        assert client.list_runs().runs == []
        shown = [repr(client.settings), str(client.settings), repr(client.__dict__)]
    async with AsyncClient(token_server.url, token=TOKEN) as async_client:
        await async_client.list_runs()
        shown.append(repr(async_client.settings))
    assert token_server.received.authorizations() == {f"Bearer {TOKEN}"}
    shown += [repr(Credentials(token=TOKEN)), repr(ClientSettings(token=TOKEN))]  # type: ignore[arg-type]
    for text in shown:
        assert TOKEN not in text, text


async def test_the_client_reads_orchy_token(
    token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHY_TOKEN", TOKEN)
    async with AsyncClient(token_server.url) as client:
        await client.list_runs()
    assert token_server.received.authorizations() == {f"Bearer {TOKEN}"}


async def test_a_refused_token_is_unauthorized_without_the_token_in_the_error(
    token_server: TokenServer,
) -> None:
    async with AsyncClient(token_server.url, token=REFUSED_TOKEN) as client:
        with pytest.raises(Unauthorized) as refused:
            await client.list_runs()
    assert refused.value.status == 401
    assert "the token is not valid" in str(refused.value)
    assert REFUSED_TOKEN not in repr(refused.value)


async def test_the_worker_sends_the_token_on_every_route_and_never_logs_it(
    token_server: TokenServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(
        token_server.url,
        concurrency=1,
        worker_id=unique("token-worker"),
        token=TOKEN,
        settings=fast_worker(settings, worker_heartbeat_seconds=0.05),
    )

    @worker.action(ACTION, retry_count=1)
    async def slow(input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(TASK_SECONDS)  # outlives a few heartbeat intervals
        return {}

    caplog.set_level(logging.DEBUG)
    async with running(worker):

        async def reported() -> bool:
            return "/tasks/results" in token_server.received.paths()

        await wait_until(reported, what="the task's result")
    paths = token_server.received.paths()
    assert {"/metadata/action", "/tasks/poll", "/tasks/t-1/heartbeat", "/tasks/results"} <= paths
    assert token_server.received.authorizations() == {f"Bearer {TOKEN}"}
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(worker.credentials)
    assert TOKEN not in repr(vars(worker))


async def test_the_cli_sends_the_token_from_the_option_and_from_orchy_token(
    token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = await orchy("flow", "list", "--token", TOKEN, server=token_server.url)
    assert listed.code == 0, listed.stderr
    assert token_server.received.authorizations() == {f"Bearer {TOKEN}"}

    monkeypatch.setenv("ORCHY_TOKEN", REFUSED_TOKEN)
    refused = await orchy("flow", "list", server=token_server.url)
    assert refused.code == 1
    assert refused.stderr.strip() == "401: the token is not valid"
    assert token_server.received.requests[-1][2] == f"Bearer {REFUSED_TOKEN}"


WORKER_FILE = f"""
from orchy import Worker

worker = Worker()


@worker.action({ACTION!r})
def act(input):
    return {{}}
"""


def orchy_worker_process(*arguments: str) -> subprocess.Popen[bytes]:
    """``python -m orchy.worker ARGUMENTS``, its output (the worker's log) in a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchy.worker", *arguments],
        cwd=ROOT,
        env={**clean_env(), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_orchy_worker_sends_the_token_of_its_option(
    token_server: TokenServer, tmp_path: Path
) -> None:
    """``python -m orchy.worker`` (the light install's ``orchy-worker``) with ``--token``;
    its output (the worker's log) never shows the token."""
    worker_file = tmp_path / "worker.py"
    worker_file.write_text(WORKER_FILE)
    process = orchy_worker_process(str(worker_file), "--token", TOKEN, "--server", token_server.url)
    try:

        async def reported() -> bool:
            return "/tasks/results" in token_server.received.paths()

        await wait_until(reported, what="the worker's result")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=PROCESS_EXIT_SECONDS)
    assert process.returncode == 0, output
    assert token_server.received.authorizations() == {f"Bearer {TOKEN}"}
    assert b"serving " + ACTION.encode() in output
    assert TOKEN.encode() not in output
