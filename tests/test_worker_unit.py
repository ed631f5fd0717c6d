"""The worker library without the Orchy server: decorator, outputs, loader, and the HTTP
protocol against a small fake server (a real HTTP server on a free port, no mocks)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.settings import Settings
from app.worker import (
    ActionRegistrationError,
    NonRetryableError,
    RetryPolicy,
    Task,
    Worker,
    load_worker,
)
from app.worker.client import describe_error
from app.worker.registry import normalize_output
from app.worker.threads import DaemonThreadPool

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
WAIT_LIMIT_SECONDS = 10.0


# -- decorator and registry ---------------------------------------------------------------


def test_the_decorator_registers_the_function_and_returns_it_unchanged() -> None:
    worker = Worker()

    def query(input: dict[str, Any]) -> dict[str, Any]:
        return {"echo": input}

    assert worker.action("query-db")(query) is query
    action = worker.registry.get("query-db")
    assert action is not None
    assert action.func is query
    assert not action.is_async
    assert worker.action_names == ["query-db"]


def test_async_functions_and_async_callables_are_detected() -> None:
    worker = Worker()

    async def coroutine_function(input: dict[str, Any]) -> None:
        return None

    class AsyncCallable:
        async def __call__(self, input: dict[str, Any]) -> None:
            return None

    worker.action("a")(coroutine_function)
    worker.action("b")(AsyncCallable())
    worker.action("c")(functools.partial(coroutine_function))
    worker.action("d")(lambda input: input)
    assert [worker.registry.get(n).is_async for n in "abcd"] == [  # type: ignore[union-attr]
        True,
        True,
        True,
        False,
    ]


def test_an_action_name_is_registered_once() -> None:
    worker = Worker()
    worker.action("sendSms")(lambda input: None)
    with pytest.raises(ValueError, match="'sendSms' is already registered"):
        worker.action("sendSms")(lambda input: None)


def test_the_decorator_needs_a_name() -> None:
    worker = Worker()

    def send(input: dict[str, Any]) -> None:
        return None

    with pytest.raises(TypeError, match="give the action name"):
        worker.action(send)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        worker.action(" ")(send)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry_count": -1}, "retry_count must be an int >= 0"),
        ({"retry_count": 1.5}, "retry_count must be an int >= 0"),
        ({"retry_count": True}, "retry_count must be an int >= 0"),
        ({"retry_after_seconds": -0.1}, "retry_after_seconds must be a number >= 0"),
        ({"retry_after_seconds": math.inf}, "retry_after_seconds must be a number >= 0"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a number > 0"),
        ({"poll_timeout_seconds": 0}, "poll_timeout_seconds must be a number > 0"),
        ({"poll_timeout_seconds": math.nan}, "poll_timeout_seconds must be a number > 0"),
        ({"retry_policy": "RANDOM"}, "retry_policy must be one of FIXED, LINEAR, EXPONENTIAL"),
    ],
)
def test_bad_action_settings_are_refused_naming_the_action(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"action 'query-db': {message}"):
        Worker().action("query-db", **options)


def test_the_definition_holds_the_name_and_only_the_settings_given() -> None:
    worker = Worker()
    worker.action(
        "query-db",
        retry_count=3,
        retry_after_seconds=1.0,
        retry_policy="fixed",
        timeout_seconds=30.0,
    )(lambda input: None)
    worker.action("sendSms", retry_policy=RetryPolicy.LINEAR)(lambda input: None)
    worker.action("charge", poll_timeout_seconds=120)(lambda input: None)
    worker.action("sendEmail")(lambda input: None)
    definitions = {a.name: (a.options.given, a.definition()) for a in worker.registry}
    assert definitions == {
        "query-db": (
            True,
            {
                "name": "query-db",
                "retryCount": 3,
                "retryAfterSeconds": 1.0,
                "retryPolicy": "FIXED",
                "timeoutSeconds": 30.0,
            },
        ),
        "sendSms": (True, {"name": "sendSms", "retryPolicy": "LINEAR"}),
        "charge": (True, {"name": "charge", "pollTimeoutSeconds": 120}),
        "sendEmail": (False, {"name": "sendEmail"}),
    }


@pytest.mark.parametrize("concurrency", [0, -1, True, 1.5])
def test_concurrency_must_be_a_positive_int(concurrency: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        Worker(concurrency=concurrency)


async def test_a_worker_without_actions_does_not_run() -> None:
    with pytest.raises(ValueError, match="no actions"):
        await Worker().run(asyncio.Event(), handle_signals=False)


# -- outputs and errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"a": 1}, {"a": 1}),
        (42, {"result": 42}),
        ("ok", {"result": "ok"}),
        ([1, 2], {"result": [1, 2]}),
        (False, {"result": False}),
    ],
)
def test_outputs_are_normalised_to_an_object(value: Any, expected: dict[str, Any]) -> None:
    assert normalize_output(value) == expected


def test_errors_are_described_by_type_and_message() -> None:
    assert describe_error(ValueError("boom")) == "ValueError: boom"
    assert describe_error(NonRetryableError("bad phone")) == "NonRetryableError: bad phone"
    assert describe_error(KeyError()) == "KeyError"


async def test_the_thread_pool_runs_in_threads_with_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("caller")
    pool = DaemonThreadPool(2, name="test-pool")
    try:
        seen = await pool.run(lambda: (threading.current_thread().daemon, var.get()))
        assert seen == (True, "caller")
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 / 0)
    finally:
        pool.shutdown()


# -- loader -------------------------------------------------------------------------------


def write_module(folder: Path, source: str) -> str:
    name = f"orchy_test_workers_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture
def module_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_load_a_worker_from_a_file_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    worker = load_worker("workflows/notification_worker.py")
    assert worker.action_names == ["query-db", "sendSms", "sendEmail", "sendWahtsapp"]
    assert load_worker("workflows/notification_worker.py") is worker
    assert load_worker(f"{WORKFLOWS / 'notification_worker.py'}:worker") is worker


def test_load_a_worker_from_module_and_attribute(module_folder: Path) -> None:
    name = write_module(
        module_folder,
        """
        from app.worker import Worker
        first = Worker()
        second = Worker()
        class Holder:
            worker = Worker()
        """,
    )
    module = sys.modules.get(name) or __import__(name)
    assert load_worker(f"{name}:second") is module.second
    assert load_worker(f"{name}:Holder.worker") is module.Holder.worker
    with pytest.raises(ValueError, match=r"several Workers \(first, second\)"):
        load_worker(name)


def test_a_module_with_one_worker_needs_no_attribute(module_folder: Path) -> None:
    name = write_module(
        module_folder,
        """
        from app.worker import Worker
        worker = Worker()
        alias = worker
        """,
    )
    assert load_worker(name) is sys.modules[name].worker


@pytest.mark.parametrize(
    ("source", "suffix", "message"),
    [
        ("x = 1\n", "", "defines no Worker"),
        ("x = 1\n", ":worker", "has no attribute 'worker'"),
        ("x = 1\n", ":x", r":x is a int, not a Worker"),
        ("import orchy_no_such_dependency\n", "", "cannot import .*orchy_no_such_dependency"),
        ("x = 1\n", ":", "nothing after ':'"),
    ],
)
def test_loader_errors_say_what_is_wrong(
    module_folder: Path, source: str, suffix: str, message: str
) -> None:
    name = write_module(module_folder, source)
    with pytest.raises(ValueError, match=message):
        load_worker(f"{name}{suffix}")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("orchy_no_such_module:worker", "worker module not found: 'orchy_no_such_module'"),
        ("app.no_such_module", "worker module not found: 'app.no_such_module'"),
        ("no/such/file.py", "worker file not found: no/such/file.py"),
        ("missing_worker.py:worker", "worker file not found"),
        ("  ", "no worker given"),
    ],
)
def test_missing_targets_are_reported(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_worker(target)


# -- the example workers and workflows ----------------------------------------------------


def example(name: str) -> Worker:
    return load_worker(str(WORKFLOWS / name))


def call(worker: Worker, action: str, input: dict[str, Any]) -> Any:
    registered = worker.registry.get(action)
    assert registered is not None
    result = registered.func(input)
    return asyncio.run(result) if registered.is_async else result


@pytest.mark.parametrize(
    ("user_id", "gender", "age"), [(1234, "MALE", 25), (42, "FEMALE", 30), (999, "MALE", 25)]
)
def test_the_notification_demo_data_depends_on_the_user(
    user_id: int, gender: str, age: int
) -> None:
    output = call(example("notification_worker.py"), "query-db", {"userId": user_id})
    assert output["user"]["id"] == user_id
    assert (output["user"]["gender"], output["user"]["age"]) == (gender, age)
    assert output["phone"] == output["user"]["phone"]
    assert output["email"] == f"user{user_id}@example.com"


def test_the_notification_senders_answer_who_they_sent_to() -> None:
    worker = example("notification_worker.py")
    assert call(worker, "sendSms", {"phoneNumber": "+1", "message": "hi"}) == {
        "sent": True,
        "to": "+1",
    }
    assert call(worker, "sendEmail", {"to": "a@b.c"}) == {"sent": True, "to": "a@b.c"}
    assert call(worker, "sendWahtsapp", {"phoneNumber": "+2"}) == {"sent": True, "to": "+2"}
    with pytest.raises(NonRetryableError):
        call(worker, "query-db", {"userId": "abc"})


@pytest.mark.parametrize("file", ["parallel_join_worker.py", "failure_edge_worker.py"])
def test_both_charge_card_actions_decline_large_amounts(file: str) -> None:
    worker = example(file)
    assert call(worker, "charge-card", {"orderId": "A-1", "amount": 50}) == {
        "chargeId": "ch-A-1",
        "amount": 50,
    }
    with pytest.raises(NonRetryableError, match="card declined"):
        call(worker, "charge-card", {"orderId": "A-2", "amount": 5000})


def test_the_parallel_join_actions_chain() -> None:
    worker = example("parallel_join_worker.py")
    order = call(worker, "fetch-order", {"orderId": "A-1"})
    charge = call(worker, "charge-card", {"orderId": "A-1", "amount": order["total"]})
    stock = call(worker, "reserve-stock", {"orderId": "A-1", "items": order["items"]})
    shipped = call(
        worker,
        "ship-order",
        {"orderId": "A-1", "chargeId": charge["chargeId"], "reservationId": stock["reservationId"]},
    )
    assert shipped["shipped"] is True
    assert (shipped["chargeId"], shipped["reservationId"]) == ("ch-A-1", "res-A-1")


@pytest.mark.parametrize(
    ("definition", "worker_file"),
    [
        ("parallel_join.json", "parallel_join_worker.py"),
        ("failure_edge.json", "failure_edge_worker.py"),
        ("notificationWorkflow.json", "notification_worker.py"),
    ],
)
def test_example_definitions_are_well_formed_and_served(definition: str, worker_file: str) -> None:
    data = json.loads((WORKFLOWS / definition).read_text())
    actions = {a["id"]: a for a in data["actions"]}
    assert len(actions) == len(data["actions"])
    assert all(isinstance(i, int) for i in actions)
    assert data["rootAction"] in actions
    reached, todo = set(), [data["rootAction"]]
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        reached.add(current)
        for ids in actions[current].get("next", {}).values():
            assert all(i in actions for i in ids), f"{definition}: unknown id in {ids}"
            todo.extend(ids)
    assert reached == set(actions)
    user_actions = {a["name"] for a in actions.values() if a["type"] == "user"}
    assert user_actions == set(example(worker_file).action_names)


# -- the HTTP protocol, against a fake server ---------------------------------------------


OK = 200
SERVER_ERROR = 500


class FakeOrchy:
    """Just enough of SPEC section 5 to drive a worker: a task queue and scripted answers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[dict[str, Any]] = []
        self.handed: list[dict[str, Any]] = []  # tasks leased in answers to results
        self.hold_results = False  # answers to results wait for results_released
        self.results_released = threading.Event()
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, list[int]] = {}  # path -> statuses to answer first
        self.max_hold_seconds = 1.0
        self.url = ""
        self.app = Starlette(
            routes=[
                Route("/tasks/poll", self.poll, methods=["POST"]),
                Route("/tasks/results", self.results, methods=["POST"]),
                Route("/tasks/{task_id}/{verb}", self.report, methods=["POST"]),
                Route("/metadata/action", self.report, methods=["POST"]),
            ]
        )

    def add_tasks(self, name: str, *inputs: Any, handed: bool = False) -> list[str]:
        """Tasks for polls, or with ``handed`` for answers to results that offer ``next``."""
        ids = []
        with self.lock:
            for input in inputs:
                task_id = f"t-{uuid.uuid4().hex[:8]}"
                (self.handed if handed else self.queue).append(
                    {
                        "taskId": task_id,
                        "flowId": "f-1",
                        "actionId": 1,
                        "name": name,
                        "attempt": 1,
                        "input": input,
                    }
                )
                ids.append(task_id)
        return ids

    def answer(self, path: str, *statuses: int) -> None:
        with self.lock:
            self.answers[path] = list(statuses)

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [body for p, body in self.calls if p == path]

    def _record(self, path: str, body: Any) -> int | None:
        with self.lock:
            self.calls.append((path, body))
            scripted = self.answers.get(path)
            return scripted.pop(0) if scripted else None

    async def poll(self, request: Request) -> JSONResponse:
        body = await request.json()
        status = self._record("/tasks/poll", body)
        if status is not None:
            return JSONResponse({"error": "scripted"}, status_code=status)
        deadline = time.monotonic() + min(body["waitSeconds"], self.max_hold_seconds)
        while True:
            with self.lock:
                tasks = self.queue[: body["max"]]
                del self.queue[: body["max"]]
            if tasks or time.monotonic() >= deadline:
                return JSONResponse({"tasks": tasks})
            await asyncio.sleep(0.01)

    async def results(self, request: Request) -> JSONResponse:
        """A batch is recorded as the single ``/complete`` and ``/fail`` calls it stands for;
        a scripted 5xx for any of them fails the whole request, as a server error would."""
        statuses = []
        body = await request.json()
        self._record("next", body.get("next"))
        for item in body["results"]:
            result = dict(item)
            task_id = result.pop("taskId")
            verb = "complete" if "output" in result else "fail"
            statuses.append((task_id, self._record(f"/tasks/{task_id}/{verb}", result)))
        for _, status in statuses:
            if status is not None and status >= SERVER_ERROR:
                return JSONResponse({"error": f"scripted {status}"}, status_code=status)
        answers = [
            {
                "taskId": task_id,
                "status": status or OK,
                "error": None if status is None else f"scripted {status}",
            }
            for task_id, status in statuses
        ]
        if self.hold_results:
            await asyncio.to_thread(self.results_released.wait, WAIT_LIMIT_SECONDS)
        offer, tasks = body.get("next"), []
        if offer is not None:
            with self.lock:
                tasks = [task for task in self.handed if task["name"] in offer["actions"]]
                tasks = tasks[: offer["max"]]
                self.handed = [task for task in self.handed if task not in tasks]
        return JSONResponse({"results": answers, "tasks": tasks})

    async def report(self, request: Request) -> JSONResponse:
        status = self._record(request.url.path, await request.json())
        if status is None:
            return JSONResponse({}, status_code=200)
        return JSONResponse({"error": f"scripted {status}"}, status_code=status)


