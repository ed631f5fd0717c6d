"""The worker library without a server: the decorator and its registry, outputs and errors,
the thread pool, the loader, the example workers, and what ``run`` refuses before it
connects. Its protocol against a real server: ``test_worker_library.py``."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import math
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from orchy import (
    NonRetryableError,
    RetryPolicy,
    Worker,
    load_worker,
)
from orchy.worker.client import describe_error
from orchy.worker.registry import normalize_output
from orchy.worker.threads import DaemonThreadPool

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
        from orchy import Worker
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
        from orchy import Worker
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


# -- starting, without a server ----------------------------------------------------------


async def test_a_server_url_without_http_scheme_is_refused() -> None:
    worker = Worker("localhost:8080", settings=Settings())
    worker.action("a")(lambda input: None)
    with pytest.raises(ValueError, match="server URL must start with http:// or https://"):
        await worker.run(asyncio.Event(), handle_signals=False)


def test_the_command_exits_with_a_message_for_a_bad_target(tmp_path: Path) -> None:
    from orchy.worker.cli import run_worker_command

    with pytest.raises(SystemExit, match="orchy worker: worker file not found"):
        run_worker_command(str(tmp_path / "nope.py"), None, None)
