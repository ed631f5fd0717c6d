"""The real worker library against a real server: retries, leases, heartbeats, concurrency,
shutdown, the examples in ``workflows/``, and the exactly-once effect under load.

Workers run in-process (``Worker.run`` on the test's event loop, stopped by an event), except
the one killed with SIGKILL, which is a ``python -m app.cli worker`` subprocess. A spy around
the worker's HTTP client (``wire``) records what the worker sent and what the server answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import app.worker.worker as worker_module
from app.jsontypes import JSONObject
from app.settings import Settings
from app.worker import NonRetryableError, Worker, load_worker
from app.worker.client import OrchyClient, Reply, ReplyStatus, Task
from tests.conftest import Api, ServerThread, unique, wait_until
from tests.test_engine_http import set_action, user, workflow

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
STOP_SECONDS = 10.0
LEASE_SECONDS = 0.5
RETRY_AFTER_SECONDS = 0.05


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """The server's settings with a fast worker: short polls, heartbeats and back-off."""
    return settings.model_copy(
        update={
            "worker_poll_wait_seconds": 1.0,
            "worker_heartbeat_seconds": 0.1,
            "worker_http_backoff_seconds": 0.05,
            "worker_http_retries": 3,
            "worker_shutdown_grace_seconds": 10.0,
        }
    )


@dataclass
class Wire:
    """What every worker of a test sent through its HTTP client, and the answers."""

    polls: list[tuple[str, int]] = field(default_factory=list)  # (worker id, max)
    leased: list[tuple[str, Task]] = field(default_factory=list)  # (worker id, task)
    polls_in_flight: int = 0
    replies: list[tuple[str, str, Reply]] = field(default_factory=list)  # (verb, task id, reply)
    # Heartbeats of these workers are lost on the way: the worker looks stalled to the server.
    heartbeats_lost: set[str] = field(default_factory=set)

    def answers(self, verb: str, task_id: str | None = None) -> list[Reply]:
        return [
            reply
            for seen_verb, seen_id, reply in self.replies
            if seen_verb == verb and (task_id is None or seen_id == task_id)
        ]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    record = Wire()

    class SpyClient(OrchyClient):
        async def poll(
            self, worker_id: str, actions: list[str], max_tasks: int, wait_seconds: float
        ) -> list[Task]:
            record.polls.append((worker_id, max_tasks))
            record.polls_in_flight += 1
            try:
                tasks = await super().poll(worker_id, actions, max_tasks, wait_seconds)
            finally:
                record.polls_in_flight -= 1
            record.leased.extend((worker_id, task) for task in tasks)
            return tasks

        async def results(
            self, encoded_results: list[bytes], take_next: JSONObject | None = None
        ) -> tuple[list[Reply], list[Task]]:
            replies, tasks = await super().results(encoded_results, take_next)
            for encoded, reply in zip(encoded_results, replies, strict=True):
                result = json.loads(encoded)
                verb = "complete" if "output" in result else "fail"
                record.replies.append((verb, result["taskId"], reply))
            if take_next is not None:
                record.leased.extend((str(take_next["workerId"]), task) for task in tasks)
            return replies, tasks

        async def heartbeat(self, task_id: str) -> Reply:
            holder = next((w for w, task in record.leased if task.task_id == task_id), None)
            if holder in record.heartbeats_lost:
                return Reply(ReplyStatus.OK, None, "lost on the way")
            reply = await super().heartbeat(task_id)
            record.replies.append(("heartbeat", task_id, reply))
            return reply

    monkeypatch.setattr(worker_module, "OrchyClient", SpyClient)
    return record


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Runs ``worker`` on this loop; on exit stops it and checks that ``run`` returned cleanly."""
    stop = asyncio.Event()
    job = asyncio.create_task(worker.run(stop, handle_signals=False))
    try:
        yield job
    finally:
        stop.set()
        if not job.done():
            await asyncio.wait({job}, timeout=STOP_SECONDS)
        if not job.done():
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            raise AssertionError(f"worker {worker.worker_id} did not stop in {STOP_SECONDS}s")
    failure = job.exception()
    if failure is not None:
        raise failure


def new_worker(server: ServerThread, settings: Settings, concurrency: int = 1) -> Worker:
    return Worker(
        server_url=server.url,
        concurrency=concurrency,
        worker_id=unique("it-worker"),
        settings=settings,
    )


async def history(http: httpx.AsyncClient, flow_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/flow/{flow_id}/history")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["history"]
    return entries


async def deliveries(http: httpx.AsyncClient, flow_id: str) -> list[tuple[int, str]]:
    """(attempt, worker id) of every lease of the run's tasks, in order."""
    return [
        (entry["attempt"], entry["worker"])
        for entry in await history(http, flow_id)
        if entry["event"] == "RUNNING"
    ]


