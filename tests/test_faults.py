"""Faults: Redis going away and coming back, server processes stopped or killed, hostile
worker results. The restart tests run real ``python -m app.cli serve`` processes and their own
Redis (the embedded one in a temporary folder, or a private ``redis-server``), so they do not
depend on ``REDIS_URL``; the result tests use the shared ``server`` fixture."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store.embedded import PIDFILE_NAME
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, api_of
from tests.helpers.processes import (
    REDIS_READY_SECONDS,
    Processes,
    RedisProcess,
    clean_env,
    kill_pid,
    read_pid,
    wait_gone,
)
from tests.helpers.waiting import unique, wait_until

# Long enough that the delay is still pending when the server is stopped or killed (after
# the quiet second below), short enough that it fires soon after the restart.
DELAY_SECONDS = 4.0
# The embedded Redis fsyncs its append-only file every second: a crash of the machine may
# lose the last second, so the kill -9 test lets more than that pass after the last change.
AOF_FSYNC_QUIET_SECONDS = 1.3
EVENT_DATA = {"value": "opened"}

# Redis away: /health must say so quickly; other routes must answer, with 503, in bounded time.
HEALTH_DOWN_SECONDS = 2.0
ROUTE_DOWN_SECONDS = 8.0
LONG_POLL_SECONDS = 5.0
UNAVAILABLE = 503

TOO_LARGE_RESULT_BYTES = 10 * 1024 * 1024
STREAM_CHUNK_BYTES = 64 * 1024
TOO_LARGE_BATCH_COPIES = 2  # two 10 MB results: over the 16 MiB limit of a batch


async def poll_all(api: Api, action: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """Polls ``action`` until ``count`` tasks came, within ``timeout``."""
    tasks: list[dict[str, Any]] = []

    async def collected() -> bool:
        tasks.extend(await api.poll([action], most=count - len(tasks), wait=0.5))
        return len(tasks) >= count

    await wait_until(collected, timeout, step=0, what=f"{count} task(s) of {action}")
    assert len(tasks) == count, tasks
    return tasks


async def flow_and_history(api: Api, flow_id: str) -> tuple[dict[str, Any], list[Any]]:
    return await api.flow(flow_id), await api.history(flow_id)


# -- restarts of the server and its embedded Redis ----------------------------------------


@dataclass
class MidwayRuns:
    """Runs caught in the middle: a user task leased to a worker, one queued, a pending
    delay, a wait for an event; and what each looked like before the restart."""

    first: str
    second: str
    after: str
    leased: str
    queued: str
    delayed: str
    waiting: str
    leased_task: dict[str, Any]
    before: dict[str, tuple[dict[str, Any], list[Any]]] = field(default_factory=dict)

    @property
    def flow_ids(self) -> list[str]:
        return [self.leased, self.queued, self.delayed, self.waiting]


async def start_midway_runs(api: Api) -> MidwayRuns:
    base = unique("restart")
    first, second, after = f"{base}-first", f"{base}-second", f"{base}-after"
    chain = workflow(
        f"{base}-chain",
        user(1, first, {"default": [2]}, x="{$.input.x}"),
        user(2, second, got="{$.1.output.y}"),
    )
    delayed = workflow(
        f"{base}-delay",
        system(1, "delay", {"default": [2]}, delaySeconds=DELAY_SECONDS),
        user(2, after, got="{$.input.x}"),
    )
    waiting = workflow(
        f"{base}-wait",
        system(1, "wait", {"default": [2]}, event="go"),
        user(2, after, got="{$.1.output.value}"),
    )
    for definition in (chain, delayed, waiting):
        await api.register(definition)
    leased = await api.start(chain["name"], {"x": 1})
    leased_task = await api.poll_one(first)
    assert leased_task["flowId"] == leased
    runs = MidwayRuns(
        first=first,
        second=second,
        after=after,
        leased=leased,
        queued=await api.start(chain["name"], {"x": 2}),
        delayed=await api.start(delayed["name"], {"x": 3}),
        waiting=await api.start(waiting["name"], {"x": 4}),
        leased_task=leased_task,
    )
    expected = {
        runs.leased: "RUNNING",
        runs.queued: "QUEUED",
        runs.delayed: "WAITING",
        runs.waiting: "WAITING",
    }
    for flow_id, action_status in expected.items():
        flow, history = await flow_and_history(api, flow_id)
        assert flow["status"] == "RUNNING"
        assert flow["actions"]["1"]["status"] == action_status, flow
        runs.before[flow_id] = (flow, history)
    return runs


async def assert_delay_still_pending(api: Api, runs: MidwayRuns) -> None:
    flow = await api.flow(runs.delayed)
    assert flow["actions"]["1"]["status"] == "WAITING", "the delay fired before the stop"


async def assert_nothing_lost(api: Api, runs: MidwayRuns) -> None:
    """Every run is back as it was; the delay may have fired since, nothing else moved."""
    for flow_id, (flow_before, history_before) in runs.before.items():
        flow, history = await flow_and_history(api, flow_id)
        assert history[: len(history_before)] == history_before, f"history of {flow_id} changed"
        if flow_id == runs.delayed:
            assert flow["status"] == "RUNNING"
            assert flow["actions"]["1"]["status"] in ("WAITING", "COMPLETED")
        else:
            assert flow == flow_before
            assert history == history_before


async def finish_midway_runs(api: Api, runs: MidwayRuns) -> None:
    """Drives every run to COMPLETED, as a worker and a sender of events would."""
    # The lease taken before the restart still holds: its result is applied.
    response = await api.complete(runs.leased_task["taskId"], {"y": 10})
    assert response.status_code == 200, response.text
    queued_task = await api.poll_one(runs.first)
    assert queued_task["flowId"] == runs.queued
    assert queued_task["input"] == {"x": 2}
    assert (await api.complete(queued_task["taskId"], {"y": 20})).status_code == 200
    response = await api.http.post(f"/flow/{runs.waiting}/events/go", json=EVENT_DATA)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "delivered"}

    seconds = await poll_all(api, runs.second, 2, timeout=10)
    assert {task["flowId"]: task["input"] for task in seconds} == {
        runs.leased: {"got": 10},
        runs.queued: {"got": 20},
    }
    afters = await poll_all(api, runs.after, 2, timeout=DELAY_SECONDS + 10)
    assert {task["flowId"]: task["input"] for task in afters} == {
        runs.delayed: {"got": 3},
        runs.waiting: {"got": EVENT_DATA["value"]},
    }
    for task in [*seconds, *afters]:
        assert (await api.complete(task["taskId"], {"done": True})).status_code == 200
    for flow_id in runs.flow_ids:
        flow = await api.wait_status(flow_id, "COMPLETED")
        assert flow["actions"]["2"]["output"] == {"done": True}
    waited = await api.flow(runs.waiting)
    assert waited["actions"]["1"]["output"] == EVENT_DATA


async def test_runs_survive_sigterm_restart_with_embedded_redis(
    tmp_path: Path, processes: Processes
) -> None:
    """SIGTERM stops the server and its embedded Redis; a new server on the same folder
    carries on every run: a leased task's result, a queued task, a delay, a wait."""
    data_dir = tmp_path / "data"
    pidfile = data_dir / PIDFILE_NAME
    processes.pidfiles.append(pidfile)
    env = clean_env(ORCHY_DATA_DIR=str(data_dir))
    first = processes.server(env, tmp_path / "first.log")
    await first.start()
    redis_pid = read_pid(pidfile)
    async with api_of(first.url) as api:
        runs = await start_midway_runs(api)
        await assert_delay_still_pending(api, runs)
    await first.terminate()
    await wait_gone(redis_pid, "the embedded redis-server")

    second = processes.server(env, tmp_path / "second.log")
    await second.start()
    assert read_pid(pidfile) != redis_pid
    async with api_of(second.url) as api:
        await assert_nothing_lost(api, runs)
        await finish_midway_runs(api, runs)
    restarted_redis = read_pid(pidfile)
    await second.terminate()
    await wait_gone(restarted_redis, "the embedded redis-server")


