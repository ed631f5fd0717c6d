"""GET /flow/{id}?waitSeconds=: a wait for the run's end, over HTTP, woken by the run-end
message (no polling), on the process that serves it or on another one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from app.engine.engine import Engine
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, ServerThread, api_of
from tests.helpers.processes import Processes, clean_env
from tests.helpers.waiting import unique, wait_until

LONG_WAIT = 20.0
SHORT_WAIT = 0.5
# Far below the re-check interval (5 s by default): the answer came from the end message.
PROMPT_SECONDS = 2.0


def engine_of(server: ServerThread) -> Engine:
    engine: Engine = server.app.state.engine
    return engine


async def one_task_run(api: Api) -> tuple[str, str]:
    """A started run of one user action; its flow id and its action's name."""
    name, queue = unique("wait"), unique("wait-task")
    await api.register(workflow(name, user(1, queue)))
    return await api.start(name, {"n": 1}), queue


async def test_the_wait_answers_as_soon_as_a_worker_completes_the_run(
    api: Api, server: ServerThread
) -> None:
    flow_id, queue = await one_task_run(api)
    waiting = asyncio.create_task(
        api.http.get(f"/flow/{flow_id}", params={"waitSeconds": LONG_WAIT})
    )

    async def subscribed() -> bool:
        return engine_of(server).wakeups.waiting_for_run(flow_id) == 1

    await wait_until(subscribed, what="the wait to be registered")
    task = await api.poll_one(queue)
    completed_at = time.monotonic()
    assert (await api.complete(task["taskId"], {"done": True})).status_code == 200
    response = await waiting
    assert time.monotonic() - completed_at < PROMPT_SECONDS
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "COMPLETED"
    assert body["actions"]["1"]["output"] == {"done": True}


async def test_the_wait_of_an_ended_run_answers_at_once(api: Api) -> None:
    flow_id, queue = await one_task_run(api)
    task = await api.poll_one(queue)
    await api.fail(task["taskId"], "broken", retryable=False)
    await api.wait_status(flow_id, "FAILED")
    started = time.monotonic()
    response = await api.http.get(f"/flow/{flow_id}", params={"waitSeconds": LONG_WAIT})
    assert time.monotonic() - started < PROMPT_SECONDS
    assert response.json()["status"] == "FAILED"


async def test_the_wait_answers_the_running_run_when_its_time_is_over(api: Api) -> None:
    flow_id, _ = await one_task_run(api)
    started = time.monotonic()
    response = await api.http.get(f"/flow/{flow_id}", params={"waitSeconds": SHORT_WAIT})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "RUNNING"
    assert SHORT_WAIT <= elapsed < SHORT_WAIT + PROMPT_SECONDS


async def test_a_wait_ends_when_its_client_hangs_up(api: Api, server: ServerThread) -> None:
    flow_id, _ = await one_task_run(api)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as other:
        waiting = asyncio.create_task(
            other.get(f"/flow/{flow_id}", params={"waitSeconds": LONG_WAIT})
        )

        async def subscribed() -> bool:
            return engine_of(server).wakeups.waiting_for_run(flow_id) == 1

        await wait_until(subscribed, what="the wait to be registered")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    async def released() -> bool:
        return engine_of(server).wakeups.waiting_for_run(flow_id) == 0

    await wait_until(released, timeout=PROMPT_SECONDS, what="the wait to end with its client")


@pytest.mark.parametrize("bad", ["-1", "soon", "nan", "inf"])
async def test_a_bad_wait_is_422_naming_the_field(api: Api, bad: str) -> None:
    flow_id, _ = await one_task_run(api)
    response = await api.http.get(f"/flow/{flow_id}", params={"waitSeconds": bad})
    assert response.status_code == 422, response.text
    assert "waitSeconds" in response.text


async def test_the_wait_for_a_missing_run_is_404(api: Api) -> None:
    response = await api.http.get(f"/flow/{unique('none')}", params={"waitSeconds": SHORT_WAIT})
    assert response.status_code == 404, response.text


async def test_a_run_that_ends_on_another_server_process_ends_the_wait(
    tmp_path: Path, processes: Processes, redis_url: str
) -> None:
    # Re-checks far apart: only the end message can answer the wait promptly.
    env = clean_env(REDIS_URL=redis_url, ORCHY_RUN_WAIT_RECHECK_SECONDS="60")
    first = processes.server(env, tmp_path / "first.log")
    second = processes.server(env, tmp_path / "second.log")
    await asyncio.gather(first.start(), second.start())
    async with api_of(first.url) as waiter, api_of(second.url) as worker:
        flow_id, queue = await one_task_run(waiter)
        waiting = asyncio.create_task(
            waiter.http.get(f"/flow/{flow_id}", params={"waitSeconds": LONG_WAIT})
        )
        # The first server answers a read of the run while the wait is open.
        assert (await waiter.flow(flow_id))["status"] == "RUNNING"
        assert not waiting.done()
        task = await worker.poll_one(queue)
        completed_at = time.monotonic()
        assert (await worker.complete(task["taskId"], {"where": "second"})).status_code == 200
        response = await waiting
        assert time.monotonic() - completed_at < PROMPT_SECONDS
        assert response.json()["status"] == "COMPLETED"