def serve_in_thread(app: Any) -> tuple[str, Callable[[], None]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while not server.started:
        assert time.monotonic() < deadline, "the fake server did not start"
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = server.force_exit = True
        thread.join(WAIT_LIMIT_SECONDS)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def fake() -> Iterator[FakeOrchy]:
    server = FakeOrchy()
    server.url, stop = serve_in_thread(server.app)
    yield server
    stop()


def fast_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "worker_poll_wait_seconds": 0.3,
        "worker_heartbeat_seconds": 0.1,
        "worker_http_retries": 3,
        "worker_http_backoff_seconds": 0.01,
        "worker_http_timeout_seconds": 2.0,
        "worker_shutdown_grace_seconds": 3.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, handle_signals=False))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_LIMIT_SECONDS)


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_definitions_are_posted_for_actions_with_settings(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings())
    worker.action("query-db", retry_count=2, timeout_seconds=5.0)(lambda input: None)
    worker.action("sendSms")(lambda input: None)
    async with running(worker):
        await eventually(lambda: bool(fake.bodies("/tasks/poll")))
    assert fake.bodies("/metadata/action") == [
        {"name": "query-db", "retryCount": 2, "timeoutSeconds": 5.0}
    ]
    poll = fake.bodies("/tasks/poll")[0]
    assert poll == {
        "workerId": worker.worker_id,
        "actions": ["query-db", "sendSms"],
        "max": fast_settings().worker_concurrency,  # as many as it has free slots
        "waitSeconds": 0.3,
    }