@pytest.mark.slow
async def test_runs_survive_kill_9_of_server_and_embedded_redis(
    tmp_path: Path, processes: Processes
) -> None:
    """kill -9 of the server and of its embedded redis-server at once, as a crash would.

    The durability promise is "at most the last second of changes" (the append-only file is
    fsynced every second), so the test waits AOF_FSYNC_QUIET_SECONDS (> 1 s) after the last
    change before killing; then a new server on the same folder carries on every run."""
    data_dir = tmp_path / "data"
    pidfile = data_dir / PIDFILE_NAME
    processes.pidfiles.append(pidfile)
    env = clean_env(ORCHY_DATA_DIR=str(data_dir))
    first = processes.server(env, tmp_path / "first.log")
    await first.start()
    async with api_of(first.url) as api:
        runs = await start_midway_runs(api)
        await asyncio.sleep(AOF_FSYNC_QUIET_SECONDS)  # the fsync window, see the docstring
        await assert_delay_still_pending(api, runs)
    redis_pid = read_pid(pidfile)
    await first.kill()
    kill_pid(redis_pid)
    await wait_gone(redis_pid, "the embedded redis-server")

    second = processes.server(env, tmp_path / "second.log")
    await second.start()
    restarted_redis = read_pid(pidfile)
    assert restarted_redis != redis_pid, "the killed redis-server is still serving"
    async with api_of(second.url) as api:
        await assert_nothing_lost(api, runs)
        await finish_midway_runs(api, runs)
    await second.terminate()
    await wait_gone(restarted_redis, "the embedded redis-server")