async def action_definition(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await http.get(f"/metadata/action/{name}")
    assert response.status_code == 200, response.text
    definition: dict[str, Any] = response.json()
    return definition


async def wait_all(
    api: Api, flow_ids: list[str], status: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Waits for every run to reach ``status``, reading each run once per round (many
    concurrent ``wait_status`` loops would load the server more than the workers do)."""
    reached: dict[str, dict[str, Any]] = {}

    async def all_reached() -> bool:
        for flow_id in flow_ids:
            if flow_id not in reached:
                flow = await api.flow(flow_id)
                if flow["status"] != status:
                    return False
                reached[flow_id] = flow
        return True

    await wait_until(all_reached, timeout, step=0.05, what=f"{len(flow_ids)} runs to be {status}")
    return [reached[flow_id] for flow_id in flow_ids]


def is_set(event: asyncio.Event | threading.Event) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return event.is_set()

    return check


# -- retries --------------------------------------------------------------------------------


async def test_action_failing_twice_then_succeeding_is_retried_by_its_definition(
    api: Api, http: httpx.AsyncClient, server: ServerThread, worker_settings: Settings
) -> None:
    name = unique("it-flaky")
    invocations: list[JSONObject] = []
    effects: list[str] = []
    worker = new_worker(server, worker_settings)

    @worker.action(
        name,
        retry_count=3,
        retry_after_seconds=0.02,
        retry_policy="FIXED",
        timeout_seconds=7.5,
        poll_timeout_seconds=600,
    )
    def flaky(input: JSONObject) -> JSONObject:
        invocations.append(input)
        if len(invocations) <= 2:
            raise RuntimeError(f"transient failure {len(invocations)}")
        effects.append(str(input["order"]))  # the effect: only a successful attempt makes it
        return {"charged": input["order"]}

    await api.register(workflow(name, user(1, name, order="{$.input.order}")))
    async with running(worker):

        async def registered() -> bool:
            listed = (await http.get("/metadata/action")).json()
            return any(item["name"] == name for item in listed)

        await wait_until(registered, what="the worker to register its action")
        assert await action_definition(http, name) == {
            "name": name,
            "retryCount": 3,
            "retryAfterSeconds": 0.02,
            "retryPolicy": "FIXED",
            "timeoutSeconds": 7.5,
            "pollTimeoutSeconds": 600,
        }
        flow_id = await api.start(name, {"order": "A-7"})
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 3
    assert flow["actions"]["1"]["output"] == {"charged": "A-7"}
    assert len(invocations) == 3
    assert effects == ["A-7"]
    assert [attempt for attempt, _ in await deliveries(http, flow_id)] == [1, 2, 3]


async def test_non_retryable_error_fails_the_run_at_the_first_attempt(
    api: Api, http: httpx.AsyncClient, server: ServerThread, worker_settings: Settings
) -> None:
    name = unique("it-refuse")
    invocations: list[JSONObject] = []
    worker = new_worker(server, worker_settings)

    @worker.action(name, retry_count=3, retry_after_seconds=0.02, retry_policy="FIXED")
    async def refuse(input: JSONObject) -> JSONObject:
        invocations.append(input)
        raise NonRetryableError(f"card {input['card']} is blocked")

    await api.register(workflow(name, user(1, name, card="{$.input.card}")))
    async with running(worker):
        flow_id = await api.start(name, {"card": "4242"})
        flow = await api.wait_status(flow_id, "FAILED")

    action = flow["actions"]["1"]
    assert action["status"] == "FAILED"
    assert action["attempts"] == 1
    assert "NonRetryableError: card 4242 is blocked" in action["error"]
    assert "card 4242 is blocked" in flow["reason"]
    assert len(invocations) == 1
    assert [attempt for attempt, _ in await deliveries(http, flow_id)] == [1]


# -- leases ---------------------------------------------------------------------------------


async def test_a_task_polled_and_never_answered_is_redelivered_after_its_lease(
    api: Api, http: httpx.AsyncClient, server: ServerThread, worker_settings: Settings
) -> None:
    """The hung holder is a raw HTTP poll; its late result, failure and heartbeat get 409."""
    name = unique("it-lease")
    await set_action(
        http,
        name,
        retryCount=3,
        retryAfterSeconds=RETRY_AFTER_SECONDS,
        retryPolicy="FIXED",
        timeoutSeconds=LEASE_SECONDS,
    )
    await api.register(workflow(name, user(1, name, n="{$.input.n}")))
    flow_id = await api.start(name, {"n": 1})
    hung = await api.poll_one(name)
    assert hung["attempt"] == 1
    leased_at = time.monotonic()

    invocations: list[JSONObject] = []
    worker = new_worker(server, worker_settings)

    @worker.action(
        name,
        retry_count=3,
        retry_after_seconds=RETRY_AFTER_SECONDS,
        retry_policy="FIXED",
        timeout_seconds=LEASE_SECONDS,
    )
    def healthy(input: JSONObject) -> JSONObject:
        invocations.append(input)
        return {"by": "healthy"}

    async with running(worker):
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert time.monotonic() - leased_at >= LEASE_SECONDS

    assert flow["actions"]["1"]["attempts"] == 2
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}
    assert invocations == [{"n": 1}]
    assert await deliveries(http, flow_id) == [(1, "test"), (2, worker.worker_id)]

    late = await api.complete(hung["taskId"], {"by": "hung"})
    assert late.status_code == 409, late.text
    assert "error" in late.json()
    assert (await api.fail(hung["taskId"], "too late")).status_code == 409
    assert (await http.post(f"/tasks/{hung['taskId']}/heartbeat")).status_code == 409
    flow = await api.flow(flow_id)
    assert flow["status"] == "COMPLETED"
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}


async def test_a_stalled_worker_loses_the_lease_and_its_late_result_is_refused(
    api: Api,
    http: httpx.AsyncClient,
    server: ServerThread,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    """A worker whose action blocks past ``timeout_seconds`` (and sends no heartbeat in
    time): a healthy worker completes attempt 2, and the stalled one's result gets 409."""
    name = unique("it-stall")
    options: dict[str, Any] = {
        "retry_count": 3,
        "retry_after_seconds": RETRY_AFTER_SECONDS,
        "retry_policy": "FIXED",
        "timeout_seconds": LEASE_SECONDS,
    }
    entered, release = asyncio.Event(), asyncio.Event()
    effects: list[str] = []
    stalled = new_worker(server, worker_settings)
    healthy = new_worker(server, worker_settings)
    wire.heartbeats_lost.add(stalled.worker_id)

    @stalled.action(name, **options)
    async def stall(input: JSONObject) -> JSONObject:
        entered.set()
        await release.wait()
        effects.append("stalled")
        return {"by": "stalled"}

    @healthy.action(name, **options)
    async def work(input: JSONObject) -> JSONObject:
        effects.append("healthy")
        return {"by": "healthy"}

    await api.register(workflow(name, user(1, name)))
    async with running(stalled):
        flow_id = await api.start(name)
        await wait_until(is_set(entered), what="the stalled worker to take the task")
        async with running(healthy):
            flow = await api.wait_status(flow_id, "COMPLETED")
        release.set()
        await wait_until(
            lambda: _answered(wire, "complete", stalled.worker_id),
            what="the stalled worker's late result",
        )

    assert flow["actions"]["1"]["attempts"] == 2
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}
    assert await deliveries(http, flow_id) == [(1, stalled.worker_id), (2, healthy.worker_id)]
    late = _task_of(wire, stalled.worker_id)
    assert late.attempt == 1
    [reply] = wire.answers("complete", late.task_id)
    assert (reply.status, reply.http_status) == (ReplyStatus.STALE, 409)
    [on_time] = wire.answers("complete", _task_of(wire, healthy.worker_id).task_id)
    assert on_time.ok
    assert sorted(effects) == ["healthy", "stalled"]  # both ran; only one result applied
    assert (await api.flow(flow_id))["actions"]["1"]["output"] == {"by": "healthy"}


def _task_of(wire: Wire, worker_id: str) -> Task:
    [task] = [task for leased_by, task in wire.leased if leased_by == worker_id]
    return task


async def _answered(wire: Wire, verb: str, worker_id: str) -> bool:
    tasks = {task.task_id for leased_by, task in wire.leased if leased_by == worker_id}
    return any(seen_verb == verb and task_id in tasks for seen_verb, task_id, _ in wire.replies)


async def test_heartbeats_keep_a_long_action_at_its_first_attempt(
    api: Api,
    http: httpx.AsyncClient,
    server: ServerThread,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    """The action runs 3x its ``timeout_seconds``; heartbeats every 0.1 s keep the lease.
    With concurrency 2 a redelivery would reach this same worker and show as attempt 2."""
    name = unique("it-heartbeat")
    invocations: list[float] = []
    worker = new_worker(server, worker_settings, concurrency=2)

    @worker.action(
        name,
        retry_count=3,
        retry_after_seconds=RETRY_AFTER_SECONDS,
        retry_policy="FIXED",
        timeout_seconds=LEASE_SECONDS,
    )
    async def long_job(input: JSONObject) -> JSONObject:
        invocations.append(time.monotonic())
        await asyncio.sleep(3 * LEASE_SECONDS)  # the work itself, not a wait for the test
        return {"done": True}

    await api.register(workflow(name, user(1, name)))
    async with running(worker):
        flow_id = await api.start(name)
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 1
    assert flow["actions"]["1"]["output"] == {"done": True}
    assert len(invocations) == 1
    assert await deliveries(http, flow_id) == [(1, worker.worker_id)]
    beats = wire.answers("heartbeat")
    assert len(beats) >= 3
    assert all(reply.ok for reply in beats)


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrency_bounds_the_tasks_in_hand(
    api: Api,
    http: httpx.AsyncClient,
    server: ServerThread,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    name = unique("it-concurrency")
    concurrency, runs = 4, 8
    lock = threading.Lock()
    gate = threading.Event()
    in_hand = 0
    most_in_hand = 0
    worker = new_worker(server, worker_settings, concurrency=concurrency)

    @worker.action(name, timeout_seconds=10.0)
    def gated(input: JSONObject) -> JSONObject:  # runs in the worker's thread pool
        nonlocal in_hand, most_in_hand
        with lock:
            in_hand += 1
            most_in_hand = max(most_in_hand, in_hand)
        try:
            if not gate.wait(STOP_SECONDS):
                raise RuntimeError("the test never opened the gate")
            return {"n": input["n"]}
        finally:
            with lock:
                in_hand -= 1

    await api.register(workflow(name, user(1, name, n="{$.input.n}")))
    flow_ids = [await api.start(name, {"n": n}) for n in range(runs)]

    async def statuses() -> list[str]:
        return [(await api.flow(f))["actions"]["1"]["status"] for f in flow_ids]

    async with running(worker):

        async def full() -> bool:
            return in_hand == concurrency

        try:
            await wait_until(full, what=f"{concurrency} tasks in hand")
            # Full: the worker has no poll out, so it cannot lease more until a slot frees.
            await wait_until(
                lambda: _no_poll_in_flight(wire), what="the worker to stop polling when full"
            )
            assert sorted(await statuses()) == ["QUEUED"] * 4 + ["RUNNING"] * 4
            assert len(wire.leased) == concurrency
        finally:
            gate.set()
        flows = await wait_all(api, flow_ids, "COMPLETED")

    assert most_in_hand == concurrency
    assert [flow["actions"]["1"]["output"] for flow in flows] == [{"n": n} for n in range(runs)]
    assert all(flow["actions"]["1"]["attempts"] == 1 for flow in flows)
    assert len(wire.leased) == runs
    assert all(1 <= most <= concurrency for _, most in wire.polls)


async def _no_poll_in_flight(wire: Wire) -> bool:
    return wire.polls_in_flight == 0


# -- shutdown -------------------------------------------------------------------------------


async def test_stopping_lets_the_task_in_hand_finish_and_report(
    api: Api, http: httpx.AsyncClient, server: ServerThread, worker_settings: Settings
) -> None:
    name = unique("it-drain")
    stop = asyncio.Event()
    entered = asyncio.Event()
    finished: list[float] = []
    worker = new_worker(server, worker_settings, concurrency=2)

    @worker.action(name, timeout_seconds=10.0)
    async def finishing(input: JSONObject) -> JSONObject:
        entered.set()
        await stop.wait()  # still working when the stop comes
        await asyncio.sleep(0.3)
        finished.append(time.monotonic())
        return {"finished": True}

    await api.register(workflow(name, user(1, name)))
    job = asyncio.create_task(worker.run(stop, handle_signals=False))
    try:
        flow_id = await api.start(name)
        await wait_until(is_set(entered), what="the task to be in hand")
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(asyncio.shield(job), STOP_SECONDS)
    finally:
        stop.set()
        if not job.done():
            job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    assert job.exception() is None
    assert finished and finished[0] >= stopped_at
    # The result was reported before run() returned.
    flow = await api.flow(flow_id)
    assert flow["status"] == "COMPLETED"
    assert flow["actions"]["1"]["attempts"] == 1
    assert flow["actions"]["1"]["output"] == {"finished": True}


KILLED_WORKER = """\
import pathlib
import threading

from app.worker import Worker

worker = Worker()


@worker.action({name!r}, retry_count=3, retry_after_seconds={retry}, retry_policy="FIXED",
               timeout_seconds={lease})
def hold(input):
    pathlib.Path({marker!r}).write_text(input["flow"])
    threading.Event().wait()  # holds the task until the process is killed
"""


async def test_a_worker_killed_hard_gets_its_task_redelivered_to_another(
    api: Api,
    http: httpx.AsyncClient,
    server: ServerThread,
    worker_settings: Settings,
    tmp_path: Path,
) -> None:
    name = unique("it-kill")
    lease = 1.0
    marker = tmp_path / "holding"
    source = tmp_path / "killed_worker.py"
    source.write_text(
        KILLED_WORKER.format(name=name, retry=RETRY_AFTER_SECONDS, lease=lease, marker=str(marker))
    )
    await api.register(workflow(name, user(1, name, flow="{$.flow.id}")))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        str(source),
        "--server",
        server.url,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            # Alive, it keeps the lease with heartbeats; killed, it stops sending them.
            "ORCHY_WORKER_HEARTBEAT_SECONDS": "0.2",
            "ORCHY_WORKER_POLL_WAIT_SECONDS": "1",
        },
    )
    try:
        flow_id = await api.start(name)

        async def holding() -> bool:
            return marker.exists() and marker.read_text() == flow_id

        await wait_until(holding, what="the subprocess worker to take the task")
        process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), STOP_SECONDS) == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    invocations: list[JSONObject] = []
    healthy = new_worker(server, worker_settings)

    @healthy.action(
        name,
        retry_count=3,
        retry_after_seconds=RETRY_AFTER_SECONDS,
        retry_policy="FIXED",
        timeout_seconds=lease,
    )
    def finish(input: JSONObject) -> JSONObject:
        invocations.append(input)
        return {"by": "healthy"}

    async with running(healthy):
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 2
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}
    assert invocations == [{"flow": flow_id}]
    [(first, killed_id), (second, healthy_id)] = await deliveries(http, flow_id)
    assert (first, second) == (1, 2)
    assert f"-{process.pid}-" in killed_id
    assert healthy_id == healthy.worker_id


