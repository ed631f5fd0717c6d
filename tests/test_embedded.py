"""The embedded Redis: its allocator (jemalloc preloaded when the system has it, unless told
otherwise with ``ORCHY_EMBEDDED_ALLOCATOR``), and the data folder's one owner at a time."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.settings import Settings
from app.store.connection import open_connection
from app.store.embedded import (
    ALLOCATOR_LIBC,
    JEMALLOC,
    PIDFILE_NAME,
    DataDirInUse,
    EmbeddedRedis,
    allocator_preload,
)
from tests.helpers.processes import pid_alive

START_SECONDS = 10.0
SYSTEM_JEMALLOC = ctypes.util.find_library(JEMALLOC)


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def embedded_redis() -> Iterator[list[EmbeddedRedis]]:
    """Started servers, stopped at the end of the test."""
    started: list[EmbeddedRedis] = []
    yield started
    for server in started:
        server.stop()


def start(started: list[EmbeddedRedis], data_dir: Path, allocator: str) -> EmbeddedRedis:
    server = EmbeddedRedis(data_dir, allocator)
    started.append(server)
    server.start(START_SECONDS)
    return server


def test_libc_choice_preloads_nothing() -> None:
    assert allocator_preload(ALLOCATOR_LIBC) is None


def test_a_missing_library_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-malloc.so"
    with pytest.raises(RuntimeError, match=r"ORCHY_EMBEDDED_ALLOCATOR.*no-such-malloc\.so"):
        allocator_preload(str(missing))


def test_auto_runs_redis_on_the_systems_jemalloc_when_it_has_one(
    tmp_path: Path, embedded_redis: list[EmbeddedRedis]
) -> None:
    """``.ci/run`` installs jemalloc where it can, so CI sees the first case."""
    server = start(embedded_redis, tmp_path, "auto")
    assert server.process is not None
    assert (JEMALLOC in mapped_libraries(server.process.pid)) == (SYSTEM_JEMALLOC is not None)
    client = redis.Redis(unix_socket_path=str(server.socket_path))
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_libc_runs_redis_without_jemalloc(
    tmp_path: Path, embedded_redis: list[EmbeddedRedis]
) -> None:
    server = start(embedded_redis, tmp_path, ALLOCATOR_LIBC)
    assert server.process is not None
    assert JEMALLOC not in mapped_libraries(server.process.pid)


def test_the_setting_reaches_the_embedded_redis(tmp_path: Path) -> None:
    settings = Settings(redis_url="", data_dir=str(tmp_path), embedded_allocator=ALLOCATOR_LIBC)
    connection = open_connection(settings)
    try:
        assert connection.embedded is not None and connection.embedded.process is not None
        assert connection.embedded.allocator == ALLOCATOR_LIBC
        assert JEMALLOC not in mapped_libraries(connection.embedded.process.pid)
    finally:
        connection.close()


# -- the data folder's owner ----------------------------------------------------------------

CRASHING_SERVER = """
import os, sys
from pathlib import Path
import redis
from app.store.embedded import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]), "libc")
server.start(10)
redis.Redis(unix_socket_path=str(server.socket_path)).set("written", "before the crash")
print(server.pid, flush=True)
os._exit(1)  # dies without stopping its redis-server, as a crash would
"""


def test_a_second_owner_of_a_data_folder_in_use_is_refused(
    tmp_path: Path, embedded_redis: list[EmbeddedRedis]
) -> None:
    first = start(embedded_redis, tmp_path, ALLOCATOR_LIBC)
    second = EmbeddedRedis(tmp_path, ALLOCATOR_LIBC)
    with pytest.raises(DataDirInUse, match=rf"{tmp_path} is in use .* \(pid {os.getpid()}\)"):
        second.start(START_SECONDS)
    assert second.pid is None
    assert redis.Redis(unix_socket_path=str(first.socket_path)).ping()


def test_the_redis_a_crashed_owner_left_is_adopted_and_stopped(tmp_path: Path) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_SERVER, str(tmp_path)],
        capture_output=True,
        timeout=START_SECONDS * 2,
        check=False,
    )
    assert crashed.returncode == 1, crashed.stderr
    left = int(crashed.stdout)
    assert pid_alive(left)

    server = EmbeddedRedis(tmp_path, ALLOCATOR_LIBC)
    try:
        server.start(START_SECONDS)
        assert server.adopted and not server.started
        assert server.pid == left
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        assert client.get("written") == b"before the crash"
    finally:
        server.stop()
    assert not pid_alive(left)


def test_a_stale_pid_file_naming_another_process_is_never_adopted_nor_stopped(
    tmp_path: Path,
) -> None:
    (tmp_path / PIDFILE_NAME).write_text(f"{os.getpid()}\n")
    server = EmbeddedRedis(tmp_path, ALLOCATOR_LIBC)
    try:
        server.start(START_SECONDS)
        assert server.started and not server.adopted
        assert server.pid != os.getpid()
    finally:
        server.stop()
    assert pid_alive(os.getpid())
