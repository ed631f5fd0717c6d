"""``orchy serve`` as a user runs it: real ``python -m app.cli serve`` processes, each with
the embedded Redis in its own temporary data folder. Every process a server starts (the
embedded redis-server, the script processes) inherits a mark in its environment, so a test
can tell whether anything it started is still running once it has gone."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.engine.background import stop_tasks
from app.settings import Settings, default_data_dir
from app.store.connection import redacted
from app.store.embedded import PIDFILE_NAME
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import api_of
from tests.helpers.processes import (
    MARK,
    PROCESS_EXIT_SECONDS,
    ROOT,
    Processes,
    ServerProcess,
    kill_pid,
    marked_env,
    marked_processes,
    pid_alive,
    read_pid,
    wait_gone,
)
from tests.helpers.waiting import unique, wait_until

# Generous: what is asserted is that the process ends, not how fast.
EXIT_DEADLINE_SECONDS = 20.0
# A long poll that would hold a stop for two minutes if the stop waited for it.
LONG_POLL_SECONDS = 120
LOG_SECONDS = 15.0


@dataclass
class Occupied:
    port: int


@pytest.fixture
def occupied_port() -> Iterator[Occupied]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield Occupied(sock.getsockname()[1])


def kill_marked(mark: str) -> None:
    for pid in marked_processes(mark):
        kill_pid(pid)


@dataclass
class ServerIn(ServerProcess):
    """A server started from ``cwd`` rather than from the project's folder."""

    cwd: Path = ROOT

    def launch(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                serve_command(self.port),
                cwd=self.cwd,
                env={**self.env, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]


def log_lines(server: ServerProcess) -> list[str]:
    return server.log_path.read_text(errors="replace").splitlines()


async def wait_for_line(server: ServerProcess, pattern: str) -> str:
    found: list[str] = []

    async def logged() -> bool:
        found[:] = [line for line in log_lines(server) if re.search(pattern, line)]
        return bool(found)

    await wait_until(logged, LOG_SECONDS, step=0.05, what=f"a log line like {pattern!r}")
    return found[0]


# -- a port in use --------------------------------------------------------------------------


def test_a_port_in_use_ends_serve_at_once_with_one_line_and_nothing_left(
    tmp_path: Path, occupied_port: Occupied
) -> None:
    env = marked_env(ORCHY_DATA_DIR=str(tmp_path / "data"))
    process = subprocess.Popen(
        serve_command(occupied_port.port),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = process.communicate(timeout=EXIT_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        kill_pid(process.pid)
        process.wait()
        raise AssertionError("orchy serve on a port in use did not exit") from None
    finally:
        left = marked_processes(env[MARK])
        kill_marked(env[MARK])

    assert process.returncode == 1
    lines = stderr.decode().splitlines()
    assert lines == [
        f"orchy serve: cannot listen on 127.0.0.1:{occupied_port.port}: address already in use"
        " (choose another with --port or ORCHY_PORT)"
    ]
    assert stdout == b""
    assert left == [], "a process the server started is still running"
    assert not (tmp_path / "data" / PIDFILE_NAME).exists()


# -- stops ----------------------------------------------------------------------------------


async def test_a_stop_after_a_crash_stops_the_redis_the_crashed_server_left(
    tmp_path: Path, processes: Processes
) -> None:
    data_dir = tmp_path / "data"
    pidfile = data_dir / PIDFILE_NAME
    processes.pidfiles.append(pidfile)
    env = marked_env(ORCHY_DATA_DIR=str(data_dir))
    crashed = processes.server(env, tmp_path / "crashed.log")
    await crashed.start()
    redis_pid = read_pid(pidfile)
    name = unique("after-crash")
    async with api_of(crashed.url) as api:
        await api.register(workflow(name, user(1, f"{name}-task")))
        flow_id = await api.start(name)
    await crashed.kill()
    assert pid_alive(redis_pid), "the embedded Redis outlives a crash of its server"

    restarted = processes.server(env, tmp_path / "restarted.log")
    await restarted.start()
    assert read_pid(pidfile) == redis_pid, "the restarted server reuses the Redis left running"
    async with api_of(restarted.url) as api:
        assert (await api.flow(flow_id))["status"] == "RUNNING"
    await restarted.terminate()

    await wait_gone(redis_pid, "the embedded redis-server the crashed server left")
    assert marked_processes(env[MARK]) == []
    await wait_for_line(restarted, rf"embedded Redis .* pid {redis_pid}, reusing")


async def test_a_stop_answers_long_polls_in_flight_and_ends(
    tmp_path: Path, processes: Processes
) -> None:
    env = marked_env(
        ORCHY_DATA_DIR=str(tmp_path / "data"),
        ORCHY_POLL_MAX_WAIT_SECONDS=str(LONG_POLL_SECONDS),
    )
    server = processes.server(env, tmp_path / "server.log")
    await server.start()
    assert server.process is not None
    process = server.process
    action = unique("never-queued")
    async with httpx.AsyncClient(base_url=server.url, timeout=LONG_POLL_SECONDS * 2) as http:
        body = {"workerId": "w", "actions": [action], "max": 1, "waitSeconds": LONG_POLL_SECONDS}
        poll = asyncio.create_task(http.post("/tasks/poll", json=body))
        # A request on another connection answered after the poll was sent.
        assert (await http.get("/health")).status_code == 200
        assert not poll.done()
        process.terminate()
        answer = await asyncio.wait_for(poll, EXIT_DEADLINE_SECONDS)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"tasks": []}
    await asyncio.to_thread(process.wait, EXIT_DEADLINE_SECONDS)
    server.process = None

    async def all_gone() -> bool:
        return not marked_processes(env[MARK])

    await wait_until(all_gone, PROCESS_EXIT_SECONDS, what="the server's processes to end")


# -- the data folder ------------------------------------------------------------------------


def test_the_data_folder_defaults_to_the_users_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ORCHY_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().data_dir == str(tmp_path / "xdg" / "orchy")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == str(tmp_path / "home" / ".local" / "share" / "orchy")


async def test_a_server_started_from_another_folder_finds_the_same_data(
    tmp_path: Path, processes: Processes
) -> None:
    xdg = tmp_path / "xdg"
    env = marked_env(XDG_DATA_HOME=str(xdg), HOME=str(tmp_path / "home"))
    processes.pidfiles.append(xdg / "orchy" / PIDFILE_NAME)
    name = unique("anywhere")
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        server = ServerIn(env, tmp_path / f"{folder}.log", cwd=tmp_path / folder)
        processes.servers.append(server)
        await server.start()
        async with api_of(server.url) as api:
            if folder == "first":
                await api.register(workflow(name, user(1, f"{name}-task")))
            listed = (await api.http.get("/metadata/workflow")).json()
            assert name in [entry["name"] for entry in listed]
        await server.terminate()
        await wait_for_line(server, rf"data folder {re.escape(str(xdg / 'orchy'))} ")


async def test_a_second_server_on_a_data_folder_in_use_is_refused(
    tmp_path: Path, processes: Processes
) -> None:
    data_dir = tmp_path / "data"
    processes.pidfiles.append(data_dir / PIDFILE_NAME)
    env = marked_env(ORCHY_DATA_DIR=str(data_dir))
    first = processes.server(env, tmp_path / "first.log")
    await first.start()
    assert first.process is not None
    second = processes.server(env, tmp_path / "second.log")
    refused = second.launch()
    code = await asyncio.to_thread(refused.wait, EXIT_DEADLINE_SECONDS)
    assert code == 1
    assert second.log_tail().splitlines() == [
        f"orchy serve: data folder {data_dir} is in use by another orchy server "
        f"(pid {first.process.pid}); stop it, or set ORCHY_DATA_DIR to another folder"
    ]
    async with api_of(first.url) as api:
        assert (await api.http.get("/health")).json() == {"status": "ok", "redis": "ok"}
    await first.terminate()


# -- the server's log -----------------------------------------------------------------------


async def test_the_log_says_where_state_lives_and_has_a_line_per_run_and_failure(
    tmp_path: Path, processes: Processes
) -> None:
    data_dir = tmp_path / "data"
    processes.pidfiles.append(data_dir / PIDFILE_NAME)
    server = processes.server(marked_env(ORCHY_DATA_DIR=str(data_dir)), tmp_path / "server.log")
    await server.start()
    await wait_for_line(
        server, rf"data folder {re.escape(str(data_dir))} .*embedded Redis unix://.*redis\.sock"
    )
    name = unique("logged")
    task_name = f"{name}-task"
    async with api_of(server.url) as api:
        await api.register(workflow(name, user(1, task_name)))
        completed = await api.start(name)
        first = await api.poll_one(task_name)
        assert (await api.fail(first["taskId"], "first try broke")).status_code == 200
        again = await api.poll_one(task_name)
        assert (await api.complete(again["taskId"], {"ok": True})).status_code == 200
        await api.wait_status(completed, "COMPLETED")
        failed = await api.start(name)
        task = await api.poll_one(task_name)
        assert (await api.fail(task["taskId"], "gave up", retryable=False)).status_code == 200
        await api.wait_status(failed, "FAILED")

        await wait_for_line(server, rf"run {completed} started: {name} v1")
        await wait_for_line(server, rf"run {completed}, step 1, attempt 1 failed, retried in .*")
        await wait_for_line(server, rf"run {completed} COMPLETED$")
        await wait_for_line(server, rf"run {failed} started: {name} v1")
        await wait_for_line(server, rf"run {failed}, step 1, attempt 1 failed: gave up")
        await wait_for_line(server, rf"run {failed} FAILED: .*gave up")

        switched = f"{name}-switch"
        await api.register(
            workflow(
                switched,
                system(1, "switch", {"go": [2]}, expression="{$.input.way}"),
                user(2, task_name),
            )
        )
        nowhere = await api.start(switched, {"way": "nowhere"})
        await wait_for_line(server, rf"run {nowhere}, action 1 failed: .*nowhere")
        await wait_for_line(server, rf"run {nowhere} FAILED: .*nowhere")

        before = log_lines(server)
        for _ in range(5):
            assert await api.poll([task_name], wait=0) == []
        assert (await api.http.get("/health")).status_code == 200
        assert log_lines(server) == before, "polls are not logged"
    await server.terminate()


async def test_stopping_outlasts_a_background_task_that_swallows_a_cancellation() -> None:
    """redis-py's pub/sub loses a cancellation that comes while it subscribes: a stop that
    cancelled the notifier once and waited for it hung for ever."""
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([task], timeout_seconds=30), EXIT_DEADLINE_SECONDS)
    assert swallowed.is_set()
    assert task.cancelled()


def test_the_log_never_shows_a_redis_password() -> None:
    assert redacted("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted("rediss://:secret@host:6380") == "rediss://:***@host:6380"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"
    assert redacted("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"