# -- the examples in workflows/ -------------------------------------------------------------


async def register_example(api: Api, file: str) -> str:
    definition = json.loads((WORKFLOWS / file).read_text())
    definition["name"] = unique(definition["name"])
    await api.register(definition)
    name: str = definition["name"]
    return name


def example_worker(file: str, server: ServerThread) -> Worker:
    worker = load_worker(str(WORKFLOWS / file))
    worker.server_url = server.url
    return worker


async def test_parallel_join_example_runs_to_completion(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    name = await register_example(api, "parallel_join.json")
    order = unique("A")
    async with running(example_worker("parallel_join_worker.py", server)):
        flow_id = await api.start(name, {"orderId": order})
        flow = await api.wait_status(flow_id, "COMPLETED")

    actions = flow["actions"]
    assert set(actions) == {"1", "2", "3", "4", "5"}
    assert all(action["status"] == "COMPLETED" for action in actions.values())
    assert actions["2"]["output"] == {"chargeId": f"ch-{order}", "amount": 28.0}
    assert actions["3"]["output"]["reservationId"] == f"res-{order}"
    assert set(actions["4"]["output"]) == {"2", "3"}
    assert actions["5"]["output"] == {
        "shipped": True,
        "orderId": order,
        "chargeId": f"ch-{order}",
        "reservationId": f"res-{order}",
        "trackingNumber": f"TRK-{order}",
    }
    joins = [e for e in await history(http, flow_id) if e["event"] == "JOIN_READY"]
    assert len(joins) == 1


async def test_failure_edge_example_takes_the_error_branch_when_declined(
    api: Api, server: ServerThread
) -> None:
    name = await register_example(api, "failure_edge.json")
    async with running(example_worker("failure_edge_worker.py", server)):
        charged = await api.start(name, {"orderId": "A-1", "amount": 50})
        declined = await api.start(name, {"orderId": "A-2", "amount": 5000})
        charged_flow = await api.wait_status(charged, "COMPLETED")
        declined_flow = await api.wait_status(declined, "COMPLETED")

    assert set(charged_flow["actions"]) == {"1", "2"}
    assert charged_flow["actions"]["2"]["output"] == {
        "sent": True,
        "orderId": "A-1",
        "chargeId": "ch-A-1",
    }
    assert set(declined_flow["actions"]) == {"1", "3"}
    charge = declined_flow["actions"]["1"]
    assert (charge["status"], charge["attempts"]) == ("FAILED", 1)
    notified = declined_flow["actions"]["3"]["output"]
    assert notified["notified"] is True
    assert notified["reason"].startswith(
        "NonRetryableError: card declined: 5000 is over the limit of 1000"
    )


# -- exactly once ---------------------------------------------------------------------------


async def test_effects_happen_exactly_once_with_two_concurrent_workers(
    api: Api,
    http: httpx.AsyncClient,
    server: ServerThread,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    name = unique("it-once")
    first, second = f"{name}-reserve", f"{name}-charge"
    runs = 50
    lock = threading.Lock()
    effects: list[tuple[str, int, str]] = []  # (flow id, action id, token)
    workers = [new_worker(server, worker_settings, concurrency=4) for _ in range(2)]

    def effect(flow_id: str, action_id: int) -> JSONObject:
        token = uuid.uuid4().hex
        with lock:
            effects.append((flow_id, action_id, token))
        return {"token": token}

    for worker in workers:
        worker.action(first)(lambda input: effect(input["flow"], 1))

        async def charge(input: JSONObject) -> JSONObject:
            return effect(str(input["flow"]), 2)

        worker.action(second)(charge)

    await api.register(
        workflow(
            name,
            user(1, first, {"default": [2]}, flow="{$.flow.id}"),
            user(2, second, flow="{$.flow.id}", previous="{$.1.output.token}"),
        )
    )
    async with running(workers[0]), running(workers[1]):
        flow_ids = list(await asyncio.gather(*(api.start(name, {"i": i}) for i in range(runs))))
        flows = await wait_all(api, flow_ids, "COMPLETED")

    assert len(set(flow_ids)) == runs
    # Every (flow, action) had its effect once, and the run holds that effect's token.
    keys = [(flow_id, action_id) for flow_id, action_id, _ in effects]
    assert sorted(keys) == sorted((f, a) for f in flow_ids for a in (1, 2))
    tokens = {(flow_id, action_id): token for flow_id, action_id, token in effects}
    for flow in flows:
        for action_id in (1, 2):
            action = flow["actions"][str(action_id)]
            assert action["attempts"] == 1
            assert action["output"] == {"token": tokens[(flow["id"], action_id)]}
    # Every task id was leased once, and completed once, with the server's OK.
    leased_ids = [task.task_id for _, task in wire.leased]
    assert len(leased_ids) == len(set(leased_ids)) == 2 * runs
    completed = [(task_id, reply) for verb, task_id, reply in wire.replies if verb == "complete"]
    assert sorted(task_id for task_id, _ in completed) == sorted(leased_ids)
    assert all(reply.ok for _, reply in completed)
    assert not wire.answers("fail")
    by_action = {(task.flow_id, task.action_id) for _, task in wire.leased}
    assert by_action == {(f, a) for f in flow_ids for a in (1, 2)}
    for flow_id in flow_ids:
        assert [attempt for attempt, _ in await deliveries(http, flow_id)] == [1, 1]