async def test_a_refused_definition_stops_the_worker(fake: FakeOrchy) -> None:
    fake.answer("/metadata/action", 422)
    worker = Worker(fake.url, settings=fast_settings())
    worker.action("query-db", retry_count=0)(lambda input: None)
    with pytest.raises(ActionRegistrationError, match="'query-db' \\(422\\): scripted 422"):
        await worker.run(asyncio.Event(), handle_signals=False)
    assert not fake.bodies("/tasks/poll")


async def test_results_and_errors_are_reported(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings())

    @worker.action("sync")
    def sync_action(input: dict[str, Any]) -> Any:
        if input.get("fail") == "fatal":
            raise NonRetryableError("bad phone")
        if input.get("fail") == "boom":
            raise ValueError("boom")
        if input.get("fail") == "nan":
            return {"x": math.nan}
        return input.get("value")

    @worker.action("async")
    async def async_action(input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"doubled": input["n"] * 2}

    ok, none, scalar, fatal, boom, nan = fake.add_tasks(
        "sync",
        {"value": {"a": 1}},
        {"value": None},
        {"value": 7},
        {"fail": "fatal"},
        {"fail": "boom"},
        {"fail": "nan"},
    )
    (doubled,) = fake.add_tasks("async", {"n": 21})
    every = [ok, none, scalar, fatal, boom, nan, doubled]
    async with running(worker):
        await eventually(
            lambda: all(
                fake.bodies(f"/tasks/{i}/complete") or fake.bodies(f"/tasks/{i}/fail")
                for i in every
            )
        )
    results = {p.split("/")[2]: (p.split("/")[3], b) for p, b in fake.calls if "/tasks/t-" in p}
    assert results == {
        ok: ("complete", {"output": {"a": 1}}),
        none: ("complete", {"output": {}}),
        scalar: ("complete", {"output": {"result": 7}}),
        doubled: ("complete", {"output": {"doubled": 42}}),
        fatal: ("fail", {"error": "NonRetryableError: bad phone", "retryable": False}),
        boom: ("fail", {"error": "ValueError: boom", "retryable": True}),
        nan: (
            "fail",
            {
                "error": "UnencodableBodyError: not JSON serialisable: "
                "Out of range float values are not JSON compliant",
                "retryable": False,
            },
        ),
    }


