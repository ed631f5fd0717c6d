"""What the worker library's tests share: a real server whose requests and answers are
recorded on the way (``WireTap``, an ASGI middleware that only looks), the worker run on the
test's loop, and ``orchy worker`` subprocesses whose output is read as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings
from orchy import Worker
from tests.helpers.http import ServerThread, serving
from tests.helpers.waiting import unique, wait_until

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 10.0
PROCESS_EXIT_SECONDS = 15.0
# Servers the worker tests start themselves: one process each for scripts and documents.
LIGHT_SERVER = {"js_processes": 1, "document_processes": 1}
# What a worker logs when a stop comes while tasks are in hand.
STOPPING = "stopping: waiting up to"
POLL = "/tasks/poll"
RESULTS = "/tasks/results"


def fast_worker(settings: Settings, **overrides: Any) -> Settings:
    """The server's settings with a quick worker: short polls, heartbeats and back-off."""
    values: dict[str, Any] = {
        "worker_poll_wait_seconds": 1.0,
        "worker_heartbeat_seconds": 0.1,
        "worker_http_backoff_seconds": 0.05,
        "worker_http_retries": 3,
        "worker_http_timeout_seconds": 5.0,
        "worker_shutdown_grace_seconds": 10.0,
        **overrides,
    }
    return settings.model_copy(update=values)


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body


@dataclass
class Exchange:
    """One request the server received, and its answer once sent."""

    path: str
    at: float = field(default_factory=time.monotonic)
    request: Any = None
    status: int | None = None
    answer: Any = None
    answered: bool = False
    hung_up: bool = False  # the client went away before the answer


@dataclass(frozen=True)
class ResultAnswer:
    """How the server answered one result of a ``/tasks/results`` request."""

    task_id: str
    verb: str  # complete or fail
    sent: dict[str, Any]
    status: int | None  # the result's own status, or the request's when it failed whole
    held: bool
    at: float


class Wire:
    """Every exchange the tapped server had, in the order the requests came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []

    def add(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def clear(self) -> None:
        with self._lock:
            self._exchanges.clear()

    def exchanges(self, path: str | None = None) -> list[Exchange]:
        with self._lock:
            return [e for e in self._exchanges if path is None or e.path == path]

    def polls(self, worker_id: str) -> list[Exchange]:
        return [
            e
            for e in self.exchanges(POLL)
            if isinstance(e.request, dict) and e.request.get("workerId") == worker_id
        ]

    def polls_in_flight(self, worker_id: str) -> int:
        return sum(1 for e in self.polls(worker_id) if not e.answered)

    def results_requests(self, task_id: str | None = None) -> list[Exchange]:
        return [
            e
            for e in self.exchanges(RESULTS)
            if isinstance(e.request, dict)
            and (task_id is None or any(r["taskId"] == task_id for r in e.request["results"]))
        ]

    def leased(self, worker_id: str) -> list[dict[str, Any]]:
        """Tasks leased to ``worker_id``: by its polls, and in answers to its results."""
        tasks: list[dict[str, Any]] = []
        for e in self.exchanges():
            if e.status != 200 or not isinstance(e.answer, dict) or not e.answered:
                continue
            if e.path == POLL and e.request.get("workerId") == worker_id:
                tasks.extend(e.answer["tasks"])
            offer = e.request.get("next") if e.path == RESULTS else None
            if offer is not None and offer.get("workerId") == worker_id:
                tasks.extend(e.answer["tasks"])
        return tasks

    def handed_over(self, worker_id: str) -> list[dict[str, Any]]:
        """Tasks leased to ``worker_id`` in answers to its results (``next``)."""
        polled = {t["taskId"] for e in self.polls(worker_id) if e.answered for t in _tasks(e)}
        return [t for t in self.leased(worker_id) if t["taskId"] not in polled]

    def result_answers(self, task_id: str | None = None) -> list[ResultAnswer]:
        answers = []
        for e in self.results_requests(task_id):
            if not e.answered:
                continue
            statuses = {}
            if e.status == 200 and isinstance(e.answer, dict):
                statuses = {item["taskId"]: item for item in e.answer["results"]}
            for sent in e.request["results"]:
                if task_id is not None and sent["taskId"] != task_id:
                    continue
                item = statuses.get(sent["taskId"], {"status": e.status, "held": False})
                answers.append(
                    ResultAnswer(
                        task_id=sent["taskId"],
                        verb="complete" if "output" in sent else "fail",
                        sent={k: v for k, v in sent.items() if k != "taskId"},
                        status=item["status"],
                        held=bool(item.get("held")),
                        at=e.at,
                    )
                )
        return answers

    def heartbeats(self, task_id: str) -> list[Exchange]:
        return [e for e in self.exchanges(f"/tasks/{task_id}/heartbeat") if e.answered]


def _tasks(exchange: Exchange) -> list[dict[str, Any]]:
    if exchange.status != 200 or not isinstance(exchange.answer, dict):
        return []
    tasks: list[dict[str, Any]] = exchange.answer.get("tasks", [])
    return tasks


class WireTap:
    """Records each request and its answer in a ``Wire``; changes nothing on the way."""

    def __init__(self, app: ASGIApp, wire: Wire) -> None:
        self.app = app
        self.wire = wire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["path"])
        self.wire.add(exchange)
        body, answer = bytearray(), bytearray()

        async def tapped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    exchange.request = _parsed(bytes(body))
            elif message["type"] == "http.disconnect" and not exchange.answered:
                exchange.hung_up = True
            return message

        async def tapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            elif message["type"] == "http.response.body":
                answer.extend(message.get("body", b""))
                if not message.get("more_body"):
                    exchange.answer = _parsed(bytes(answer))
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                exchange.answered = True

        await self.app(scope, tapped_receive, tapped_send)


@dataclass
class TappedServer:
    server: ServerThread
    wire: Wire

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def tapped_serving(settings: Settings) -> Iterator[TappedServer]:
    """A real server with ``settings`` whose exchanges are recorded."""
    wire = Wire()
    with serving(
        settings.model_copy(update=LIGHT_SERVER), functools.partial(WireTap, wire=wire)
    ) as server:
        yield TappedServer(server, wire)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Runs ``worker`` on this loop; on exit stops it and checks that ``run`` returned cleanly."""
    stop = asyncio.Event()
    job = asyncio.create_task(worker.run(stop, handle_signals=False))
    try:
        yield job
    finally:
        stop.set()
        await finish(job, worker)


