"""Test your workflows end to end: a real Orchy server for a test session, and a worker
running in the background.

::

    from orchy import Workflow
    from orchy.testing import running_worker

    def test_greeting(orchy_server: str) -> None:
        ...  # register, run a worker with `with running_worker(worker, orchy_server):`, start

:func:`orchy_server` is a pytest fixture, registered as a pytest plugin (the ``pytest11``
entry point ``orchy``) wherever the full ``orchy`` distribution is installed, so a test names
it and gets the server's base URL; ``from orchy.testing import orchy_server`` in a
``conftest.py`` does the same without the plugin. It starts ``orchy serve`` (a subprocess of
the same Python) on the embedded Redis, with its data in a temporary folder, once per test
session, and stops it at the end.

**This module needs the full install** (the ``orchy`` distribution, which holds the server):
the light ``orchy-client`` has no server to start. Nothing of the server is imported here:
the server runs as ``python -m app.cli serve`` in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import httpx
import pytest

__all__ = [
    "START_SECONDS",
    "STOP_SECONDS",
    "OrchyServerProcess",
    "WorkerLike",
    "orchy_server",
    "running_worker",
    "serve",
]

START_SECONDS = 30.0
"""How long the server may take to answer ``GET /health`` after it is started."""
STOP_SECONDS = 15.0
"""How long a server or a worker may take to stop before it is killed (or reported)."""
_HEALTH_STEP_SECONDS = 0.05
# Settings of the server's process that the caller's environment must not decide: the
# server runs on its own embedded Redis, in its own folder, on its own port.
_SERVER_ENV_DROPPED = ("REDIS_URL", "ORCHY_REDIS_URL", "ORCHY_DATA_DIR", "ORCHY_HOST", "ORCHY_PORT")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OrchyServerProcess:
    """An ``orchy serve`` process on the embedded Redis, keeping its data in ``data_dir``;
    :attr:`url` is its base URL once :meth:`start` has returned."""

    def __init__(self, data_dir: Path, *, port: int | None = None, log: Path | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or self.data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it says it listens and answers ``GET /health``
        (RuntimeError, with the end of its log, if it exits or is not ready within
        :data:`START_SECONDS`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROPPED}
        env["ORCHY_DATA_DIR"] = str(self.data_dir / "data")
        command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_SECONDS
        while not (self._listening() and self._healthy()):
            if self.process.poll() is not None:
                self.stop()
                code = self.process.returncode
                raise RuntimeError(f"orchy serve exited ({code}): {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                waited = f"{START_SECONDS:g} s"
                raise RuntimeError(f"orchy serve did not answer in {waited}: {self._tail()}")
            time.sleep(_HEALTH_STEP_SECONDS)

    def _listening(self) -> bool:
        """The process says it listens on its port (an answer on the port alone could
        come from another server that holds it)."""
        try:
            log = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return f"listening on {self.url}" in log

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM; SIGKILL after :data:`STOP_SECONDS`)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def serve(data_dir: Path) -> Iterator[str]:
    """A real Orchy server (``orchy serve``, embedded Redis in ``data_dir``) for the block;
    yields its base URL and stops it at the end."""
    server = OrchyServerProcess(data_dir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def orchy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a real Orchy server, started once per test session on the embedded
    Redis in a temporary folder, and stopped at the end. Needs the full install."""
    with serve(tmp_path_factory.mktemp("orchy")) as url:
        yield url


class WorkerLike(Protocol):
    """What :func:`running_worker` needs of a worker: ``orchy.Worker`` has it."""

    server_url: str | None

    async def run(
        self, stop_event: asyncio.Event | None = None, *, handle_signals: bool = True
    ) -> None:
        """Serve until ``stop_event`` is set."""


@contextlib.contextmanager
def running_worker(worker: WorkerLike, server_url: str | None = None) -> Iterator[WorkerLike]:
    """Run ``worker`` in a background thread (its own event loop) for the block, against
    ``server_url`` when given; at the end, stop it, let it finish the tasks in hand, and
    re-raise whatever made its ``run`` fail."""
    if server_url is not None:
        worker.server_url = server_url
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def serve_in_thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(worker.run(stop, handle_signals=False))
        except BaseException as error:  # handed to the test's thread
            failure.append(error)
        finally:
            loop.close()

    thread = threading.Thread(target=serve_in_thread, name="orchy-test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        thread.join(STOP_SECONDS)
        if thread.is_alive():
            raise RuntimeError(f"the worker did not stop within {STOP_SECONDS:g} s")
        if failure:
            raise failure[0]