@pytest.mark.parametrize("status", [409, 404])
async def test_a_stale_or_unknown_result_is_dropped_not_retried(
    fake: FakeOrchy, status: int
) -> None:
    worker = Worker(fake.url, settings=fast_settings())
    worker.action("a")(lambda input: {"ok": True})
    (task_id,) = fake.add_tasks("a", {})
    fake.answer(f"/tasks/{task_id}/complete", status)
    async with running(worker):
        await eventually(lambda: bool(fake.bodies(f"/tasks/{task_id}/complete")))
        await asyncio.sleep(0.2)
    assert len(fake.bodies(f"/tasks/{task_id}/complete")) == 1
    assert not fake.bodies(f"/tasks/{task_id}/fail")


async def test_server_errors_on_results_are_retried(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings())
    worker.action("a")(lambda input: {"ok": True})
    (task_id,) = fake.add_tasks("a", {})
    fake.answer(f"/tasks/{task_id}/complete", 503, 500)
    async with running(worker):
        await eventually(lambda: len(fake.bodies(f"/tasks/{task_id}/complete")) == 3)
    assert fake.bodies(f"/tasks/{task_id}/complete") == [{"output": {"ok": True}}] * 3


@pytest.mark.parametrize("status", [413, 422])
async def test_a_refused_output_is_reported_as_a_final_failure(
    fake: FakeOrchy, status: int
) -> None:
    worker = Worker(fake.url, settings=fast_settings())
    worker.action("a")(lambda input: {"big": "x"})
    (task_id,) = fake.add_tasks("a", {})
    fake.answer(f"/tasks/{task_id}/complete", status)
    async with running(worker):
        await eventually(lambda: bool(fake.bodies(f"/tasks/{task_id}/fail")))
    assert fake.bodies(f"/tasks/{task_id}/fail") == [
        {
            "error": f"OutputRejected: the server answered {status}: scripted {status}",
            "retryable": False,
        }
    ]


