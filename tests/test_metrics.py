"""``GET /metrics``: counts move as runs start, complete and fail with real workers, task
gauges are read from Redis, histograms fill, retries, lease expiries, poll timeouts and
timer lag are counted; and a server of two processes answers the same counts whichever of
them is asked."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from app.engine.ids import idempotent_flow_id
from app.settings import Settings
from app.store.keys import Keys
from orchy import NonRetryableError, Worker
from orchy.testing import running_worker
from tests.helpers.definitions import set_action, user, workflow
from tests.helpers.http import Api, ServerThread, api_of, free_port
from tests.helpers.metrics import Samples, buckets, scrape, value
from tests.helpers.processes import (
    ROOT,
    SERVER_READY_SECONDS,
    Processes,
    RedisProcess,
    clean_env,
)
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker

EXECUTION = "orchy_task_execution_seconds"
QUEUE_WAIT = "orchy_task_queue_wait_seconds"


async def _wait_for(http: httpx.AsyncClient, check: Any, what: str) -> Samples:
    """Scrapes until ``check(samples)`` holds; the samples that passed."""
    passed: list[Samples] = []

    async def holds() -> bool:
        samples = await scrape(http)
        if check(samples):
            passed.append(samples)
            return True
        return False

    await wait_until(holds, what=what)
    return passed[0]


async def test_runs_and_tasks_are_counted_with_a_real_worker(
    server: ServerThread, http: httpx.AsyncClient, api: Api, settings: Settings
) -> None:
    name, action = unique("metrics-runs"), unique("metrics-action")
    await api.register(workflow(name, user(1, action, fail="{$.input.fail}")))
    before = await scrape(http)
    flows = [await api.start(name, {"fail": index == 2}) for index in range(3)]

    # Queued: read from Redis at the scrape, before any worker polls.
    await _wait_for(
        http, lambda s: value(s, "orchy_tasks_queued", action=action) == 3, "3 tasks queued"
    )
    started = await scrape(http)
    assert value(started, "orchy_runs_started_total", workflow=name) == 3
    assert value(before, "orchy_runs_started_total", workflow=name) == 0

    worker = Worker(server.url, settings=fast_worker(settings), worker_id=unique("worker"))

    @worker.action(action)
    def act(data: dict[str, Any]) -> dict[str, Any]:
        if data["fail"]:
            raise NonRetryableError("refused")
        return {"ok": True}

    with running_worker(worker):
        for index, flow_id in enumerate(flows):
            await api.wait_status(flow_id, "FAILED" if index == 2 else "COMPLETED")

    ended = await _wait_for(
        http,
        lambda s: (
            value(s, "orchy_runs_ended_total", workflow=name, status="COMPLETED") == 2
            and value(s, "orchy_runs_ended_total", workflow=name, status="FAILED") == 1
        ),
        "the runs' ends to be counted",
    )
    assert value(ended, "orchy_tasks_queued", action=action) == 0
    assert value(ended, "orchy_tasks_leased", action=action) == 0
    # Every attempt was leased and answered by this one server process: each is timed.
    assert value(ended, f"{EXECUTION}_count", action=action) == 3
    assert value(ended, f"{QUEUE_WAIT}_count", action=action) == 3
    execution = buckets(ended, EXECUTION, action=action)
    assert execution["+Inf"] == 3
    assert execution["60.0"] == 3  # each took well under a minute
    assert value(ended, f"{QUEUE_WAIT}_sum", action=action) > 0
    assert value(ended, "orchy_script_seconds_count", script="transition") > value(
        before, "orchy_script_seconds_count", script="transition"
    )
    assert value(ended, "orchy_script_seconds_count", script="start") >= 3


async def test_a_leased_task_is_counted_until_its_result(http: httpx.AsyncClient, api: Api) -> None:
    name, action = unique("metrics-lease"), unique("metrics-leased")
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    task = await api.poll_one(action)
    samples = await scrape(http)
    assert value(samples, "orchy_tasks_leased", action=action) == 1
    assert value(samples, "orchy_tasks_queued", action=action) == 0
    assert (await api.complete(task["taskId"], {})).status_code == 200
    await api.wait_status(flow_id, "COMPLETED")
    samples = await scrape(http)
    assert value(samples, "orchy_tasks_leased", action=action) == 0
    assert value(samples, f"{EXECUTION}_count", action=action) == 1


async def test_retries_lease_expiries_poll_timeouts_and_timer_lag(
    http: httpx.AsyncClient, api: Api
) -> None:
    name, action = unique("metrics-retry"), unique("metrics-retried")
    await set_action(http, action, timeoutSeconds=0.3, retryCount=2, retryAfterSeconds=0.05)
    await api.register(workflow(name, user(1, action)))
    before = await scrape(http)
    flow_id = await api.start(name)
    await api.poll_one(action)  # never answered: its lease runs out, and it is retried
    second = await api.poll_one(action)
    assert second["attempt"] == 2
    assert (await api.fail(second["taskId"], "try again")).status_code == 200
    third = await api.poll_one(action)
    assert (await api.complete(third["taskId"], {})).status_code == 200
    await api.wait_status(flow_id, "COMPLETED")
    samples = await scrape(http)
    assert value(samples, "orchy_lease_expiries_total", action=action) == 1
    assert value(samples, "orchy_task_retries_total", action=action) == 2
    # The lease expiry and the two back-offs were timers, each handled once it was due.
    for kind in ("lease", "enq"):
        assert value(samples, "orchy_timer_lag_seconds_count", kind=kind) > value(
            before, "orchy_timer_lag_seconds_count", kind=kind
        )
    # The first attempt's queue wait is timed; its execution is not: its lease ran out.
    assert value(samples, f"{QUEUE_WAIT}_count", action=action) == 1
    assert value(samples, f"{EXECUTION}_count", action=action) == 2

    unpolled, lonely = unique("metrics-unpolled"), unique("metrics-lonely")
    await set_action(http, lonely, pollTimeoutSeconds=0.2, retryCount=0)
    await api.register(workflow(unpolled, user(1, lonely)))
    await api.wait_status(await api.start(unpolled), "FAILED")
    await _wait_for(
        http,
        lambda s: (
            value(s, "orchy_poll_timeouts_total", action=lonely) == 1
            and value(s, "orchy_runs_ended_total", workflow=unpolled, status="FAILED") == 1
        ),
        "the poll timeout to be counted",
    )


def _serve_two_processes(port: int, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(REDIS_URL=redis_url),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def test_two_server_processes_answer_the_same_counts(
    processes: Processes, tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis)
    await redis.start()
    port = free_port()
    log = tmp_path / "server.log"
    server = _serve_two_processes(port, redis.url, log)
    try:
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            assert server.poll() is None, log.read_text()
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        # Two processes start at once, each as long as one server does.
        await wait_until(ready, 2 * SERVER_READY_SECONDS, what="the server's processes to answer")
        name, action = unique("metrics-multi"), unique("metrics-multi-action")
        runs = 8
        async with api_of(url) as api:
            await api.register(workflow(name, user(1, action)))
            for _ in range(runs):
                # A connection each, so that both processes take some of the requests.
                async with httpx.AsyncClient(base_url=url, timeout=10) as one:
                    await Api(one).start(name)
            completed = 0
            while completed < runs:
                for task in await api.poll([action], most=runs):
                    assert (await api.complete(task["taskId"], {})).status_code == 200
                    completed += 1

        async def all_counted() -> bool:
            async with httpx.AsyncClient(base_url=url, timeout=10) as one:
                samples = await scrape(one)
            return (
                value(samples, "orchy_runs_ended_total", workflow=name, status="COMPLETED") == runs
            )

        await wait_until(all_counted, what="every run's end to be counted")
        seen = set()
        for _ in range(10):
            async with httpx.AsyncClient(base_url=url, timeout=10) as one:
                samples = await scrape(one)
            seen.add(
                (
                    value(samples, "orchy_runs_started_total", workflow=name),
                    value(samples, "orchy_runs_ended_total", workflow=name, status="COMPLETED"),
                    value(samples, f"{EXECUTION}_count", action=action)
                    + value(samples, "orchy_tasks_leased", action=action),
                )
            )
        assert seen == {(runs, runs, runs)}, seen
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 15)
    assert "Application shutdown complete" in log.read_text()


async def test_the_readme_lists_every_metric_with_its_type(http: httpx.AsyncClient) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Prometheus metrics", 1)[1].split("### OpenTelemetry", 1)[0]
    listed = set(re.findall(r"^\| `(orchy_\w+)` \| (\w+) \|", section, re.MULTILINE))
    response = await http.get("/metrics")
    served = set(re.findall(r"^# TYPE (orchy_\w+) (\w+)$", response.text, re.MULTILINE))
    assert listed == served


async def test_a_script_that_redis_refuses_is_counted(
    http: httpx.AsyncClient, api: Api, settings: Settings, redis_client: Any
) -> None:
    name, action, key = unique("metrics-refused"), unique("metrics-refused-action"), "k"
    await api.register(workflow(name, user(1, action)))
    keys = Keys(settings.partitions)
    flow_id = idempotent_flow_id(name, key)
    # The run's first task would be pushed to a key that is not a list: start.lua refuses.
    queue = keys.queue(keys.partition_of(flow_id), action)
    await api.start(name)  # start.lua is loaded in Redis: the refusal is its reply
    before = await scrape(http)
    await redis_client.set(queue, "not a list")
    try:
        # A 500; or, about one time in two, a connection closed without an answer (seen with
        # uvicorn's "Exception in ASGI application" after the 500 handler ran): only the
        # count matters here.
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=30) as once:
            try:
                response = await once.post(
                    "/flow/execute", json={"name": name, "idempotencyKey": key}
                )
                assert response.status_code == 500, (response.status_code, response.text)
            except httpx.TransportError:
                pass
    finally:
        await redis_client.delete(queue)
    after = await scrape(http)
    refused = "orchy_redis_errors_total"
    assert (
        value(after, refused, error="ResponseError")
        == value(before, refused, error="ResponseError") + 1
    )
    assert value(after, "orchy_runs_started_total", workflow=name) == 1
