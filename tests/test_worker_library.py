"""The worker library's half of the protocol, against a real server: definitions, results
and errors, stale, unknown and held answers, server errors and an unreachable server, slots
and the ``next`` offer, heartbeats, stopping, and the ``orchy worker`` command with real
signals.

Workers talk to a real server whose exchanges are recorded on the way
(``tests.helpers.worker_wire``); every fault is made for real: a run terminated (409) or expired
(404) under a task in hand, a paused run (``held``), a definition beyond the server's limits
(422), an output it refuses (413, 422), a Redis stopped (503) or paused, a server not yet
listening.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.jsontypes import JSONObject
from app.settings import Settings
from app.store.connection import client_for_url
from orchy import ActionRegistrationError, NonRetryableError, Task, Worker
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.processes import RedisProcess
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import (
    LIGHT_SERVER,
    STOPPING,
    TappedServer,
    Wire,
    WorkerProcess,
    fast_worker,
    finish,
    holds,
    is_set,
    logged,
    new_worker,
    running,
    stoppable,
    tapped_serving,
    watch_worker_log,
)

UNAVAILABLE = 503


@dataclass
class Private:
    """A server on a Redis of its own, which a test may stop, restart or pause."""

    redis: RedisProcess
    tapped: TappedServer


@pytest_asyncio.fixture(scope="module")
async def private_stack(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Private]:
    redis = RedisProcess(tmp_path_factory.mktemp("worker-redis"))
    await redis.start()
    try:
        with tapped_serving(settings.model_copy(update={"redis_url": redis.url})) as server:
            yield Private(redis, server)
    finally:
        redis.close()


@pytest_asyncio.fixture
async def private(private_stack: Private) -> Private:
    if private_stack.redis.process is None:
        await private_stack.redis.start()
    private_stack.tapped.wire.clear()
    return private_stack


@pytest_asyncio.fixture
async def private_api(private: Private) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=private.tapped.url, timeout=30) as client:
        yield Api(client)


async def status_after_outage(api: Api, flow_id: str, status: str) -> dict[str, Any]:
    """Waits for the run to reach ``status``, through the 503s of a server whose Redis has
    just come back (each connection it held fails once)."""
    flow: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal flow
        response = await api.http.get(f"/flow/{flow_id}")
        if response.status_code == UNAVAILABLE:
            return False
        assert response.status_code == 200, response.text
        flow = response.json()
        return bool(flow["status"] == status)

    await wait_until(reached, what=f"flow {flow_id} to be {status}")
    return flow


def chain(name: str, action: str, steps: int) -> dict[str, Any]:
    """A run of ``steps`` tasks of ``action`` in a row."""
    return workflow(
        name,
        *(
            user(step, action, {"default": [step + 1]} if step < steps else None, step=step)
            for step in range(1, steps + 1)
        ),
    )


async def ended(api: Api, flow_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Waits until every run has ended; their views by id."""
    flows: dict[str, dict[str, Any]] = {}

    async def all_ended() -> bool:
        for flow_id in flow_ids:
            if flow_id not in flows:
                flow = await api.flow(flow_id)
                if flow["status"] in ("RUNNING", "PAUSED"):
                    return False
                flows[flow_id] = flow
        return True

    await wait_until(all_ended, what=f"{len(flow_ids)} runs to end")
    return flows


def task_of(wire: Wire, worker: Worker, flow_id: str, action_id: int = 1) -> dict[str, Any]:
    [task] = [
        task
        for task in wire.leased(worker.worker_id)
        if task["flowId"] == flow_id and task["actionId"] == action_id
    ]
    return task


# -- definitions --------------------------------------------------------------------------