async def test_a_failed_poll_is_followed_by_a_new_one(fake: FakeOrchy) -> None:
    fake.answer("/tasks/poll", 500, 503)
    worker = Worker(fake.url, settings=fast_settings())
    worker.action("a")(lambda input: {"ok": True})
    (task_id,) = fake.add_tasks("a", {})
    async with running(worker):
        await eventually(lambda: bool(fake.bodies(f"/tasks/{task_id}/complete")))
    assert len(fake.bodies("/tasks/poll")) >= 3


class InHand:
    """A "slow" action that counts how many of its calls run at once."""

    def __init__(self, worker: Worker, seconds: float) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.seconds = seconds
        worker.action("slow")(self.run)

    def run(self, input: dict[str, Any]) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1


async def test_no_more_tasks_than_slots_are_in_hand(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, concurrency=2, settings=fast_settings())
    in_hand = InHand(worker, 0.05)
    ids = fake.add_tasks("slow", *({"i": i} for i in range(7)))
    async with running(worker):
        await eventually(lambda: all(fake.bodies(f"/tasks/{i}/complete") for i in ids))
    assert in_hand.most == 2
    asked = [body["max"] for body in fake.bodies("/tasks/poll")]
    assert set(asked) <= {1, 2}
    assert asked[0] == 2


