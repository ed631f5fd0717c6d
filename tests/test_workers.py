"""Queues and workers as an operator sees them (``GET /tasks/queues``, ``GET /workers``): a
queue with tasks and no worker is flagged with its oldest task's age; workers seen polling
are listed with their actions and the tasks leased to them, and drop out after
ORCHY_WORKER_SEEN_SECONDS; leased and retrying counts move as tasks are leased and fail;
one tenant's workers are not listed to another. A real server on a short seen window, real
workers of the worker library and raw HTTP polls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.settings import Settings
from orchy import Worker
from tests.helpers.definitions import set_action, user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import LIGHT_SERVER, fast_worker, running

SEEN_SECONDS = 1.5
SHORT_WINDOW = {"worker_seen_seconds": SEEN_SECONDS, "poll_record_seconds": 0.1, **LIGHT_SERVER}


@pytest.fixture(scope="module")
def short_window(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    with serving(settings.model_copy(update=SHORT_WINDOW)) as server:
        yield server


@pytest_asyncio.fixture
async def window_api(short_window: ServerThread) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=short_window.url, timeout=30) as client:
        yield Api(client)


async def queue_of(api: Api, action: str) -> dict[str, Any]:
    response = await api.http.get("/tasks/queues")
    assert response.status_code == 200, response.text
    [queue] = [queue for queue in response.json()["queues"] if queue["action"] == action]
    return dict(queue)


async def workers_of(api: Api) -> dict[str, dict[str, Any]]:
    response = await api.http.get("/workers")
    assert response.status_code == 200, response.text
    return {worker["workerId"]: worker for worker in response.json()["workers"]}


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def test_a_queue_with_tasks_and_no_worker_is_flagged_with_its_oldest_age(
    window_api: Api,
) -> None:
    api = window_api
    name = unique("unserved")
    action = f"{name}-task"
    await api.register(workflow(name, user(1, action)))
    windows: dict[str, tuple[float, float]] = {}  # run -> its start's request and answer
    for _ in range(2):
        before = time.time()
        flow_id = await api.start(name)
        windows[flow_id] = (before, time.time())
    first_window = next(iter(windows.values()))

    queue = await queue_of(api, action)
    assert queue["depth"] == 2
    assert (queue["workers"], queue["noWorker"], queue["leased"]) == (0, True, 0)
    # The oldest is the first run's task: queued between its start's request and answer.
    assert first_window[0] - 0.05 <= moment(queue["oldestQueuedAt"]) <= first_window[1] + 0.05
    assert queue["oldestQueuedAgeSeconds"] >= 0

    async def aged() -> bool:
        return bool((await queue_of(api, action))["oldestQueuedAgeSeconds"] >= 0.3)

    await wait_until(aged, what="the oldest task's age to grow")

    # A raw poll takes one: the queue has a worker now, one task leased, one waiting (the
    # other run's: partitions are polled in turn, not oldest first).
    worker = unique("raw")
    [task] = await api.poll([action], most=1, wait=0, worker=worker)
    queue = await queue_of(api, action)
    assert (queue["depth"], queue["leased"]) == (1, 1)
    assert (queue["workers"], queue["noWorker"]) == (1, False)
    [(start, end)] = [window for run, window in windows.items() if run != task["flowId"]]
    assert start - 0.05 <= moment(queue["oldestQueuedAt"]) <= end + 0.05
    listed = (await workers_of(api))[worker]
    assert (listed["actions"], listed["tasksInHand"]) == ([action], 1)
    assert (await api.complete(task["taskId"], {})).status_code == 200
    assert (await workers_of(api))[worker]["tasksInHand"] == 0


async def test_a_worker_polling_is_listed_with_its_tasks_in_hand_then_drops_out(
    window_api: Api, short_window: ServerThread, settings: Settings
) -> None:
    api = window_api
    name = unique("held")
    action = f"{name}-task"
    await api.register(workflow(name, user(1, action)))
    release = asyncio.Event()
    worker = Worker(
        short_window.url,
        concurrency=4,
        worker_id=unique("lib-worker"),
        settings=fast_worker(settings, worker_poll_wait_seconds=0.5),
    )

    @worker.action(action)
    async def hold(task: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"held": True}

    async with running(worker):
        flows = [await api.start(name) for _ in range(2)]

        async def holding_two() -> bool:
            listed = (await workers_of(api)).get(worker.worker_id)
            return listed is not None and listed["tasksInHand"] == 2

        await wait_until(holding_two, what="the worker listed with two tasks in hand")
        listed = (await workers_of(api))[worker.worker_id]
        assert listed["actions"] == [action]
        assert listed["lastPollAt"] is not None
        queue = await queue_of(api, action)
        assert (queue["depth"], queue["leased"], queue["workers"]) == (0, 2, 1)

        release.set()
        for flow_id in flows:
            await api.wait_status(flow_id, "COMPLETED")

        async def empty_handed() -> bool:
            return bool((await workers_of(api))[worker.worker_id]["tasksInHand"] == 0)

        await wait_until(empty_handed, what="no task in the worker's hand")

    async def gone() -> bool:
        return worker.worker_id not in await workers_of(api)

    await wait_until(gone, timeout=SEEN_SECONDS + 10, what="the stopped worker to drop out")
    await api.start(name)
    queue = await queue_of(api, action)
    assert (queue["workers"], queue["noWorker"]) == (0, True)


async def test_leased_and_retrying_counts_move_as_tasks_fail_and_come_back(
    window_api: Api,
) -> None:
    api = window_api
    name = unique("retrying")
    action = f"{name}-task"
    await set_action(api.http, action, retryCount=2, retryAfterSeconds=1, retryPolicy="FIXED")
    await api.register(workflow(name, user(1, action)))
    await api.start(name)
    await api.start(name)

    tasks = await api.poll([action], most=2, wait=0, worker=unique("raw"))
    assert len(tasks) == 2
    queue = await queue_of(api, action)
    assert (queue["depth"], queue["leased"], queue["retrying"]) == (0, 2, 0)

    failed_at = time.time()
    assert (await api.fail(tasks[0]["taskId"], "flaky")).status_code == 200
    queue = await queue_of(api, action)
    assert (queue["depth"], queue["leased"], queue["retrying"]) == (0, 1, 1)
    assert queue["oldestQueuedAt"] is None

    # The back-off over, the attempt is queued again: its wait counts from then.
    async def requeued() -> bool:
        return bool((await queue_of(api, action))["depth"] == 1)

    await wait_until(requeued, what="the retried attempt back in its queue")
    queue = await queue_of(api, action)
    assert (queue["leased"], queue["retrying"]) == (1, 0)
    assert moment(queue["oldestQueuedAt"]) >= failed_at + 0.9


@pytest.fixture(scope="module")
def tenant_servers(settings: Settings, redis_client: Any) -> Iterator[list[ServerThread]]:
    """Two single-tenant servers (``ORCHY_NAMESPACE``) on the tests' Redis."""
    update = {**SHORT_WINDOW, "worker_seen_seconds": 30.0}
    with (
        serving(settings.model_copy(update={**update, "namespace": "wa"})) as server_a,
        serving(settings.model_copy(update={**update, "namespace": "wb"})) as server_b,
    ):
        yield [server_a, server_b]


