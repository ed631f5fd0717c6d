"""Typed action inputs and outputs: a real worker against a real server validates the task's
input into the function's annotated type (a pydantic model, a TypedDict) before it runs, fails
the attempt as not retryable when it does not match, and serialises a model it returns."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from app.settings import Settings
from orchy import InvalidInputError, Task, Worker
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.typecheck import assert_strict_mypy_passes
from tests.helpers.waiting import unique
from tests.helpers.worker_wire import fast_worker, new_worker, running

ROOT = Path(__file__).resolve().parent.parent


class OrderInput(BaseModel):
    order: str
    amount: float = Field(gt=0)
    due: date


class Receipt(BaseModel):
    order: str
    total: float
    due: date  # a date: the JSON output holds its ISO text


class Item(TypedDict):
    sku: str
    count: int


class Opaque:
    """Neither a model nor a type pydantic knows."""


@pytest.fixture
def worker(server: ServerThread, settings: Settings) -> Worker:
    return new_worker(server.url, fast_worker(settings))


async def deliveries(http: httpx.AsyncClient, flow_id: str) -> list[int]:
    response = await http.get(f"/flow/{flow_id}/history")
    assert response.status_code == 200, response.text
    return [entry["attempt"] for entry in response.json()["history"] if entry["event"] == "RUNNING"]


async def test_a_model_input_is_validated_and_a_model_output_is_dumped(
    api: Api, worker: Worker
) -> None:
    name = unique("typed-order")
    received: list[object] = []

    @worker.action(name)
    def charge(input: OrderInput, task: Task) -> Receipt:
        received.append(input)
        return Receipt(order=f"{input.order}/{task.attempt}", total=input.amount * 2, due=input.due)

    await api.register(
        workflow(
            name,
            user(1, name, order="{$.input.order}", amount="{$.input.amount}", due="2030-01-31"),
        )
    )
    async with running(worker):
        flow_id = await api.start(name, {"order": "A-7", "amount": "12.5"})
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["output"] == {"order": "A-7/1", "total": 25.0, "due": "2030-01-31"}
    assert received[-1] == OrderInput(order="A-7", amount=12.5, due=date(2030, 1, 31))


async def test_a_typeddict_input_is_validated_and_coerced(api: Api, worker: Worker) -> None:
    name = unique("typed-item")
    received: list[Item] = []

    @worker.action(name)
    async def pick(item: Item) -> dict[str, Any]:
        received.append(item)
        return {"picked": item["count"] * 2}

    await api.register(workflow(name, user(1, name, sku="{$.input.sku}", count="{$.input.n}")))
    async with running(worker):
        flow_id = await api.start(name, {"sku": "X-1", "n": "3"})
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["output"] == {"picked": 6}
    assert received == [{"sku": "X-1", "count": 3}]  # "3" validated into an int


async def test_a_bad_input_fails_the_action_at_its_first_attempt_with_the_fields(
    api: Api, http: httpx.AsyncClient, worker: Worker
) -> None:
    name = unique("typed-bad")
    calls: list[OrderInput] = []

    @worker.action(name, retry_count=3, retry_after_seconds=0.02, retry_policy="FIXED")
    async def charge(input: OrderInput) -> Receipt:
        calls.append(input)
        return Receipt(order=input.order, total=input.amount, due=input.due)

    await api.register(
        workflow(name, user(1, name, amount="{$.input.amount}", due="{$.input.due}"))
    )
    async with running(worker):
        flow_id = await api.start(name, {"amount": "lots", "due": "2030-01-31"})
        flow = await api.wait_status(flow_id, "FAILED")

    action = flow["actions"]["1"]
    assert action["status"] == "FAILED"
    assert action["attempts"] == 1
    error = action["error"]
    assert error.startswith("InvalidInputError: input does not match OrderInput: "), error
    assert "order: Field required" in error
    assert "amount: Input should be a valid number" in error
    assert "'lots'" in error
    assert calls == []  # the function never ran
    assert await deliveries(http, flow_id) == [1]


async def test_an_output_that_does_not_match_its_type_fails_without_retry(
    api: Api, worker: Worker
) -> None:
    name = unique("typed-out")

    @worker.action(name, retry_count=3, retry_after_seconds=0.02)
    def wrong(input: dict[str, Any]) -> Receipt:
        return {"order": 1}  # type: ignore[return-value]  # what mypy would refuse

    await api.register(workflow(name, user(1, name)))
    async with running(worker):
        flow = await api.wait_status(await api.start(name, {}), "FAILED")

    action = flow["actions"]["1"]
    assert action["attempts"] == 1
    assert action["error"].startswith("InvalidOutputError: output cannot be serialised as Receipt")


async def test_a_returned_model_is_dumped_whatever_the_annotation(api: Api, worker: Worker) -> None:
    name = unique("typed-any")

    @worker.action(name)
    def untyped_return(input):  # type: ignore[no-untyped-def]
        return Receipt(order=input["order"], total=1, due=date(2031, 2, 3))

    await api.register(workflow(name, user(1, name, order="{$.input.order}")))
    async with running(worker):
        flow = await api.wait_status(await api.start(name, {"order": "B"}), "COMPLETED")

    assert flow["actions"]["1"]["output"] == {"order": "B", "total": 1.0, "due": "2031-02-03"}


async def test_an_unannotated_function_gets_the_input_as_is(api: Api, worker: Worker) -> None:
    name = unique("typed-none")
    received: list[object] = []

    @worker.action(name)
    def echo(input, task):  # type: ignore[no-untyped-def]
        received.append(input)
        return input["n"]

    assert worker.registry.get(name) is not None
    assert worker.registry.get(name).typed is None  # type: ignore[union-attr]
    await api.register(workflow(name, user(1, name, n="{$.input.n}")))
    async with running(worker):
        flow = await api.wait_status(await api.start(name, {"n": "7"}), "COMPLETED")

    assert flow["actions"]["1"]["output"] == {"result": "7"}
    assert received == [{"n": "7"}]


def test_a_plain_dict_annotation_keeps_the_untyped_behaviour(worker: Worker) -> None:
    @worker.action(unique("typed-plain"))
    def plain(input: dict[str, Any], task: Task) -> dict[str, Any] | None:
        return input

    assert all(action.typed is None for action in worker.registry)


def test_an_input_type_pydantic_cannot_validate_is_refused_at_registration(
    worker: Worker,
) -> None:
    with pytest.raises(TypeError, match="input annotation Opaque cannot be validated"):

        @worker.action(unique("typed-opaque"))
        def opaque(input: Opaque) -> None:
            return None


USER_CODE = """
from __future__ import annotations