async def test_results_hand_their_slots_to_the_tasks_leased_in_the_answer(
    fake: FakeOrchy,
) -> None:
    worker = Worker(fake.url, concurrency=2, settings=fast_settings())
    in_hand = InHand(worker, 0.02)
    worker.action("other")(lambda input: None)
    polled = fake.add_tasks("slow", {"i": 0}, {"i": 1})
    handed = fake.add_tasks("slow", *({"i": i} for i in range(2, 8)), handed=True)
    async with running(worker):
        await eventually(lambda: all(fake.bodies(f"/tasks/{i}/complete") for i in handed))
    assert all(fake.bodies(f"/tasks/{i}/complete") for i in polled)
    assert in_hand.most <= 2
    offers = fake.bodies("next")
    assert offers and all(offer is not None for offer in offers)
    assert {(offer["workerId"], tuple(offer["actions"])) for offer in offers} == {
        (worker.worker_id, ("slow", "other"))
    }
    assert all(1 <= offer["max"] <= 2 for offer in offers)
    assert not fake.handed


async def test_a_task_handed_over_while_stopping_is_run_within_the_grace(
    fake: FakeOrchy,
) -> None:
    worker = Worker(fake.url, concurrency=1, settings=fast_settings())

    @worker.action("a")
    async def a(input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.2 if input.get("handed") else 0)
        return {}

    (first,) = fake.add_tasks("a", {})
    (handed,) = fake.add_tasks("a", {"handed": True}, handed=True)
    fake.hold_results = True
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop, handle_signals=False))
    await eventually(lambda: bool(fake.bodies(f"/tasks/{first}/complete")))
    stop.set()  # the answer to the first result, offering its slot, is still to come
    fake.results_released.set()
    await asyncio.wait_for(run, WAIT_LIMIT_SECONDS)
    assert fake.bodies(f"/tasks/{handed}/complete") == [{"output": {}}]