async def test_a_tenants_workers_are_not_listed_to_another(
    tenant_servers: list[ServerThread],
) -> None:
    server_a, server_b = tenant_servers
    action = unique("shared-name")
    worker = unique("tenant-a-worker")
    async with (
        httpx.AsyncClient(base_url=server_a.url, timeout=30) as http_a,
        httpx.AsyncClient(base_url=server_b.url, timeout=30) as http_b,
    ):
        a, b = Api(http_a), Api(http_b)
        for api in (a, b):
            await api.register(workflow(action, user(1, action)))
            await api.start(action)
        [task] = await a.poll([action], most=1, wait=0, worker=worker)

        assert (await workers_of(a))[worker]["tasksInHand"] == 1
        assert worker not in await workers_of(b)
        queue_a, queue_b = await queue_of(a, action), await queue_of(b, action)
        assert (queue_a["workers"], queue_a["leased"], queue_a["depth"]) == (1, 1, 0)
        assert (queue_b["workers"], queue_b["leased"], queue_b["depth"]) == (0, 0, 1)
        assert queue_b["noWorker"] is True
        assert (await a.complete(task["taskId"], {})).status_code == 200


async def test_a_worker_holding_tasks_stays_listed_after_its_last_poll_expires(
    window_api: Api,
) -> None:
    api = window_api
    name = unique("busy")
    action = f"{name}-task"
    await set_action(api.http, action, timeoutSeconds=60)
    await api.register(workflow(name, user(1, action)))
    await api.start(name)
    await api.start(name)
    worker = unique("busy-worker")
    [task] = await api.poll([action], most=1, wait=0, worker=worker)

    async def poll_expired() -> bool:
        return (await workers_of(api))[worker]["lastPollAt"] is None

    await wait_until(poll_expired, timeout=SEEN_SECONDS + 10, what="the poll record to expire")
    assert (await workers_of(api))[worker] == {
        "workerId": worker,
        "actions": [action],
        "lastPollAt": None,
        "tasksInHand": 1,
    }
    queue = await queue_of(api, action)
    assert (queue["depth"], queue["workers"], queue["noWorker"]) == (1, 1, False)
    assert (await api.complete(task["taskId"], {})).status_code == 200
    assert worker not in await workers_of(api)
