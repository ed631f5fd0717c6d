"""The embedded Redis's allocator: jemalloc preloaded when the system has it, unless told
otherwise (``ORCHY_EMBEDDED_ALLOCATOR``)."""

from __future__ import annotations

import ctypes.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.settings import Settings
from app.store.connection import open_connection
from app.store.embedded import ALLOCATOR_LIBC, JEMALLOC, EmbeddedRedis, allocator_preload

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


@pytest.mark.skipif(SYSTEM_JEMALLOC is None, reason="this system has no jemalloc library")
def test_auto_runs_redis_on_the_systems_jemalloc(
    tmp_path: Path, embedded_redis: list[EmbeddedRedis]
) -> None:
    server = start(embedded_redis, tmp_path, "auto")
    assert server.process is not None
    assert JEMALLOC in mapped_libraries(server.process.pid)
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