from pydantic import BaseModel
from typing_extensions import TypedDict

from orchy import InvalidInputError, Task, Worker


class Order(BaseModel):
    order: str
    amount: float


class Receipt(BaseModel):
    order: str
    total: float


class Item(TypedDict):
    sku: str
    count: int


worker = Worker("http://127.0.0.1:1")


@worker.action("charge", retry_count=3)
def charge(input: Order, task: Task) -> Receipt:
    return Receipt(order=f"{input.order}/{task.task_id}", total=input.amount)


@worker.action("pick")
async def pick(item: Item) -> Receipt:
    return Receipt(order=item["sku"], total=float(item["count"]))


def total(task: Task) -> float:
    # The decorator keeps the function's own types.
    return charge(Order(order="A", amount=1.0), task).total
"""


def test_typed_actions_type_check_strictly(tmp_path: Path) -> None:
    assert_strict_mypy_passes(tmp_path, "typed_worker.py", USER_CODE)


class Many(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int


def test_the_message_names_three_fields_then_counts_the_rest(worker: Worker) -> None:
    name = unique("typed-many")

    @worker.action(name)
    def many(input: Many) -> None:
        return None

    typed = worker.registry.get(name).typed  # type: ignore[union-attr]
    assert typed is not None
    with pytest.raises(InvalidInputError) as raised:
        typed.load({"a": "x" * 200})
    message = str(raised.value)
    assert message.startswith("input does not match Many: a: Input should be a valid integer")
    assert "b: Field required; c: Field required (and 2 more)" in message
    assert len(message) < 300  # a long value is cut


async def test_a_callable_object_and_a_list_of_models(api: Api, worker: Worker) -> None:
    name = unique("typed-callable")

    class Split:
        async def __call__(self, item: Item) -> list[Receipt]:
            return [
                Receipt(order=f"{item['sku']}-{n}", total=n, due=date(2030, 1, 1))
                for n in range(item["count"])
            ]

    worker.action(name)(Split())
    await api.register(workflow(name, user(1, name, sku="S", count=2)))
    async with running(worker):
        flow = await api.wait_status(await api.start(name, {}), "COMPLETED")

    assert flow["actions"]["1"]["output"] == {
        "result": [
            {"order": "S-0", "total": 0.0, "due": "2030-01-01"},
            {"order": "S-1", "total": 1.0, "due": "2030-01-01"},
        ]
    }
