"""The real worker library against a real server: retries, leases, heartbeats, concurrency,
shutdown, the examples in ``workflows/``, and the exactly-once effect under load.

Workers run in-process (``Worker.run`` on the test's event loop, stopped by an event), except
the one stalled with SIGSTOP and the one killed with SIGKILL, which are ``orchy worker``
subprocesses. The server the workers talk to records every exchange on the way
(``tests.helpers.worker_wire``): what each worker sent and what the server answered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from app.jsontypes import JSONObject
from app.settings import Settings
from orchy import NonRetryableError, Worker, load_worker
from tests.helpers.definitions import set_action, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.processes import Processes, clean_env
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import (
    TappedServer,
    Wire,
    WorkerProcess,
    fast_worker,
    holds,
    is_set,
    logged,
    new_worker,
    running,
    stoppable,
    watch_worker_log,
)

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
LEASE_SECONDS = 2.0
RETRY_AFTER_SECONDS = 0.05
LEASE_EXPIRED = "lease expired"
Action = TypeVar("Action", bound=Callable[..., Any])


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return fast_worker(settings)


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


# -- retries --------------------------------------------------------------------------------


async def test_action_failing_twice_then_succeeding_is_retried_by_its_definition(
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    name = unique("it-flaky")
    invocations: list[JSONObject] = []
    effects: list[str] = []
    worker = new_worker(tapped.url, worker_settings)

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
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    name = unique("it-refuse")
    invocations: list[JSONObject] = []
    worker = new_worker(tapped.url, worker_settings)

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
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
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

    invocations: list[JSONObject] = []
    worker = healthy_worker(tapped.url, worker_settings, name, invocations.append)

    async with running(worker):
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 2
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}
    assert invocations == [{"n": 1}]
    assert await deliveries(http, flow_id) == [(1, "test"), (2, worker.worker_id)]
    assert await retried_because(http, flow_id) == [LEASE_EXPIRED]

    late = await api.complete(hung["taskId"], {"by": "hung"})
    assert late.status_code == 409, late.text
    assert "error" in late.json()
    assert (await api.fail(hung["taskId"], "too late")).status_code == 409
    assert (await http.post(f"/tasks/{hung['taskId']}/heartbeat")).status_code == 409
    flow = await api.flow(flow_id)
    assert flow["status"] == "COMPLETED"
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}


async def retried_because(http: httpx.AsyncClient, flow_id: str) -> list[str]:
    """Why each retry of the run's tasks was scheduled, cut to the error's first words."""
    return [
        entry["error"][: len(LEASE_EXPIRED)]
        for entry in await history(http, flow_id)
        if entry["event"] == "RETRY_SCHEDULED"
    ]


HELD_WORKER = """\\
import pathlib
import time

from orchy import Worker

worker = Worker()


@worker.action({name!r}, retry_count=3, retry_after_seconds={retry}, retry_policy="FIXED",
               timeout_seconds={lease})
def hold(input):
    pathlib.Path({entered!r}).write_text(input["flow"])
    while not pathlib.Path({release!r}).exists():  # held until the test lets go
        time.sleep(0.01)
    pathlib.Path({effect!r}).write_text("done")
    return {{"by": "held"}}
"""


def held_worker(tmp_path: Path, name: str, url: str) -> WorkerProcess:
    """An ``orchy worker`` process whose action holds its task until ``tmp_path/release``
    exists, then writes ``tmp_path/effect``. Alive, it keeps the lease with heartbeats."""
    source = HELD_WORKER.format(
        name=name,
        retry=RETRY_AFTER_SECONDS,
        lease=LEASE_SECONDS,
        entered=str(tmp_path / "entered"),
        release=str(tmp_path / "release"),
        effect=str(tmp_path / "effect"),
    )
    return WorkerProcess(
        tmp_path,
        source,
        url,
        ORCHY_WORKER_HEARTBEAT_SECONDS="0.2",
        ORCHY_WORKER_POLL_WAIT_SECONDS="1",
        ORCHY_WORKER_HTTP_BACKOFF_SECONDS="0.05",
    )


async def held_by_process(api: Api, name: str, tmp_path: Path) -> str:
    """Starts a run of ``name``; waits until the worker process holds its task."""
    flow_id = await api.start(name)
    entered = tmp_path / "entered"

    async def holding() -> bool:
        return entered.exists() and entered.read_text() == flow_id

    await wait_until(holding, what="the worker process to take the task")
    return flow_id


def lease_test_action(worker: Worker, name: str) -> Callable[[Action], Action]:
    """``worker.action(name)`` with the lease tests' settings: a short lease, quick retries."""
    return worker.action(
        name,
        retry_count=3,
        retry_after_seconds=RETRY_AFTER_SECONDS,
        retry_policy="FIXED",
        timeout_seconds=LEASE_SECONDS,
    )