@dataclass
class StoppableRun:
    """A worker's ``run`` on this loop that the test stops itself (``stop``)."""

    worker: Worker
    stop: asyncio.Event
    job: asyncio.Task[None]

    async def stopped(self) -> None:
        """Stops the worker and waits for ``run`` to return cleanly."""
        self.stop.set()
        await finish(self.job, self.worker)

    async def stopped_draining(
        self, gate: asyncio.Event | threading.Event, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Stops the worker while its task waits at ``gate``, opens the gate once the worker
        says it is draining, and waits for ``run`` to return cleanly."""
        self.stop.set()
        await wait_until(holds(lambda: logged(caplog, STOPPING) == 1), what="the stop")
        gate.set()
        await finish(self.job, self.worker)


@asynccontextmanager
async def stoppable(
    worker: Worker, *release: asyncio.Event | threading.Event
) -> AsyncIterator[StoppableRun]:
    """Runs ``worker`` on this loop; on exit, whatever happened, opens the ``release`` events
    its actions may wait on, stops it and waits for ``run`` without checking how it ended."""
    stop = asyncio.Event()
    run = StoppableRun(worker, stop, asyncio.create_task(worker.run(stop, handle_signals=False)))
    try:
        yield run
    finally:
        for event in release:
            event.set()
        stop.set()
        await asyncio.gather(run.job, return_exceptions=True)


async def finish(job: asyncio.Task[None], worker: Worker) -> None:
    """Waits for a stopped worker's ``run`` to return, and fails if it raised."""
    if not job.done():
        await asyncio.wait({job}, timeout=STOP_SECONDS)
    if not job.done():
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        raise AssertionError(f"worker {worker.worker_id} did not stop in {STOP_SECONDS}s")
    failure = job.exception()
    if failure is not None:
        raise failure


def new_worker(url: str, settings: Settings, concurrency: int = 1) -> Worker:
    return Worker(url, concurrency=concurrency, worker_id=unique("worker"), settings=settings)


def is_set(event: asyncio.Event | threading.Event) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return event.is_set()

    return check


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return check()

    return condition


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """How many records of the worker's logger hold ``text``."""
    return sum(
        1
        for record in caplog.records
        if record.name == "orchy.worker" and text in record.getMessage()
    )


def watch_worker_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orchy.worker")


class WorkerProcess:
    """``orchy worker`` in a child process (the CLI's own code path, with its signal
    handlers), its output collected line by line as it comes."""

    def __init__(self, folder: Path, source: str, server_url: str, **env: str) -> None:
        self.folder = folder
        self.source = source
        self.server_url = server_url
        self.env = env
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        module = unique("worker_module").replace("-", "_")
        (self.folder / f"{module}.py").write_text(self.source)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORCHY_")},
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            f"{module}:worker",
            "--server",
            self.server_url,
            cwd=self.folder,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def wait_said(self, text: str) -> None:
        async def said() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"the worker exited before saying {text!r}:\n{self.output}")
            return self.said(text)

        await wait_until(said, what=f"the worker process to say {text!r}")

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def exit_code(self) -> int:
        assert self.process is not None and self._reader is not None
        code = await asyncio.wait_for(self.process.wait(), PROCESS_EXIT_SECONDS)
        await asyncio.wait_for(self._reader, PROCESS_EXIT_SECONDS)
        return code

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