async def test_no_next_offer_when_switched_off(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings(worker_take_next=False))
    worker.action("a")(lambda input: None)
    fake.add_tasks("a", {}, handed=True)
    (task_id,) = fake.add_tasks("a", {})
    async with running(worker):
        await eventually(lambda: bool(fake.bodies(f"/tasks/{task_id}/complete")))
    assert fake.bodies("next") == [None]
    assert len(fake.handed) == 1


async def test_a_poll_never_asks_for_more_than_the_server_allows(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, concurrency=5, settings=fast_settings(poll_max_tasks=3))
    worker.action("a")(lambda input: None)
    async with running(worker):
        await eventually(lambda: bool(fake.bodies("/tasks/poll")))
    assert fake.bodies("/tasks/poll")[0]["max"] == 3


async def test_long_tasks_send_heartbeats_until_the_lease_is_lost(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings(worker_heartbeat_seconds=0.05))
    release = asyncio.Event()

    @worker.action("long")
    async def long(input: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {}

    first, second = fake.add_tasks("long", {}, {})
    fake.answer(f"/tasks/{second}/heartbeat", 409)
    async with running(worker):
        await eventually(lambda: len(fake.bodies(f"/tasks/{first}/heartbeat")) >= 3)
        release.set()
        await eventually(lambda: bool(fake.bodies(f"/tasks/{second}/complete")))
    assert fake.bodies(f"/tasks/{first}/heartbeat")[0] == {}
    assert len(fake.bodies(f"/tasks/{second}/heartbeat")) == 1


async def test_stopping_cancels_the_long_poll_at_once(fake: FakeOrchy) -> None:
    fake.max_hold_seconds = 30.0
    worker = Worker(fake.url, settings=fast_settings(worker_poll_wait_seconds=30.0))
    worker.action("a")(lambda input: None)
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop, handle_signals=False))
    await eventually(lambda: bool(fake.bodies("/tasks/poll")))
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(run, WAIT_LIMIT_SECONDS)
    assert time.monotonic() - started < 1.0


async def test_tasks_in_hand_finish_within_the_grace(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings())

    @worker.action("a")
    def a(input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.3)
        return {"done": True}

    (task_id,) = fake.add_tasks("a", {})
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop, handle_signals=False))
    await eventually(lambda: not fake.queue)
    stop.set()
    await asyncio.wait_for(run, WAIT_LIMIT_SECONDS)
    assert fake.bodies(f"/tasks/{task_id}/complete") == [{"output": {"done": True}}]
    assert fake.bodies("next") == [None]  # a stopping worker takes no new tasks


async def test_tasks_past_the_grace_are_abandoned(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings(worker_shutdown_grace_seconds=0.2))
    finished = asyncio.Event()

    @worker.action("a")
    async def a(input: dict[str, Any]) -> None:
        await asyncio.sleep(WAIT_LIMIT_SECONDS)
        finished.set()

    @worker.action("b")
    def b(input: dict[str, Any]) -> None:
        time.sleep(WAIT_LIMIT_SECONDS)

    ids = fake.add_tasks("a", {}) + fake.add_tasks("b", {})
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop, handle_signals=False))
    await eventually(lambda: not fake.queue)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(run, WAIT_LIMIT_SECONDS)
    assert time.monotonic() - started < 1.0
    assert not finished.is_set()
    assert not any(fake.bodies(f"/tasks/{i}/complete") for i in ids)


async def test_an_unreachable_server_is_polled_until_stopped() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    worker = Worker(f"http://127.0.0.1:{port}", settings=fast_settings())
    worker.action("a")(lambda input: None)
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop, handle_signals=False))
    await asyncio.sleep(0.3)
    assert not run.done()
    stop.set()
    await asyncio.wait_for(run, WAIT_LIMIT_SECONDS)