# -- an external Redis going away and coming back ------------------------------------------


@dataclass(frozen=True)
class Timed:
    response: httpx.Response
    seconds: float


async def timed(call: Any) -> Timed:
    started = time.monotonic()
    response = await call
    return Timed(response, time.monotonic() - started)


def requests_while_down(api: Api, name: str, flow_id: str) -> dict[str, Any]:
    """One request of every kind a client or worker makes, as un-awaited calls."""
    http = api.http
    fresh = unique("down")
    task_id = f"{flow_id}.1.1.{'0' * 32}"  # well formed: only Redis can say whose it is
    return {
        "GET /flow/{id}": http.get(f"/flow/{flow_id}"),
        "GET /flow/{id}/history": http.get(f"/flow/{flow_id}/history"),
        "GET /flow": http.get("/flow", params={"name": name}),
        "POST /flow/execute": http.post("/flow/execute", json={"name": name, "input": {}}),
        "POST /flow/{id}/events": http.post(f"/flow/{flow_id}/events/x", json={}),
        "POST /flow/{id}/pause": http.post(f"/flow/{flow_id}/pause"),
        "POST /flow/{id}/terminate": http.post(f"/flow/{flow_id}/terminate"),
        "POST /tasks/poll": http.post(
            "/tasks/poll", json={"workerId": "w", "actions": [fresh], "waitSeconds": 1}
        ),
        "POST /tasks/{id}/complete": http.post(f"/tasks/{task_id}/complete", json={}),
        "POST /tasks/{id}/fail": http.post(f"/tasks/{task_id}/fail", json={"error": "x"}),
        "POST /tasks/{id}/heartbeat": http.post(f"/tasks/{task_id}/heartbeat"),
        "GET /tasks/queues": http.get("/tasks/queues"),
        "POST /metadata/workflow": http.post(
            "/metadata/workflow", json=workflow(fresh, user(1, fresh))
        ),
        "GET /metadata/workflow": http.get("/metadata/workflow"),
        "GET /metadata/workflow/{name}": http.get(f"/metadata/workflow/{name}"),
        "POST /metadata/action": http.post("/metadata/action", json={"name": fresh}),
        "GET /metadata/action": http.get("/metadata/action"),
        "GET /metadata/action/{name}": http.get(f"/metadata/action/{fresh}"),
    }


async def assert_all_unavailable(api: Api, name: str, flow_id: str, within: float) -> None:
    calls = requests_while_down(api, name, flow_id)
    answers = await asyncio.gather(*(timed(call) for call in calls.values()))
    for route, answer in zip(calls, answers, strict=True):
        response = answer.response
        assert response.status_code == UNAVAILABLE, (
            f"{route}: {response.status_code} {response.text}"
        )
        assert "redis" in response.json()["error"], f"{route}: {response.text}"
        assert answer.seconds < within, f"{route} took {answer.seconds:.2f}s"


async def assert_health_down(api: Api) -> None:
    answer = await timed(api.http.get("/health"))
    assert answer.response.status_code == UNAVAILABLE, answer.response.text
    assert answer.response.json()["status"] == "degraded"
    assert answer.response.json()["redis"].startswith("error")
    assert answer.seconds < HEALTH_DOWN_SECONDS, f"/health took {answer.seconds:.2f}s"