def healthy_worker(
    url: str, settings: Settings, name: str, seen: Callable[[JSONObject], object]
) -> Worker:
    """A worker whose action ``name`` (the lease tests' retry settings) hands each input it
    gets to ``seen`` and returns ``{"by": "healthy"}``."""
    worker = new_worker(url, settings)

    @lease_test_action(worker, name)
    def work(input: JSONObject) -> JSONObject:
        seen(input)
        return {"by": "healthy"}

    return worker


def flow_effect(effects: list[str]) -> Callable[[JSONObject], None]:
    """Records the run id of each input: the effect the healthy worker makes."""
    return lambda input: effects.append(str(input["flow"]))


async def test_a_stalled_worker_loses_the_lease_and_its_late_result_is_refused(
    api: Api,
    http: httpx.AsyncClient,
    tapped: TappedServer,
    worker_settings: Settings,
    wire: Wire,
    tmp_path: Path,
) -> None:
    """A worker process frozen (SIGSTOP) with the task in hand sends no heartbeat: a healthy
    worker completes attempt 2; thawed, the stalled one finishes and its result gets 409."""
    name = unique("it-stall")
    await api.register(workflow(name, user(1, name, flow="{$.flow.id}")))
    stalled = held_worker(tmp_path, name, tapped.url)
    effects: list[str] = []
    healthy = healthy_worker(tapped.url, worker_settings, name, flow_effect(effects))
    await stalled.start()
    try:
        flow_id = await held_by_process(api, name, tmp_path)
        stalled.send(signal.SIGSTOP)
        async with running(healthy):
            flow = await api.wait_status(flow_id, "COMPLETED")
        (tmp_path / "release").touch()
        stalled.send(signal.SIGCONT)
        [(_, stalled_id), (_, healthy_id)] = await deliveries(http, flow_id)
        [late] = [t for t in wire.leased(stalled_id) if t["flowId"] == flow_id]
        await wait_until(
            holds(lambda: bool(wire.result_answers(late["taskId"]))),
            what="the stalled worker's late result",
        )
        await stalled.wait_said("complete answered 409")
        stalled.send(signal.SIGTERM)
        assert await stalled.exit_code() == 0, stalled.output
    finally:
        await stalled.close()

    assert flow["actions"]["1"]["attempts"] == 2
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}
    assert healthy_id == healthy.worker_id
    assert await retried_because(http, flow_id) == [LEASE_EXPIRED]
    assert late["attempt"] == 1
    [reply] = wire.result_answers(late["taskId"])
    assert (reply.verb, reply.status, reply.sent) == ("complete", 409, {"output": {"by": "held"}})
    [on_time] = [t for t in wire.leased(healthy.worker_id) if t["flowId"] == flow_id]
    assert [a.status for a in wire.result_answers(on_time["taskId"])] == [200]
    # Both ran; only one result applied.
    assert effects == [flow_id]
    assert (tmp_path / "effect").read_text() == "done"
    assert (await api.flow(flow_id))["actions"]["1"]["output"] == {"by": "healthy"}


