"""Child processes a test starts: ``python -m app.cli serve`` servers, private
``redis-server`` instances, ``orchy worker`` with an example's worker file, and a list of them
killed at teardown whatever happened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.store.embedded import redis_server_binary
from tests.helpers.http import free_port
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
# Every process a server started with ``marked_env`` starts inherits this mark in its
# environment, so a test can tell whether any of them is still running once it has gone.
MARK = "ORCHY_TEST_SERVE_MARK"

SERVER_READY_SECONDS = 30.0
PROCESS_EXIT_SECONDS = 15.0
REDIS_READY_SECONDS = 10.0
LOG_TAIL_CHARS = 4000
CLEAN_SHUTDOWN = "Application shutdown complete"
# Settings of the server processes: few partitions, quick retries and rechecks.
SERVER_SETTINGS = {
    "ORCHY_PARTITIONS": "4",
    "ORCHY_DEFAULT_RETRY_AFTER_SECONDS": "0.05",
    "ORCHY_POLL_RECHECK_SECONDS": "0.2",
    "ORCHY_TIMER_IDLE_RECHECK_SECONDS": "0.5",
    "ORCHY_NOTIFIER_RECONNECT_SECONDS": "0.2",
}


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def wait_gone(pid: int, what: str) -> None:
    async def gone() -> bool:
        return not pid_alive(pid)

    await wait_until(gone, PROCESS_EXIT_SECONDS, step=0.05, what=f"{what} (pid {pid}) to exit")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any Redis or Orchy setting, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "REDIS_URL" and not key.startswith("ORCHY_")
    }
    return {**env, **SERVER_SETTINGS, **extra}


class ChildProcess:
    """What a server and a Redis process share: ending the running one and waiting for it."""

    process: subprocess.Popen[bytes] | None

    async def _end(self, how: Callable[[subprocess.Popen[bytes]], None]) -> int:
        """Signals the running process with ``how`` and waits for it to exit; its exit code."""
        process = self.process
        assert process is not None
        how(process)
        code = await asyncio.to_thread(process.wait, PROCESS_EXIT_SECONDS)
        self.process = None
        return code

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(PROCESS_EXIT_SECONDS)
        self.process = None


@dataclass
class ServerProcess(ChildProcess):
    """``python -m app.cli serve`` in a child process, its output in ``log_path``. With
    ``tls`` (the context a client verifies it with) the server is asked for over HTTPS;
    ``arguments`` are added to its command line."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tls: ssl.SSLContext | None = None
    arguments: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def log_tail(self, chars: int | None = LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server's output (None: all of it)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text if chars is None else text[-chars:]

    def launch(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "app.cli", "serve", "--port", str(self.port)),
                    *self.arguments,
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    async def start(self) -> None:
        process = self.launch()

        async def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{self.log_tail()}")
            try:
                verify = self.tls if self.tls is not None else True
                async with httpx.AsyncClient(timeout=1.0, verify=verify) as client:
                    return (await client.get(f"{self.url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, SERVER_READY_SECONDS, step=0.05, what="the server to answer")

    async def terminate(self) -> None:
        """SIGTERM, as a service manager stops the server; it must shut down cleanly (uvicorn
        exits through the signal it caught once its shutdown is complete)."""
        code = await self._end(lambda process: process.send_signal(signal.SIGTERM))
        log = self.log_tail()
        assert code in (0, -signal.SIGTERM), f"server exited with {code}:\n{log}"
        assert CLEAN_SHUTDOWN in log, f"no clean shutdown:\n{log}"

    async def kill(self) -> None:
        await self._end(subprocess.Popen.kill)


async def listening(
    process: subprocess.Popen[bytes], port: int, why_it_exited: Callable[[], str]
) -> None:
    """Waits until ``process`` (a redis-server) accepts connections on ``port``; fails with
    ``why_it_exited()`` if it ends first."""

    async def accepts() -> bool:
        assert process.poll() is None, why_it_exited()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(accepts, REDIS_READY_SECONDS, step=0.02, what="redis-server to listen")


@dataclass
class RedisProcess(ChildProcess):
    """A private ``redis-server`` on a TCP port with an append-only file in ``data_dir``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def launch(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
            "daemonize": "no",
            "logfile": str(self.data_dir / "redis.log"),
        }
        arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
        self.process = subprocess.Popen(
            [redis_server_binary(), *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.process

    async def start(self) -> None:
        await listening(self.launch(), self.port, lambda: "redis-server exited at start")

    async def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits."""
        await self._end(subprocess.Popen.terminate)


@dataclass
class Processes:
    """Everything a test started, killed at teardown whatever happened."""

    servers: list[ServerProcess] = field(default_factory=list)
    redises: list[RedisProcess] = field(default_factory=list)
    pidfiles: list[Path] = field(default_factory=list)

    def server(self, env: dict[str, str], log_path: Path) -> ServerProcess:
        server = ServerProcess(env, log_path)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for redis_process in self.redises:
            redis_process.close()
        for pidfile in self.pidfiles:
            with contextlib.suppress(FileNotFoundError, ValueError):
                kill_pid(int(pidfile.read_text().strip()))
        for mark in {server.env[MARK] for server in self.servers if MARK in server.env}:
            for pid in marked_processes(mark):
                kill_pid(pid)


@contextlib.contextmanager
def orchy_worker_process(worker_file: Path, *arguments: str) -> Iterator[subprocess.Popen[bytes]]:
    """``orchy worker FILE ARGUMENTS`` as a user runs it; it must exit 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", str(worker_file), *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(PROCESS_EXIT_SECONDS) == 0
        finally:
            if process.poll() is None:
                process.kill()


def example_worker_process(
    worker_file: Path, server_url: str
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``orchy worker`` with an example's worker file and ``--server``, as a user runs it."""
    return orchy_worker_process(worker_file, "--server", server_url)


def read_pid(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def marked_env(**extra: str) -> dict[str, str]:
    """``clean_env`` with a mark of its own (see ``MARK``)."""
    return clean_env(**{MARK: uuid.uuid4().hex, **extra})


def marked_processes(mark: str) -> list[int]:
    """Pids of the live processes whose environment carries ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