async def test_external_redis_stop_answers_503_then_runs_resume(
    tmp_path: Path, processes: Processes
) -> None:
    """A Redis server stops under a running server: the process stays up, /health says 503
    at once, every route answers 503 JSON in bounded time; when Redis is back on the same
    port and folder, the runs carry on (a delay fires, a poll delivers) and nothing is lost."""
    redis_process = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis_process)
    await redis_process.start()
    server = processes.server(clean_env(REDIS_URL=redis_process.url), tmp_path / "server.log")
    await server.start()
    base = unique("outage")
    task_name, after, idle = f"{base}-task", f"{base}-after", f"{base}-idle"
    plain = workflow(f"{base}-plain", user(1, task_name, x="{$.input.x}"))
    delayed = workflow(
        f"{base}-delay",
        system(1, "delay", {"default": [2]}, delaySeconds=1.0),
        user(2, after, x="{$.input.x}"),
    )
    async with api_of(server.url) as api:
        for definition in (plain, delayed):
            await api.register(definition)
        queued = await api.start(plain["name"], {"x": 1})
        delay_run = await api.start(delayed["name"], {"x": 2})
        assert (await api.flow(delay_run))["actions"]["1"]["status"] == "WAITING"
        in_flight = asyncio.create_task(
            timed(
                api.http.post(
                    "/tasks/poll",
                    json={"workerId": "w", "actions": [idle], "waitSeconds": LONG_POLL_SECONDS},
                )
            )
        )

        await redis_process.stop()
        assert server.process is not None and server.process.poll() is None
        await assert_health_down(api)
        await assert_all_unavailable(api, plain["name"], queued, ROUTE_DOWN_SECONDS)
        long_poll = await in_flight
        assert long_poll.response.status_code in (200, UNAVAILABLE), long_poll.response.text
        if long_poll.response.status_code == 200:
            assert long_poll.response.json() == {"tasks": []}
        assert long_poll.seconds < LONG_POLL_SECONDS + ROUTE_DOWN_SECONDS

        await redis_process.start()

        async def healthy() -> bool:
            return (await api.http.get("/health")).status_code == 200

        await wait_until(healthy, REDIS_READY_SECONDS, what="/health to be 200 again")
        assert server.process.poll() is None
        flow = await api.flow(queued)
        assert flow["status"] == "RUNNING"
        assert flow["actions"]["1"]["status"] == "QUEUED"
        task = await api.poll_one(task_name)
        assert (task["flowId"], task["input"]) == (queued, {"x": 1})
        assert (await api.complete(task["taskId"], {"ok": True})).status_code == 200
        fired = await api.poll_one(after, wait=10)
        assert (fired["flowId"], fired["input"]) == (delay_run, {"x": 2})
        assert (await api.complete(fired["taskId"], {"ok": True})).status_code == 200
        for flow_id in (queued, delay_run):
            await api.wait_status(flow_id, "COMPLETED")
        # New work goes through as well.
        again = await api.start(plain["name"], {"x": 3})
        task = await api.poll_one(task_name)
        assert task["flowId"] == again
    await server.terminate()


@pytest.mark.slow
async def test_frozen_redis_answers_503_in_bounded_time(
    tmp_path: Path, processes: Processes
) -> None:
    """A Redis that stops answering without closing its sockets (SIGSTOP): /health answers
    503 within its own timeout, every other route 503 within the client's socket timeout."""
    redis_process = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis_process)
    await redis_process.start()
    server = processes.server(clean_env(REDIS_URL=redis_process.url), tmp_path / "server.log")
    await server.start()
    base = unique("frozen")
    plain = workflow(f"{base}-plain", user(1, f"{base}-task"))
    async with api_of(server.url) as api:
        await api.register(plain)
        queued = await api.start(plain["name"])
        assert redis_process.process is not None
        redis_process.process.send_signal(signal.SIGSTOP)
        try:
            await assert_health_down(api)
            await assert_all_unavailable(api, plain["name"], queued, ROUTE_DOWN_SECONDS)
        finally:
            redis_process.process.send_signal(signal.SIGCONT)

        async def healthy() -> bool:
            return (await api.http.get("/health")).status_code == 200

        await wait_until(healthy, REDIS_READY_SECONDS, what="/health to be 200 again")
        task = await api.poll_one(f"{base}-task")
        assert task["flowId"] == queued
    await server.terminate()