async def test_heartbeats_keep_a_long_action_at_its_first_attempt(
    api: Api,
    http: httpx.AsyncClient,
    tapped: TappedServer,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    """The action outlives its lease twice over; heartbeats keep the lease. With
    concurrency 2 a redelivery would reach this same worker and show as attempt 2."""
    name = unique("it-heartbeat")
    invocations: list[JSONObject] = []
    release = asyncio.Event()
    worker = new_worker(tapped.url, worker_settings, concurrency=2)

    @lease_test_action(worker, name)
    async def long_job(input: JSONObject) -> JSONObject:
        invocations.append(input)
        await release.wait()
        return {"done": True}

    await api.register(workflow(name, user(1, name)))
    async with running(worker):
        flow_id = await api.start(name)
        await wait_until(holds(lambda: bool(invocations)), what="the task in hand")
        [task] = wire.leased(worker.worker_id)
        leased_by = time.monotonic()

        async def past_two_leases() -> bool:
            beats = [e for e in wire.heartbeats(task["taskId"]) if e.status == 200]
            return bool(beats) and beats[-1].at - leased_by > 2 * LEASE_SECONDS

        await wait_until(past_two_leases, what="heartbeats for two leases")
        release.set()
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 1
    assert flow["actions"]["1"]["output"] == {"done": True}
    assert len(invocations) == 1
    assert await deliveries(http, flow_id) == [(1, worker.worker_id)]
    beats = wire.heartbeats(task["taskId"])
    assert len(beats) >= 3
    assert all(e.status == 200 for e in beats)


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrency_bounds_the_tasks_in_hand(
    api: Api,
    http: httpx.AsyncClient,
    tapped: TappedServer,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    name = unique("it-concurrency")
    concurrency, runs = 4, 8
    lock = threading.Lock()
    gate = threading.Event()
    in_hand = 0
    most_in_hand = 0
    worker = new_worker(tapped.url, worker_settings, concurrency=concurrency)

    @worker.action(name, timeout_seconds=10.0)
    def gated(input: JSONObject) -> JSONObject:  # runs in the worker's thread pool
        nonlocal in_hand, most_in_hand
        with lock:
            in_hand += 1
            most_in_hand = max(most_in_hand, in_hand)
        try:
            if not gate.wait(30):
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
        try:
            await wait_until(holds(lambda: in_hand == concurrency), what="the slots full")
            # Full: the worker has no poll out, so it cannot lease more until a slot frees.
            await wait_until(
                holds(lambda: wire.polls_in_flight(worker.worker_id) == 0),
                what="the worker to stop polling when full",
            )
            assert sorted(await statuses()) == ["QUEUED"] * 4 + ["RUNNING"] * 4
            assert len(wire.leased(worker.worker_id)) == concurrency
        finally:
            gate.set()
        flows = await wait_all(api, flow_ids, "COMPLETED")

    assert most_in_hand == concurrency
    assert [flow["actions"]["1"]["output"] for flow in flows] == [{"n": n} for n in range(runs)]
    assert all(flow["actions"]["1"]["attempts"] == 1 for flow in flows)
    assert len(wire.leased(worker.worker_id)) == runs
    assert all(1 <= e.request["max"] <= concurrency for e in wire.polls(worker.worker_id))


# -- shutdown -------------------------------------------------------------------------------


async def test_stopping_lets_the_task_in_hand_finish_and_report(
    api: Api,
    tapped: TappedServer,
    worker_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The task is still running when the stop comes, and only finishes once the worker is
    draining; its result reaches the server before ``run`` returns."""
    watch_worker_log(caplog)
    name = unique("it-drain")
    entered, gate = asyncio.Event(), asyncio.Event()
    worker = new_worker(tapped.url, worker_settings, concurrency=2)

    @worker.action(name, timeout_seconds=10.0)
    async def finishing(input: JSONObject) -> JSONObject:
        entered.set()
        await gate.wait()
        return {"finished": True}

    await api.register(workflow(name, user(1, name)))
    async with stoppable(worker, gate) as run:
        flow_id = await api.start(name)
        await wait_until(is_set(entered), what="the task to be in hand")
        await run.stopped_draining(gate, caplog)
    # The result was reported before run() returned.
    flow = await api.flow(flow_id)
    assert flow["status"] == "COMPLETED"
    assert flow["actions"]["1"]["attempts"] == 1
    assert flow["actions"]["1"]["output"] == {"finished": True}


async def test_a_worker_killed_hard_gets_its_task_redelivered_to_another(
    api: Api,
    http: httpx.AsyncClient,
    tapped: TappedServer,
    worker_settings: Settings,
    tmp_path: Path,
) -> None:
    name = unique("it-kill")
    await api.register(workflow(name, user(1, name, flow="{$.flow.id}")))
    killed = held_worker(tmp_path, name, tapped.url)
    await killed.start()
    try:
        flow_id = await held_by_process(api, name, tmp_path)
        killed.send(signal.SIGKILL)
        assert await killed.exit_code() == -signal.SIGKILL
    finally:
        await killed.close()

    effects: list[str] = []
    healthy = healthy_worker(tapped.url, worker_settings, name, flow_effect(effects))
    async with running(healthy):
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 2
    assert flow["actions"]["1"]["output"] == {"by": "healthy"}
    assert effects == [flow_id]
    assert not (tmp_path / "effect").exists()
    [(first, killed_id), (second, healthy_id)] = await deliveries(http, flow_id)
    assert (first, second) == (1, 2)
    assert f"-{killed.pid}-" in killed_id
    assert healthy_id == healthy.worker_id
    assert await retried_because(http, flow_id) == [LEASE_EXPIRED]


async def test_a_server_restart_under_the_worker_loses_nothing(
    api: Api,
    http: httpx.AsyncClient,
    redis_url: str,
    worker_settings: Settings,
    tmp_path: Path,
    processes: Processes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's server (an ``orchy serve`` process) is stopped with step 1 in hand: the
    result cannot be delivered and is tried again, the polls of the free slot fail and are
    sent again, and once the server is back on its port the result lands (attempt 1) and the
    run finishes."""
    watch_worker_log(caplog)
    name = unique("it-restart")
    server = processes.server(clean_env(REDIS_URL=redis_url), tmp_path / "server.log")
    await server.start()
    entered, gate = asyncio.Event(), asyncio.Event()
    worker = new_worker(
        server.url, fast_worker(worker_settings, worker_http_retries=10), concurrency=2
    )

    @worker.action(name, timeout_seconds=30.0)
    async def step(input: JSONObject) -> JSONObject:
        if input["step"] == 1:
            entered.set()
            await gate.wait()
        return {"step": input["step"]}

    await api.register(
        workflow(name, user(1, name, {"default": [2]}, step=1), user(2, name, step=2))
    )
    flow_id = await api.start(name)
    async with running(worker):
        await wait_until(is_set(entered), what="step 1 in hand")
        await server.terminate()
        gate.set()
        await server.start()
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert [flow["actions"][a]["output"] for a in ("1", "2")] == [{"step": 1}, {"step": 2}]
    assert [flow["actions"][a]["attempts"] for a in ("1", "2")] == [1, 1]
    assert await deliveries(http, flow_id) == [(1, worker.worker_id), (1, worker.worker_id)]
    assert await retried_because(http, flow_id) == []
    assert logged(caplog, "POST /tasks/results failed") >= 1
    assert logged(caplog, "poll failed") >= 1


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
    tapped: TappedServer,
    worker_settings: Settings,
    wire: Wire,
) -> None:
    name = unique("it-once")
    first, second = f"{name}-reserve", f"{name}-charge"
    runs = 50
    lock = threading.Lock()
    effects: list[tuple[str, int, str]] = []  # (flow id, action id, token)
    workers = [new_worker(tapped.url, worker_settings, concurrency=4) for _ in range(2)]

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
    leased = [task for worker in workers for task in wire.leased(worker.worker_id)]
    leased_ids = [task["taskId"] for task in leased]
    assert len(leased_ids) == len(set(leased_ids)) == 2 * runs
    answers = wire.result_answers()
    assert sorted(a.task_id for a in answers if a.verb == "complete") == sorted(leased_ids)
    assert all(a.status == 200 and not a.held for a in answers)
    assert all(a.verb == "complete" for a in answers)
    by_action = {(task["flowId"], task["actionId"]) for task in leased}
    assert by_action == {(f, a) for f in flow_ids for a in (1, 2)}
    for flow_id in flow_ids:
        assert [attempt for attempt, _ in await deliveries(http, flow_id)] == [1, 1]