# -- the command, with real signals -------------------------------------------------------

SLOW_WORKER = """
import time
from app.worker import Worker

worker = Worker()

@worker.action("slow")
def slow(input):
    time.sleep(input["seconds"])
    return {"slept": input["seconds"]}
"""


def start_command(fake: FakeOrchy, folder: Path) -> subprocess.Popen[str]:
    (folder / "slow_worker.py").write_text(SLOW_WORKER)
    env = {
        **os.environ,
        "ORCHY_WORKER_POLL_WAIT_SECONDS": "0.3",
        "ORCHY_WORKER_HTTP_BACKOFF_SECONDS": "0.01",
        "ORCHY_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from app.worker.cli import run_worker_command; " + (
        "run_worker_command(sys.argv[1], sys.argv[2], 1)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, "slow_worker:worker", fake.url],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_a_signal_lets_the_task_in_hand_finish(fake: FakeOrchy, tmp_path: Path) -> None:
    (task_id,) = fake.add_tasks("slow", {"seconds": 0.5})
    process = start_command(fake, tmp_path)
    try:
        await eventually(lambda: not fake.queue)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=WAIT_LIMIT_SECONDS)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert fake.bodies(f"/tasks/{task_id}/complete") == [{"output": {"slept": 0.5}}]
    assert "SIGTERM: stopping" in output


async def test_a_second_signal_abandons_the_task_at_once(fake: FakeOrchy, tmp_path: Path) -> None:
    (task_id,) = fake.add_tasks("slow", {"seconds": WAIT_LIMIT_SECONDS})
    process = start_command(fake, tmp_path)
    try:
        await eventually(lambda: not fake.queue)
        process.send_signal(signal.SIGINT)
        await asyncio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        output, _ = await asyncio.to_thread(process.communicate, timeout=WAIT_LIMIT_SECONDS)
    finally:
        process.kill()
    assert time.monotonic() - started < WAIT_LIMIT_SECONDS / 2, output
    assert process.returncode == 0, output
    assert not fake.bodies(f"/tasks/{task_id}/complete")
    assert "abandoning task" in output


async def test_a_server_url_without_http_scheme_is_refused() -> None:
    worker = Worker("localhost:8080", settings=fast_settings())
    worker.action("a")(lambda input: None)
    with pytest.raises(ValueError, match="server URL must start with http:// or https://"):
        await worker.run(asyncio.Event(), handle_signals=False)


def test_the_command_exits_with_a_message_for_a_bad_target(tmp_path: Path) -> None:
    from app.worker.cli import run_worker_command

    with pytest.raises(SystemExit, match="orchy worker: worker file not found"):
        run_worker_command(str(tmp_path / "nope.py"), None, None)


async def test_a_function_with_two_arguments_gets_the_task(fake: FakeOrchy) -> None:
    worker = Worker(fake.url, settings=fast_settings())
    seen: list[tuple[Any, str, int]] = []

    @worker.action("sync-two")
    def sync_two(input: dict[str, Any], task: Task) -> dict[str, Any]:
        seen.append((input, task.task_id, task.attempt))
        return {}

    @worker.action("async-two")
    async def async_two(input: dict[str, Any], task: Task) -> dict[str, Any]:
        seen.append((input, task.task_id, task.attempt))
        return {}

    @worker.action("one")
    def one(input: dict[str, Any]) -> dict[str, Any]:
        return {"alone": True}

    (first,) = fake.add_tasks("sync-two", {"n": 1})
    (second,) = fake.add_tasks("async-two", {"n": 2})
    (third,) = fake.add_tasks("one", {"n": 3})
    async with running(worker):
        await eventually(lambda: bool(fake.bodies(f"/tasks/{third}/complete")))
        await eventually(lambda: len(seen) == 2)
    assert sorted(seen, key=lambda item: item[1] == second) == [
        ({"n": 1}, first, 1),
        ({"n": 2}, second, 1),
    ]
    assert fake.bodies(f"/tasks/{third}/complete") == [{"output": {"alone": True}}]