# -- hostile worker results (the shared server) ---------------------------------------------


async def leased_run(api: Api, steps: int = 1) -> tuple[str, dict[str, Any]]:
    """A run whose first user task is leased to the test; ``steps`` user actions in a row."""
    name = unique("results")
    actions = [
        user(index, f"{name}-{index}", {"default": [index + 1]} if index < steps else None)
        for index in range(1, steps + 1)
    ]
    await api.register(workflow(name, *actions))
    flow_id = await api.start(name, {"x": 1})
    task = await api.poll_one(f"{name}-1")
    assert task["flowId"] == flow_id
    return flow_id, task


async def assert_untouched(
    api: Api, flow_id: str, before: tuple[dict[str, Any], list[Any]]
) -> None:
    assert await flow_and_history(api, flow_id) == before


async def assert_still_completes(api: Api, flow_id: str, task_id: str) -> None:
    response = await api.complete(task_id, {"fine": True})
    assert response.status_code == 200, response.text
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"fine": True}


async def astream(body: bytes) -> AsyncIterator[bytes]:
    """The body in chunks, sent without a content-length."""
    for start in range(0, len(body), STREAM_CHUNK_BYTES):
        yield body[start : start + STREAM_CHUNK_BYTES]


async def test_ten_megabyte_result_is_413_and_changes_nothing(api: Api, settings: Settings) -> None:
    """A 10 MB result, declared or streamed, single or batched, is refused with 413 naming
    the limit; the task stays RUNNING and its worker can still complete it."""
    flow_id, task = await leased_run(api)
    before = await flow_and_history(api, flow_id)
    huge = "x" * TOO_LARGE_RESULT_BYTES
    task_id = task["taskId"]
    complete = f"/tasks/{task_id}/complete"
    attempts = {
        "complete": api.http.post(complete, json={"output": {"blob": huge}}),
        "fail": api.http.post(f"/tasks/{task_id}/fail", json={"error": huge}),
        # No content-length: the size is only known once the body is read.
        "streamed complete": api.http.post(
            complete, content=astream(b'{"output": {"blob": "' + huge.encode() + b'"}}')
        ),
    }
    for label, call in attempts.items():
        response = await call
        assert response.status_code == 413, f"{label}: {response.status_code} {response.text}"
        error = response.json()["error"]
        assert f"the limit is {settings.max_output_bytes} bytes" in error, f"{label}: {error}"
        await assert_untouched(api, flow_id, before)
    # In a batch, the oversized result is refused on its own; a batch over its own limit whole.
    response = await api.http.post(
        "/tasks/results", json={"results": [{"taskId": task_id, "output": {"blob": huge}}]}
    )
    assert response.status_code == 200, response.text
    [status] = response.json()["results"]
    assert status["status"] == 413, status
    assert f"the limit is {settings.max_output_bytes} bytes" in status["error"]
    await assert_untouched(api, flow_id, before)
    too_many = [{"taskId": task_id, "output": {"blob": huge}}] * TOO_LARGE_BATCH_COPIES
    response = await api.http.post("/tasks/results", json={"results": too_many})
    assert response.status_code == 413, response.text
    assert f"the limit is {settings.max_batch_bytes} bytes" in response.json()["error"]
    await assert_untouched(api, flow_id, before)
    assert (await api.flow(flow_id))["actions"]["1"]["status"] == "RUNNING"
    await assert_still_completes(api, flow_id, task_id)


MALFORMED_COMPLETIONS: dict[str, bytes] = {
    "invalid JSON": b'{"output": {"a": 1',
    "not JSON at all": b"output=1",
    "output is a list": b'{"output": [1, 2]}',
    "output is a string": b'{"output": "done"}',
    "output is a number": b'{"output": 42}',
    "output is null": b'{"output": null}',
    "body is a list": b"[]",
    "body is a string": b'"output"',
}
MALFORMED_FAILURES: dict[str, bytes] = {
    "invalid JSON": b'{"error": ',
    "no error": b'{"retryable": false}',
    "empty error": b'{"error": ""}',
    "error is an object": b'{"error": {"why": 1}}',
    "retryable is not a boolean": b'{"error": "x", "retryable": "perhaps"}',
}