async def test_definitions_are_posted_for_actions_with_settings(
    http: httpx.AsyncClient, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    query, sms = unique("query-db"), unique("sendSms")
    worker = Worker(tapped.url, settings=fast_worker(settings))
    worker.action(query, retry_count=2, timeout_seconds=5.0)(lambda input: None)
    worker.action(sms)(lambda input: None)
    async with running(worker):
        await wait_until(holds(lambda: bool(wire.polls(worker.worker_id))), what="a poll")

    assert [e.request for e in wire.exchanges("/metadata/action")] == [
        {"name": query, "retryCount": 2, "timeoutSeconds": 5.0}
    ]
    stored = (await http.get(f"/metadata/action/{query}")).json()
    assert (stored["retryCount"], stored["timeoutSeconds"]) == (2, 5.0)
    assert stored["retryAfterSeconds"] == settings.default_retry_after_seconds
    listed = {item["name"] for item in (await http.get("/metadata/action")).json()}
    assert query in listed and sms not in listed
    assert wire.polls(worker.worker_id)[0].request == {
        "workerId": worker.worker_id,
        "actions": [query, sms],
        "max": settings.worker_concurrency,  # as many as it has free slots
        "waitSeconds": 1.0,
    }


async def test_a_refused_definition_stops_the_worker(
    http: httpx.AsyncClient, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """The library checks what it can alone; the server's own limits (here
    ORCHY_MAX_DURATION_SECONDS) refuse the rest, and the worker stops before polling."""
    name = unique("query-db")
    worker = Worker(tapped.url, settings=fast_worker(settings))
    worker.action(name, poll_timeout_seconds=10 * settings.max_duration_seconds)(lambda input: None)
    with pytest.raises(
        ActionRegistrationError,
        match=f"'{name}' \\(422\\): pollTimeoutSeconds: at most 31536000 seconds",
    ):
        await worker.run(asyncio.Event(), handle_signals=False)
    assert [e.status for e in wire.exchanges("/metadata/action")] == [422]
    assert not wire.polls(worker.worker_id)
    listed = {item["name"] for item in (await http.get("/metadata/action")).json()}
    assert name not in listed


# -- results ------------------------------------------------------------------------------


async def test_results_and_errors_are_reported(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    sync_name, async_name = unique("sync"), unique("async")
    worker = new_worker(tapped.url, fast_worker(settings), concurrency=4)

    @worker.action(sync_name, retry_count=1, retry_after_seconds=0.05, retry_policy="FIXED")
    def sync_action(input: dict[str, Any]) -> Any:
        case = input["case"]
        if case == "fatal":
            raise NonRetryableError("bad phone")
        if case == "boom":
            raise ValueError("boom")
        if case == "nan":
            return {"x": math.nan}
        return {"object": {"a": 1}, "none": None, "scalar": 7}[case]

    @worker.action(async_name)
    async def async_action(input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"doubled": input["n"] * 2}

    await api.register(workflow(sync_name, user(1, sync_name, case="{$.input.case}")))
    await api.register(workflow(async_name, user(1, async_name, n="{$.input.n}")))
    cases = ["object", "none", "scalar", "fatal", "boom", "nan"]
    runs = {case: await api.start(sync_name, {"case": case}) for case in cases}
    runs["async"] = await api.start(async_name, {"n": 21})
    async with running(worker):
        flows = await ended(api, list(runs.values()))

    def action(case: str) -> tuple[str, int, Any, Any]:
        view = flows[runs[case]]["actions"]["1"]
        return view["status"], view["attempts"], view["output"], view["error"]

    assert action("object") == ("COMPLETED", 1, {"a": 1}, None)
    assert action("none") == ("COMPLETED", 1, {}, None)
    assert action("scalar") == ("COMPLETED", 1, {"result": 7}, None)
    assert action("async") == ("COMPLETED", 1, {"doubled": 42}, None)
    nan_error = (
        "UnencodableBodyError: not JSON serialisable: "
        "Out of range float values are not JSON compliant"
    )
    sent = {
        case: [
            answer.sent
            for task in wire.leased(worker.worker_id)
            if task["flowId"] == runs[case]
            for answer in wire.result_answers(task["taskId"])
        ]
        for case in ("fatal", "boom", "nan")
    }
    assert sent == {
        "fatal": [{"error": "NonRetryableError: bad phone", "retryable": False}],
        "boom": [{"error": "ValueError: boom", "retryable": True}] * 2,  # retried once
        "nan": [{"error": nan_error, "retryable": False}],
    }
    assert action("fatal")[:2] == ("FAILED", 1)
    assert action("boom")[:2] == ("FAILED", 2)
    assert action("nan")[:2] == ("FAILED", 1)
    assert "NonRetryableError: bad phone" in action("fatal")[3]
    assert "ValueError: boom" in action("boom")[3]
    assert nan_error in action("nan")[3]


async def in_hand(
    api: Api, worker: Worker, wire: Wire, entered: asyncio.Event, name: str
) -> tuple[str, str]:
    """Starts a run of the one-action workflow ``name``; waits until ``worker`` holds its
    task. The run's id and the task id."""
    flow_id = await api.start(name)
    await wait_until(is_set(entered), what="the worker to take the task")
    return flow_id, task_of(wire, worker, flow_id)["taskId"]


def holding_worker(
    url: str, settings: Settings, name: str, output: JSONObject, timeout_seconds: float = 5.0
) -> tuple[Worker, asyncio.Event, asyncio.Event]:
    """A worker whose action ``name`` sets ``entered`` once it holds a task and returns
    ``output`` once ``release`` is set: the worker, ``entered`` and ``release``."""
    entered, release = asyncio.Event(), asyncio.Event()
    worker = new_worker(url, settings)

    @worker.action(name, timeout_seconds=timeout_seconds)
    async def work(input: JSONObject) -> JSONObject:
        entered.set()
        await release.wait()
        return output

    return worker, entered, release


async def test_a_result_for_a_paused_run_is_held_and_applied_on_resume(
    api: Api, http: httpx.AsyncClient, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    name = unique("paused")
    worker, entered, release = holding_worker(
        tapped.url, fast_worker(settings), name, {"done": True}
    )

    await api.register(workflow(name, user(1, name)))
    async with running(worker):
        flow_id, task_id = await in_hand(api, worker, wire, entered, name)
        assert (await http.post(f"/flow/{flow_id}/pause")).status_code == 200
        paused = len(wire.heartbeats(task_id))

        async def beat_while_paused() -> bool:
            return len(wire.heartbeats(task_id)) > paused

        await wait_until(beat_while_paused, what="a heartbeat of the paused run's task")
        release.set()
        await wait_until(
            holds(lambda: bool(wire.result_answers(task_id))), what="the result to be answered"
        )
    # run() has returned: the worker sent all it ever will.
    assert all(e.status == 200 for e in wire.heartbeats(task_id))
    [answer] = wire.result_answers(task_id)
    assert (answer.verb, answer.status, answer.held) == ("complete", 200, True)
    flow = await api.flow(flow_id)
    assert (flow["status"], flow["actions"]["1"]["status"]) == ("PAUSED", "RUNNING")
    assert (await http.post(f"/flow/{flow_id}/resume")).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"done": True}


@pytest.fixture(scope="module")
def forgetful(settings: Settings, redis_client: Any) -> Iterator[TappedServer]:
    """A server that forgets a finished run one second after it ends."""
    with tapped_serving(settings.model_copy(update={"retention_seconds": 1})) as server:
        yield server


@pytest.mark.parametrize(("status", "answer"), [(409, "stale"), (404, "does not know")])
async def test_a_stale_or_unknown_result_is_dropped_not_retried(
    settings: Settings,
    forgetful: TappedServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    answer: str,
) -> None:
    """The run is terminated under the task in hand (its result is stale: 409), and for 404
    also forgotten (retention) before the result comes. Either way it is sent once."""
    watch_worker_log(caplog)
    forgetful.wire.clear()
    name = unique("stale")
    worker, entered, release = holding_worker(
        forgetful.url, fast_worker(settings), name, {"ok": True}
    )

    async with httpx.AsyncClient(base_url=forgetful.url, timeout=30) as http:
        api = Api(http)
        await api.register(workflow(name, user(1, name)))
        async with running(worker):
            flow_id, task_id = await in_hand(api, worker, forgetful.wire, entered, name)
            assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 200
            if status == 404:

                async def forgotten() -> bool:
                    return (await http.get(f"/flow/{flow_id}")).status_code == 404

                await wait_until(forgotten, what="the run to expire")
            release.set()
            await wait_until(
                holds(lambda: logged(caplog, f"complete answered {status}") == 1),
                what=f"the worker to log the {status}",
            )
    assert answer in caplog.text
    [reply] = forgetful.wire.result_answers(task_id)
    assert (reply.verb, reply.status, reply.sent) == ("complete", status, {"output": {"ok": True}})


async def test_server_errors_on_results_are_retried(
    settings: Settings, private: Private, private_api: Api
) -> None:
    """Redis stops while the task is in hand: the result gets 503s, is sent again with
    back-off, and is applied once Redis is back."""
    name = unique("retried")
    wire = private.tapped.wire
    worker, entered, release = holding_worker(
        private.tapped.url,
        fast_worker(settings, worker_http_retries=8),
        name,
        {"ok": True},
        timeout_seconds=30.0,
    )

    await private_api.register(workflow(name, user(1, name)))
    async with running(worker):
        flow_id, task_id = await in_hand(private_api, worker, wire, entered, name)
        await private.redis.stop()
        try:
            release.set()

            async def refused_twice() -> bool:
                statuses = [a.status for a in wire.result_answers(task_id)]
                return statuses.count(UNAVAILABLE) >= 2

            await wait_until(refused_twice, what="two 503 answers to the result")
        finally:
            await private.redis.start()
        flow = await status_after_outage(private_api, flow_id, "COMPLETED")
    answers = wire.result_answers(task_id)
    assert all(a.sent == {"output": {"ok": True}} for a in answers)
    assert [a.status for a in answers[:2]] == [UNAVAILABLE] * 2
    assert answers[-1].status == 200
    assert flow["actions"]["1"]["attempts"] == 1
    assert flow["actions"]["1"]["output"] == {"ok": True}


async def test_a_refused_output_is_reported_as_a_final_failure(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """Too large (413, the result alone) and not storable (422, the whole request): the
    attempt is failed at once, saying why."""
    name = unique("refused")
    worker = new_worker(tapped.url, fast_worker(settings))

    @worker.action(name, retry_count=2, retry_after_seconds=0.05)
    def refused(input: dict[str, Any]) -> dict[str, Any]:
        if input["case"] == "large":
            return {"big": "x" * settings.max_output_bytes}
        return {"big": 2**64}

    await api.register(workflow(name, user(1, name, case="{$.input.case}")))
    large = await api.start(name, {"case": "large"})
    wide = await api.start(name, {"case": "wide"})
    async with running(worker):
        flows = await ended(api, [large, wide])

    for flow_id, status, why in [
        (large, 413, "the limit is"),
        (wide, 422, "does not fit in a 64-bit integer"),
    ]:
        action = flows[flow_id]["actions"]["1"]
        assert (action["status"], action["attempts"]) == ("FAILED", 1)
        task_id = task_of(wire, worker, flow_id)["taskId"]
        complete, fail = wire.result_answers(task_id)
        assert (complete.verb, complete.status) == ("complete", status)
        assert (fail.verb, fail.status, fail.sent["retryable"]) == ("fail", 200, False)
        assert fail.sent["error"].startswith(f"OutputRejected: the server answered {status}: ")
        assert why in fail.sent["error"]
        assert fail.sent["error"] in action["error"]


async def test_a_refused_output_fails_only_its_own_task_in_a_batch(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """Two results finish together and go in one request; the server refuses that request
    whole for one of them (an integer beyond 64 bits): the other still completes."""
    name = unique("batch")
    gate = asyncio.Event()
    waiting = 0
    worker = new_worker(tapped.url, fast_worker(settings), concurrency=2)

    @worker.action(name, retry_count=0)
    async def together(input: dict[str, Any]) -> dict[str, Any]:
        nonlocal waiting
        waiting += 1
        await gate.wait()  # both resume in one turn of the loop
        return {"big": 2**64} if input["case"] == "bad" else {"fine": True}

    await api.register(workflow(name, user(1, name, case="{$.input.case}")))
    bad = await api.start(name, {"case": "bad"})
    good = await api.start(name, {"case": "good"})
    async with running(worker):
        await wait_until(holds(lambda: waiting == 2), what="both tasks in hand")
        gate.set()
        flows = await ended(api, [bad, good])

    first = wire.results_requests()[0]
    assert len(first.request["results"]) == 2  # they did go together
    assert first.status == 422
    assert flows[good]["status"] == "COMPLETED"
    assert flows[good]["actions"]["1"]["output"] == {"fine": True}
    assert flows[bad]["status"] == "FAILED"
    assert "OutputRejected: the server answered 422" in flows[bad]["actions"]["1"]["error"]


# -- polls --------------------------------------------------------------------------------


async def test_a_failed_poll_is_followed_by_a_new_one(
    settings: Settings, private: Private, private_api: Api
) -> None:
    """Polls answered 503 (Redis stopped) are followed by new ones, which get the task once
    Redis is back."""
    name = unique("repoll")
    wire = private.tapped.wire
    worker = new_worker(private.tapped.url, fast_worker(settings))
    worker.action(name)(lambda input: {"ok": True})
    await private_api.register(workflow(name, user(1, name)))
    flow_id = await private_api.start(name)
    await private.redis.stop()
    try:
        async with running(worker):

            async def refused_twice() -> bool:
                statuses = [e.status for e in wire.polls(worker.worker_id) if e.answered]
                return statuses.count(UNAVAILABLE) >= 2

            await wait_until(refused_twice, what="two polls answered 503")
            await private.redis.start()
            flow = await status_after_outage(private_api, flow_id, "COMPLETED")
    finally:
        if private.redis.process is None:
            await private.redis.start()
    statuses = [e.status for e in wire.polls(worker.worker_id) if e.answered]
    assert statuses[:2] == [UNAVAILABLE] * 2
    assert 200 in statuses
    assert flow["actions"]["1"]["output"] == {"ok": True}
    assert task_of(wire, worker, flow_id)["attempt"] == 1


async def test_an_unreachable_server_is_polled_until_stopped(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the server's address yet: polls fail and are tried again, the
    worker keeps going, and it serves the task queued meanwhile once the server is up."""
    watch_worker_log(caplog)
    name = unique("unreachable")
    later = ServerThread(settings.model_copy(update=LIGHT_SERVER))  # its port, not listening
    worker = new_worker(later.url, fast_worker(settings))
    worker.action(name)(lambda input: {"ok": True})
    await api.register(workflow(name, user(1, name)))
    flow_id = await api.start(name)
    try:
        async with running(worker) as job:
            await wait_until(
                holds(lambda: logged(caplog, "poll failed") >= 3), what="three failed polls"
            )
            assert not job.done()
            await asyncio.to_thread(later.start)
            flow = await api.wait_status(flow_id, "COMPLETED")
    finally:
        if later.thread.is_alive():
            await asyncio.to_thread(later.stop)
    assert "Cannot connect to host" in caplog.text
    assert flow["actions"]["1"]["output"] == {"ok": True}


async def test_a_poll_never_asks_for_more_than_the_server_allows(
    settings: Settings, redis_client: Any
) -> None:
    """A server that refuses polls of more than 3 tasks, and a worker with 5 slots."""
    tight = settings.model_copy(update={"poll_max_tasks": 3})
    name = unique("capped")
    worker = new_worker("", fast_worker(tight), concurrency=5)
    worker.action(name)(lambda input: None)
    with tapped_serving(tight) as server:
        worker.server_url = server.url
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            api = Api(http)
            await api.register(workflow(name, user(1, name)))
            flow_ids = [await api.start(name) for _ in range(5)]
            async with running(worker):
                flows = await ended(api, flow_ids)
        polls = server.wire.polls(worker.worker_id)
        results = server.wire.results_requests()
    assert all(flow["status"] == "COMPLETED" for flow in flows.values())
    assert polls[0].request["max"] == 3
    assert all(e.request["max"] <= 3 and e.status == 200 for e in polls if e.answered)
    assert all(len(e.request["results"]) <= 3 and e.status == 200 for e in results)


# -- slots and the next offer -------------------------------------------------------------


class InHand:
    """A synchronous action that counts how many of its calls run at once; the first calls
    wait at a gate until the test opens it."""

    def __init__(self, worker: Worker, name: str) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.gate = threading.Event()
        worker.action(name)(self.run)

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            if not self.gate.wait(30):
                raise RuntimeError("the test never opened the gate")
            return {"step": input.get("step")}
        finally:
            with self.lock:
                self.now -= 1

    async def full(self, slots: int) -> None:
        await wait_until(holds(lambda: self.now == slots), what=f"{slots} tasks in hand")


async def test_no_more_tasks_than_slots_are_in_hand(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    name = unique("slow")
    worker = new_worker(tapped.url, fast_worker(settings), concurrency=2)
    slow = InHand(worker, name)
    await api.register(workflow(name, user(1, name)))
    flow_ids = [await api.start(name) for _ in range(7)]
    async with running(worker):
        try:
            await slow.full(2)
            await wait_until(
                holds(lambda: wire.polls_in_flight(worker.worker_id) == 0),
                what="no poll out while the slots are full",
            )
            assert len(wire.leased(worker.worker_id)) == 2
        finally:
            slow.gate.set()
        flows = await ended(api, flow_ids)
    assert slow.most == 2
    assert all(flow["status"] == "COMPLETED" for flow in flows.values())
    asked = [e.request["max"] for e in wire.polls(worker.worker_id)]
    assert asked[0] == 2
    assert set(asked) <= {1, 2}


async def test_results_hand_their_slots_to_the_tasks_leased_in_the_answer(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """Two runs of four steps: each step after the first comes in the answer to the result
    of the one before, never through a poll."""
    name, other = unique("slow"), unique("other")
    worker = new_worker(tapped.url, fast_worker(settings), concurrency=2)
    slow = InHand(worker, name)
    slow.gate.set()
    worker.action(other)(lambda input: None)
    await api.register(chain(name, name, 4))
    flow_ids = [await api.start(name) for _ in range(2)]
    async with running(worker):
        flows = await ended(api, flow_ids)

    assert all(flow["status"] == "COMPLETED" for flow in flows.values())
    assert slow.most <= 2
    handed = {(t["flowId"], t["actionId"]) for t in wire.handed_over(worker.worker_id)}
    assert handed == {(f, step) for f in flow_ids for step in (2, 3, 4)}
    offers = [e.request["next"] for e in wire.results_requests()]
    assert offers and all(offer is not None for offer in offers)
    assert {(offer["workerId"], tuple(offer["actions"])) for offer in offers} == {
        (worker.worker_id, (name, other))
    }
    assert all(
        e.request["next"]["max"] == len(e.request["results"]) <= 2 for e in wire.results_requests()
    )


async def test_no_next_offer_when_switched_off(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    name = unique("no-next")
    worker = new_worker(tapped.url, fast_worker(settings, worker_take_next=False))
    worker.action(name)(lambda input: {"step": input["step"]})
    await api.register(chain(name, name, 2))
    flow_id = await api.start(name)
    async with running(worker):
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["2"]["output"] == {"step": 2}
    assert [e.request.get("next") for e in wire.results_requests()] == [None, None]
    assert not wire.handed_over(worker.worker_id)
    # Nothing handed over: every task leased came from a poll.
    assert [t["actionId"] for t in wire.leased(worker.worker_id)] == [1, 2]


async def test_a_task_handed_over_while_stopping_is_run_within_the_grace(
    settings: Settings, private: Private, private_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The result of step 1 (offering its slot) is out when the stop comes, and its answer,
    held up by a paused Redis, comes after: the step 2 it leases is run and reported before
    ``run`` returns."""
    watch_worker_log(caplog)
    name = unique("handover")
    wire = private.tapped.wire
    entered, gate = asyncio.Event(), asyncio.Event()
    worker = new_worker(
        private.tapped.url, fast_worker(settings, worker_heartbeat_seconds=30.0), concurrency=1
    )

    @worker.action(name)
    async def step(input: JSONObject, task: Task) -> JSONObject:
        if task.action_id == 1:
            entered.set()
            await gate.wait()
        return {"step": task.action_id}

    await private_api.register(chain(name, name, 2))
    flow_id = await private_api.start(name)
    redis = client_for_url(private.redis.url)
    try:
        async with stoppable(worker) as run:
            await wait_until(is_set(entered), what="step 1 in hand")
            await redis.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
            try:
                gate.set()
                await wait_until(
                    holds(lambda: bool(wire.results_requests())), what="the result of step 1 out"
                )
                run.stop.set()
                await wait_until(holds(lambda: logged(caplog, STOPPING) == 1), what="the stop")
            finally:
                await redis.execute_command("CLIENT", "UNPAUSE")
            await finish(run.job, worker)
    finally:
        await redis.aclose()

    flow = await private_api.flow(flow_id)
    assert flow["status"] == "COMPLETED"
    assert flow["actions"]["2"]["output"] == {"step": 2}
    [first, second] = wire.results_requests()
    assert first.request["next"] is not None  # offered before the stop
    assert [t["actionId"] for t in first.answer["tasks"]] == [2]
    assert "next" not in second.request  # a stopping worker offers nothing
    assert second.status == 200 and second.answer["results"][0]["status"] == 200


# -- heartbeats ---------------------------------------------------------------------------


async def test_long_tasks_send_heartbeats_until_the_lease_is_lost(
    api: Api, http: httpx.AsyncClient, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """Two long tasks beat; one's run is terminated, so its next heartbeat gets 409 and it
    beats no more, while the other goes on beating."""
    name = unique("long")
    release = asyncio.Event()
    worker = new_worker(tapped.url, fast_worker(settings), concurrency=2)

    @worker.action(name, timeout_seconds=5.0)
    async def long(input: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {}

    await api.register(workflow(name, user(1, name)))
    kept, lost = await api.start(name), await api.start(name)
    async with running(worker):

        def beats(flow_id: str, status: int | None = None) -> list[Any]:
            task_id = task_of(wire, worker, flow_id)["taskId"]
            return [e for e in wire.heartbeats(task_id) if status in (None, e.status)]

        async def both_beating() -> bool:
            leased = {t["flowId"] for t in wire.leased(worker.worker_id)}
            return {kept, lost} <= leased and all(len(beats(f, 200)) >= 2 for f in (kept, lost))

        await wait_until(both_beating, what="heartbeats of both tasks")
        assert (await http.post(f"/flow/{lost}/terminate")).status_code == 200
        await wait_until(holds(lambda: bool(beats(lost, 409))), what="a heartbeat answered 409")
        refused_at = beats(lost, 409)[0].at
        await wait_until(
            holds(lambda: sum(e.at > refused_at for e in beats(kept)) >= 3),
            what="three more heartbeats of the other task",
        )
        release.set()
        await api.wait_status(kept, "COMPLETED")

    assert all(e.request == {} for f in (kept, lost) for e in beats(f))
    assert all(e.status == 200 for e in beats(kept))
    assert [e.status for e in beats(lost)][-1] == 409
    assert len(beats(lost, 409)) == 1  # none after the lease was lost
    [late] = wire.result_answers(task_of(wire, worker, lost)["taskId"])
    assert late.status == 409


# -- stopping -----------------------------------------------------------------------------


async def test_stopping_cancels_the_long_poll_at_once(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """The stop hangs up the poll in flight (the server sees the client go) rather than
    waiting for its answer; a task queued after is not leased to the gone worker."""
    name = unique("idle")
    worker = new_worker(
        tapped.url, fast_worker(settings, worker_poll_wait_seconds=settings.poll_max_wait_seconds)
    )
    worker.action(name)(lambda input: None)
    await api.register(workflow(name, user(1, name)))
    async with stoppable(worker) as run:
        await wait_until(
            holds(lambda: wire.polls_in_flight(worker.worker_id) == 1), what="a poll out"
        )
        await run.stopped()
    [poll] = wire.polls(worker.worker_id)
    await wait_until(holds(lambda: poll.hung_up), what="the server to see the poll hang up")
    flow_id = await api.start(name)
    task = await api.poll_one(name)
    assert (task["flowId"], task["attempt"]) == (flow_id, 1)
    assert poll.answer in (None, {"tasks": []})
    assert (await api.complete(task["taskId"], {})).status_code == 200


async def test_tasks_in_hand_finish_within_the_grace(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while step 1 runs: step 1 finishes and its result reaches the server before
    ``run`` returns; step 2 is not taken (the result offers no slot) and waits for a poll."""
    watch_worker_log(caplog)
    name = unique("grace")
    entered, gate = threading.Event(), threading.Event()
    worker = new_worker(tapped.url, fast_worker(settings))

    @worker.action(name)
    def first(input: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        if not gate.wait(30):
            raise RuntimeError("the test never opened the gate")
        return {"done": input["step"]}

    await api.register(chain(name, name, 2))
    flow_id = await api.start(name)
    async with stoppable(worker, gate) as run:
        await wait_until(is_set(entered), what="step 1 in hand")
        await run.stopped_draining(gate, caplog)

    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["output"] == {"done": 1}
    assert flow["actions"]["2"]["status"] == "QUEUED"
    [result] = wire.results_requests()
    assert "next" not in result.request  # a stopping worker takes no new tasks
    task = await api.poll_one(name)
    assert (task["actionId"], task["attempt"]) == (2, 1)
    assert (await api.complete(task["taskId"], {})).status_code == 200


async def test_tasks_past_the_grace_are_abandoned(
    api: Api, http: httpx.AsyncClient, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    """Past the grace the worker returns without the tasks' results: the async one is
    cancelled, the thread of the sync one left behind; their leases run out on the server,
    which delivers them again."""
    names = unique("abandoned-async"), unique("abandoned-sync")
    lease = 4.0
    entered: list[str] = []
    cancelled = asyncio.Event()
    never = threading.Event()
    worker = new_worker(
        tapped.url, fast_worker(settings, worker_shutdown_grace_seconds=0.5), concurrency=2
    )

    @worker.action(names[0], timeout_seconds=lease, retry_after_seconds=0.05)
    async def hanging(input: dict[str, Any]) -> None:
        entered.append("async")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @worker.action(names[1], timeout_seconds=lease, retry_after_seconds=0.05)
    def blocking(input: dict[str, Any]) -> None:
        entered.append("sync")
        never.wait(60)

    for name in names:
        await api.register(workflow(name, user(1, name)))
    flow_ids = [await api.start(name) for name in names]
    async with stoppable(worker, never) as run:
        await wait_until(holds(lambda: len(entered) == 2), what="both tasks in hand")
        await run.stopped()
        assert cancelled.is_set()
        assert not wire.results_requests()
        for flow_id in flow_ids:
            flow = await api.flow(flow_id)
            assert (flow["actions"]["1"]["status"], flow["actions"]["1"]["attempts"]) == (
                "RUNNING",
                1,
            )
        for name, flow_id in zip(names, flow_ids, strict=True):
            again = await api.poll_one(name, wait=3 * lease)
            assert (again["flowId"], again["attempt"]) == (flow_id, 2)
            assert (await api.complete(again["taskId"], {})).status_code == 200
            history = (await http.get(f"/flow/{flow_id}/history")).json()["history"]
            [retry] = [e for e in history if e["event"] == "RETRY_SCHEDULED"]
            assert retry["error"].startswith("lease expired")


# -- the task as a second argument ------------------------------------------------------


async def test_a_function_with_two_arguments_gets_the_task(
    api: Api, settings: Settings, tapped: TappedServer, wire: Wire
) -> None:
    names = [unique("sync-two"), unique("async-two"), unique("one")]
    worker = new_worker(tapped.url, fast_worker(settings), concurrency=3)
    seen: dict[str, Task] = {}

    @worker.action(names[0])
    def sync_two(input: dict[str, Any], task: Task) -> dict[str, Any]:
        seen[task.task_id] = task
        return {"n": input["n"]}

    @worker.action(names[1])
    async def async_two(input: dict[str, Any], task: Task) -> dict[str, Any]:
        seen[task.task_id] = task
        return {"n": input["n"]}

    @worker.action(names[2])
    def one(input: dict[str, Any]) -> dict[str, Any]:
        return {"alone": True}

    for name in names:
        await api.register(workflow(name, user(1, name, n="{$.input.n}")))
    flow_ids = [await api.start(name, {"n": n}) for n, name in enumerate(names)]
    async with running(worker):
        flows = await ended(api, flow_ids)

    assert [flows[f]["actions"]["1"]["output"] for f in flow_ids] == [
        {"n": 0},
        {"n": 1},
        {"alone": True},
    ]
    leased = {t["taskId"]: t for t in wire.leased(worker.worker_id)}
    assert len(seen) == 2
    for task_id, task in seen.items():
        assert (task.flow_id, task.action_id, task.attempt, task.input) == (
            leased[task_id]["flowId"],
            1,
            1,
            leased[task_id]["input"],
        )
    assert {task.name for task in seen.values()} == set(names[:2])


# -- the command, with real signals -------------------------------------------------------

HELD_WORKER = """\
import pathlib
import time

from orchy import Worker

worker = Worker()


@worker.action({name!r}, timeout_seconds=30)
def held(input):
    pathlib.Path({entered!r}).write_text(input["flow"])
    while not pathlib.Path({release!r}).exists():  # held until the test lets go
        time.sleep(0.01)
    return {{"released": True}}
"""


@dataclass
class Held:
    name: str
    entered: Path
    release: Path
    process: WorkerProcess


@pytest_asyncio.fixture
async def held_worker(api: Api, server: ServerThread, tmp_path: Path) -> AsyncIterator[Held]:
    """An ``orchy worker`` process whose action holds its task until ``release`` exists."""
    name = unique("held")
    entered, release = tmp_path / "entered", tmp_path / "release"
    source = HELD_WORKER.format(name=name, entered=str(entered), release=str(release))
    process = WorkerProcess(
        tmp_path,
        source,
        server.url,
        ORCHY_WORKER_POLL_WAIT_SECONDS="1",
        ORCHY_WORKER_HTTP_BACKOFF_SECONDS="0.05",
        ORCHY_WORKER_SHUTDOWN_GRACE_SECONDS="60",
    )
    await api.register(workflow(name, user(1, name, flow="{$.flow.id}")))
    await process.start()
    try:
        yield Held(name, entered, release, process)
    finally:
        release.touch()
        await process.close()


async def started_and_held(api: Api, held: Held) -> str:
    flow_id = await api.start(held.name)

    async def holding() -> bool:
        return held.entered.exists() and held.entered.read_text() == flow_id

    await wait_until(holding, what="the worker process to take the task")
    return flow_id


async def test_a_signal_lets_the_task_in_hand_finish(api: Api, held_worker: Held) -> None:
    flow_id = await started_and_held(api, held_worker)
    held_worker.process.send(signal.SIGTERM)
    await held_worker.process.wait_said("SIGTERM: stopping")
    held_worker.release.touch()
    code = await held_worker.process.exit_code()
    assert code == 0, held_worker.process.output
    flow = await api.flow(flow_id)
    assert flow["status"] == "COMPLETED", held_worker.process.output
    assert flow["actions"]["1"]["output"] == {"released": True}


async def test_a_second_signal_abandons_the_task_at_once(
    api: Api, http: httpx.AsyncClient, held_worker: Held
) -> None:
    """The grace is a minute; the second signal ends the process with the task unanswered,
    its lease left to run out on the server."""
    flow_id = await started_and_held(api, held_worker)
    held_worker.process.send(signal.SIGINT)
    await held_worker.process.wait_said("SIGINT: stopping")
    held_worker.process.send(signal.SIGINT)
    code = await held_worker.process.exit_code()
    output = held_worker.process.output
    assert code == 0, output
    assert "abandoning task" in output
    flow = await api.flow(flow_id)
    assert (flow["status"], flow["actions"]["1"]["status"]) == ("RUNNING", "RUNNING"), output
    assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 200