async def test_malformed_results_are_422_and_change_nothing(api: Api) -> None:
    flow_id, task = await leased_run(api)
    before = await flow_and_history(api, flow_id)
    task_id = task["taskId"]
    for verb, bodies in (("complete", MALFORMED_COMPLETIONS), ("fail", MALFORMED_FAILURES)):
        for label, body in bodies.items():
            response = await api.http.post(f"/tasks/{task_id}/{verb}", content=body)
            assert response.status_code == 422, f"{verb} {label}: {response.text}"
            assert response.json()["error"], f"{verb} {label}: empty error"
            await assert_untouched(api, flow_id, before)
    await assert_still_completes(api, flow_id, task_id)


def parse_task_id(task_id: str) -> tuple[str, int, int, str]:
    flow_id, seq, attempt, secret = task_id.split(".")
    return flow_id, int(seq), int(attempt), secret


async def test_foreign_and_made_up_task_ids_are_404_or_409_and_change_nothing(
    api: Api,
) -> None:
    """Task ids that mix one run's flowId with another run's step, name an attempt that was
    never delivered, or are made up, are refused, and neither run changes."""
    run_a, task_a = await leased_run(api)
    run_b, first_b = await leased_run(api, steps=2)
    assert (await api.complete(first_b["taskId"], {"step": 1})).status_code == 200
    flow_b = await api.flow(run_b)
    task_b = await api.poll_one(f"{flow_b['name']}-2")
    a_flow, a_seq, a_attempt, a_secret = parse_task_id(task_a["taskId"])
    b_flow, b_seq, b_attempt, b_secret = parse_task_id(task_b["taskId"])
    assert a_seq != b_seq, "the runs' tasks must be different steps for the mix to mean anything"
    before = {flow_id: await flow_and_history(api, flow_id) for flow_id in (run_a, run_b)}
    refused = {
        "A's flow with B's step": (f"{a_flow}.{b_seq}.{b_attempt}.{b_secret}", {404, 409}),
        "B's flow with A's step": (f"{b_flow}.{a_seq}.{a_attempt}.{a_secret}", {404, 409}),
        "A with a later attempt": (f"{a_flow}.{a_seq}.{a_attempt + 1}.{a_secret}", {409}),
        "A with attempt 0": (f"{a_flow}.{a_seq}.0.{a_secret}", {409}),
        "A with a huge attempt": (f"{a_flow}.{a_seq}.{10**30}.{a_secret}", {409}),
        "B with an earlier attempt": (f"{b_flow}.{b_seq}.{b_attempt - 1}.{b_secret}", {409}),
        "A with B's secret": (f"{a_flow}.{a_seq}.{a_attempt}.{b_secret}", {409}),
        "unknown flow": (f"{'0' * 32}.{a_seq}.{a_attempt}.{a_secret}", {404}),
        "step that never ran": (f"{a_flow}.{a_seq + 50}.1.{a_secret}", {404}),
        "negative step": (f"{a_flow}.-1.1.{a_secret}", {404}),
        "no secret": (f"{a_flow}.{a_seq}.{a_attempt}", {404}),
        "not a task id": ("nonsense", {404}),
        "too many parts": (f"{task_a['taskId']}.1", {404}),
    }
    calls = {
        "complete": {"output": {"stolen": True}},
        "fail": {"error": "stolen", "retryable": False},
        "heartbeat": None,
    }
    for label, (task_id, statuses) in refused.items():
        for verb, body in calls.items():
            response = await api.http.post(f"/tasks/{task_id}/{verb}", json=body)
            assert response.status_code in statuses, f"{verb} {label}: {response.text}"
            assert response.json()["error"], f"{verb} {label}"
    batch = [{"taskId": task_id, "output": {"stolen": True}} for task_id, _ in refused.values()]
    response = await api.http.post("/tasks/results", json={"results": batch})
    assert response.status_code == 200, response.text
    for (label, (_, statuses)), status in zip(
        refused.items(), response.json()["results"], strict=True
    ):
        assert status["status"] in statuses, f"batched {label}: {status}"
        assert status["error"], f"batched {label}"
    for flow_id, state in before.items():
        await assert_untouched(api, flow_id, state)
    await assert_still_completes(api, run_a, task_a["taskId"])
    response = await api.complete(task_b["taskId"], {"step": 2})
    assert response.status_code == 200, response.text
    await api.wait_status(run_b, "COMPLETED")
