"""forEach over real HTTP: a real server, and the worker library's workers running the
items (app/actions/for_each.py, the "each" and "item" ops of common.lua)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store.store import Store
from orchy import NonRetryableError, Worker, load_worker
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker, new_worker, running

EXAMPLES = Path(__file__).resolve().parent.parent / "workflows"


def for_each(
    action_id: int,
    body: str,
    nxt: dict[str, list[int]] | None = None,
    items: Any = "{$.input.items}",
    parameters: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body_def = {"type": "user", "name": body, "parameters": parameters or {"value": "{$.item}"}}
    return system(action_id, "forEach", nxt, items=items, body=body_def, **fields)


@asynccontextmanager
async def serving_worker(
    server: ServerThread,
    settings: Settings,
    name: str,
    handler: Callable[[dict[str, Any]], Any],
    concurrency: int = 8,
    **action: Any,
) -> AsyncIterator[Worker]:
    worker = new_worker(server.url, fast_worker(settings), concurrency=concurrency)
    worker.action(name, **action)(handler)
    async with running(worker):
        try:
            yield worker
        finally:  # whatever happened, no task stays held: the worker can stop
            if isinstance(handler, Gated):
                handler.open_all()


class Gated:
    """An async action whose every task waits at its own gate until the test opens it,
    counting the tasks it holds at once."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Event] = []
        self.holding = 0
        self.most = 0

    async def __call__(self, task_input: dict[str, Any]) -> dict[str, Any]:
        self.holding += 1
        self.most = max(self.most, self.holding)
        gate = asyncio.Event()
        self.gates.append(gate)
        try:
            await gate.wait()
        finally:
            self.holding -= 1
        return {"v": task_input["value"]}

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()

    async def wait_taken(self, count: int) -> None:
        async def taken() -> bool:
            return len(self.gates) == count

        await wait_until(taken, what=f"{count} items taken")


async def open_items(store: Store, flow_id: str) -> int:
    """How many of the run's for-each items are queued or running, read from the run."""
    fields = await store.read_run(flow_id)
    return sum(
        1
        for key, value in fields.items()
        if key.endswith(":p")
        and fields[key[:-1] + "s"] in ("QUEUED", "RUNNING")
        and value is not None
    )


async def test_items_run_in_order_with_item_and_index(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-order")
    body, after = f"{name}-double", f"{name}-after"
    await api.register(
        workflow(
            name,
            for_each(
                1,
                body,
                {"default": [2]},
                parameters={"value": "{$.item.v}", "at": "{$.index}", "flow": "{$.flow.id}"},
                concurrency=3,
            ),
            user(2, after, outputs="{$.1.output}"),
        )
    )
    items = [{"v": value} for value in (5, 1, 4, 2, 3, 9, 7)]
    flow_id = await api.start(name, {"items": items})

    def double(task_input: dict[str, Any]) -> dict[str, Any]:
        assert task_input["flow"] == flow_id
        return {"double": task_input["value"] * 2, "at": task_input["at"]}

    async with serving_worker(server, settings, body, double):
        task = await api.poll_one(after, wait=15)
    expected = [{"double": item["v"] * 2, "at": index} for index, item in enumerate(items)]
    assert task["input"] == {"outputs": expected}
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["status"] == "COMPLETED"
    assert flow["actions"]["1"]["output"] == expected
    assert flow["data"]["1"]["output"] == expected
    assert flow["actions"]["1"]["input"]["concurrency"] == 3


async def test_ten_thousand_items_complete(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-10k")
    body, after = f"{name}-noop", f"{name}-after"
    await api.register(
        workflow(
            name,
            for_each(1, body, {"default": [2]}, concurrency=500),
            user(2, after, outputs="{$.1.output}"),
        )
    )
    count = 10_000
    flow_id = await api.start(name, {"items": list(range(count))})
    started = time.monotonic()
    async with serving_worker(
        server, settings, body, lambda task_input: {"v": task_input["value"]}, concurrency=64
    ):
        # Waiting on the next action's task, not on GET /flow: each read of a run of 10,000
        # items costs the server what 10,000 results would.
        task = await api.poll_one(after, wait=120)
    print(f"10,000 items: {time.monotonic() - started:.2f} s")
    assert task["input"]["outputs"] == [{"v": value} for value in range(count)]
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["status"] == "COMPLETED"


async def test_no_more_than_concurrency_items_are_open_at_once(
    api: Api, server: ServerThread, settings: Settings, store: Store
) -> None:
    name = unique("fe-concurrency")
    body = f"{name}-held"
    await api.register(workflow(name, for_each(1, body, concurrency=2)))
    count = 6
    flow_id = await api.start(name, {"items": list(range(count))})
    held = Gated()
    async with serving_worker(server, settings, body, held, concurrency=8):
        for released in range(count):
            await held.wait_taken(released + min(2, count - released))
            # The item released last may still be sending its result: never more than 2.
            assert held.holding <= 2
            assert await open_items(store, flow_id) <= 2
            assert (await api.flow(flow_id))["actions"]["1"]["status"] == "WAITING"
            held.gates[released].set()
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert held.most == 2
    assert flow["actions"]["1"]["output"] == [{"v": value} for value in range(count)]


async def test_filter_keeps_the_items_it_holds_for_with_their_index(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-filter")
    body, after = f"{name}-item", f"{name}-after"
    await api.register(
        workflow(
            name,
            for_each(
                1,
                body,
                {"default": [2]},
                parameters={"amount": "{$.item.amount}", "at": "{$.index}"},
                filter="{$.item.amount} > 10",
            ),
            user(2, after, outputs="{$.1.output}"),
        )
    )
    amounts = [5, 20, 7, 30, 11]
    flow_id = await api.start(name, {"items": [{"amount": amount} for amount in amounts]})
    async with serving_worker(server, settings, body, lambda task_input: task_input):
        task = await api.poll_one(after, wait=15)
    assert task["input"]["outputs"] == [
        {"amount": 20, "at": 1},
        {"amount": 30, "at": 3},
        {"amount": 11, "at": 4},
    ]
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["input"]["items"] == 5
    assert flow["actions"]["1"]["input"]["selected"] == 3


@pytest.mark.parametrize(
    ("items", "item_filter"),
    [([], None), ([1, 2], "{$.item} > 5")],
    ids=["empty", "all-filtered-out"],
)
async def test_no_item_left_completes_at_once_with_an_empty_list(
    api: Api, items: list[int], item_filter: str | None
) -> None:
    name = unique("fe-empty")
    extra = {} if item_filter is None else {"filter": item_filter}
    await api.register(
        workflow(
            name,
            for_each(1, f"{name}-never", {"default": [2]}, **extra),
            user(2, f"{name}-after", outputs="{$.1.output}"),
        )
    )
    flow_id = await api.start(name, {"items": items})
    task = await api.poll_one(f"{name}-after")
    assert task["input"] == {"outputs": []}
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["status"] == "COMPLETED"
    assert flow["actions"]["1"]["output"] == []


async def test_items_that_are_not_a_list_fail_the_run_naming_what_was_found(api: Api) -> None:
    name = unique("fe-not-a-list")
    await api.register(workflow(name, for_each(1, f"{name}-never")))
    flow_id = await api.start(name, {"items": {"a": 1}})
    flow = await api.wait_status(flow_id, "FAILED")
    assert "action 1 (forEach)" in flow["reason"]
    assert "is an object, not a list" in flow["reason"]
    missing = await api.start(name, {})
    assert "is null, not a list" in (await api.wait_status(missing, "FAILED"))["reason"]


def failing_on(bad: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(task_input: dict[str, Any]) -> dict[str, Any]:
        if task_input["value"] == bad:
            raise NonRetryableError(f"cannot take {bad}")
        return {"v": task_input["value"]}

    return run


async def test_fail_mode_takes_the_error_branch_and_starts_no_further_item(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-fail")
    body, recover = f"{name}-item", f"{name}-recover"
    await api.register(
        workflow(
            name,
            for_each(1, body, {"error": [2]}, concurrency=1),
            user(2, recover, error="{$.1.output.error}"),
        )
    )
    flow_id = await api.start(name, {"items": [10, 11, 12, 13, 14]})
    async with serving_worker(server, settings, body, failing_on(12)):
        task = await api.poll_one(recover, wait=15)
    assert task["input"]["error"].startswith("item 2 failed: NonRetryableError: cannot take 12")
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert flow["actions"]["1"]["error"].startswith("item 2 failed")
    started = [entry for entry in await api.history(flow_id) if entry.get("item") is not None]
    assert [entry["item"] for entry in started] == [0, 1, 2]


async def test_fail_mode_without_an_error_branch_fails_the_run(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-fail-run")
    body = f"{name}-item"
    await api.register(workflow(name, for_each(1, body, concurrency=2)))
    flow_id = await api.start(name, {"items": [1, 2, 3, 4]})
    async with serving_worker(server, settings, body, failing_on(1)):
        flow = await api.wait_status(flow_id, "FAILED")
    assert flow["reason"].startswith(
        "action 1 (forEach) failed: item 0 failed: NonRetryableError: cannot take 1"
    )


async def test_collect_mode_keeps_each_failure_in_the_output(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-collect")
    body = f"{name}-item"
    await api.register(workflow(name, for_each(1, body, concurrency=2, onItemFailure="collect")))
    flow_id = await api.start(name, {"items": [1, 2, 3]})
    async with serving_worker(server, settings, body, failing_on(2)):
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == [
        {"v": 1},
        {"error": "NonRetryableError: cannot take 2 (after 1 attempt(s))"},
        {"v": 3},
    ]


async def test_an_item_is_retried_by_its_actions_settings(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-retry")
    body = f"{name}-flaky"
    await api.register(workflow(name, for_each(1, body, concurrency=3)))
    flow_id = await api.start(name, {"items": [1, 2, 3]})
    failed: list[int] = []

    def flaky(task_input: dict[str, Any]) -> dict[str, Any]:
        if task_input["value"] == 2 and not failed:
            failed.append(2)
            raise RuntimeError("flaky once")
        return {"v": task_input["value"]}

    async with serving_worker(
        server, settings, body, flaky, retry_count=2, retry_after_seconds=0.05, retry_policy="FIXED"
    ):
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == [{"v": 1}, {"v": 2}, {"v": 3}]
    history = await api.history(flow_id)
    assert [entry["event"] for entry in history].count("RETRY_SCHEDULED") == 1


async def test_a_paused_run_holds_item_results_and_applies_them_on_resume(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings, store: Store
) -> None:
    name = unique("fe-pause")
    body = f"{name}-held"
    await api.register(workflow(name, for_each(1, body, concurrency=2)))
    count = 4
    flow_id = await api.start(name, {"items": list(range(count))})
    held = Gated()
    async with serving_worker(server, settings, body, held, concurrency=8):
        await held.wait_taken(2)
        assert (await http.post(f"/flow/{flow_id}/pause")).status_code == 200
        held.gates[0].set()
        held.gates[1].set()

        async def both_held() -> bool:
            return [e["event"] for e in await api.history(flow_id)].count("HELD") == 2

        await wait_until(both_held, what="the two results held")
        assert len(held.gates) == 2  # nothing new started while paused
        assert (await http.post(f"/flow/{flow_id}/resume")).status_code == 200
        await held.wait_taken(4)
        held.gates[2].set()
        held.gates[3].set()
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == [{"v": value} for value in range(count)]


async def test_terminating_a_run_in_the_middle_of_a_for_each_starts_nothing_more(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings, store: Store
) -> None:
    name = unique("fe-terminate")
    body = f"{name}-held"
    await api.register(workflow(name, for_each(1, body, concurrency=2)))
    flow_id = await api.start(name, {"items": list(range(5))})
    held = Gated()
    async with serving_worker(server, settings, body, held, concurrency=8):
        await held.wait_taken(2)
        assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 200
        held.gates[0].set()
        held.gates[1].set()
        await wait_until(lambda: _zero(held), what="the held items answered")
    flow = await api.flow(flow_id)
    assert flow["status"] == "TERMINATED"
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert len(held.gates) == 2
    assert await open_items(store, flow_id) == 0


async def _zero(held: Gated) -> bool:
    return held.holding == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"items": 3}, "items"),
        ({"items": "not a reference"}, "items"),
        ({"items": "{$.input..[}"}, "items"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"concurrency": 1001}, "concurrency"),
        ({"onItemFailure": "ignore"}, "onItemFailure"),
        ({"filter": "{$.item} >"}, "filter"),
        ({"filter": 3}, "filter"),
        ({"body": None}, "body"),
        ({"body": {"type": "user"}}, "body.name"),
        ({"body": {"type": "system", "name": "x"}}, "body.type"),
        ({"body": {"type": "user", "name": "x", "parameters": []}}, "body.parameters"),
        ({"body": {"type": "user", "name": "x", "parameters": {"a": "{$..[}"}}}, "parameters"),
        ({"body": {"type": "user", "name": "x", "retries": 3}}, "retries"),
    ],
)
async def test_a_bad_for_each_is_refused_naming_the_action_and_the_field(
    http: httpx.AsyncClient, fields: dict[str, Any], named: str
) -> None:
    action = {
        "id": 1,
        "type": "system",
        "name": "forEach",
        "items": "{$.input.items}",
        "body": {"type": "user", "name": "x"},
        **fields,
    }
    response = await http.post("/metadata/workflow", json=workflow(unique("fe-bad"), action))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "action 1 (forEach)" in error and named in error, error


async def test_a_for_each_branch_other_than_default_and_error_is_refused(
    http: httpx.AsyncClient,
) -> None:
    definition = workflow(
        unique("fe-branch"),
        for_each(1, "x", {"done": [2]}),
        user(2, "y"),
    )
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422
    assert "action 1 (forEach): next.done" in response.json()["error"]


async def test_an_item_whose_lease_expires_is_retried(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-lease")
    body = f"{name}-item"
    definition = {
        "name": body,
        "retryCount": 1,
        "retryAfterSeconds": 0.05,
        "retryPolicy": "FIXED",
        "timeoutSeconds": 0.3,
    }
    assert (await http.post("/metadata/action", json=definition)).status_code == 200
    await api.register(workflow(name, for_each(1, body, concurrency=1)))
    flow_id = await api.start(name, {"items": [1, 2]})
    dropped = await api.poll_one(body)  # taken, never answered
    assert dropped["taskId"].endswith(".i")
    async with serving_worker(server, settings, body, lambda task_input: task_input):
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == [{"value": 1}, {"value": 2}]
    retries = [e for e in await api.history(flow_id) if e["event"] == "RETRY_SCHEDULED"]
    assert [(e["seq"], e["error"].startswith("lease expired")) for e in retries] == [(2, True)]
    late = await api.complete(dropped["taskId"], {"late": True})
    assert late.status_code == 409


async def test_item_results_never_read_the_whole_run(
    api: Api, server: ServerThread, settings: Settings, redis_client: Any
) -> None:
    """Each item's result reads its execution (HMGET), not the run's every item (HGETALL):
    Redis's own count of HGETALL calls stays flat however many items there are."""
    name = unique("fe-reads")
    body, after = f"{name}-noop", f"{name}-after"
    await api.register(
        workflow(name, for_each(1, body, {"default": [2]}, concurrency=50), user(2, after))
    )
    count = 300

    async def calls() -> tuple[int, int]:
        stats = await redis_client.info("commandstats")
        return tuple(  # type: ignore[return-value]
            int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
            for command in ("hgetall", "hmget")
        )

    whole_before, narrow_before = await calls()
    await api.start(name, {"items": list(range(count))})
    async with serving_worker(server, settings, body, lambda task_input: {}, concurrency=16):
        await api.poll_one(after, wait=30)
    whole, narrow = await calls()
    # The for-each's end reads the run once, for its output (a few more reads leave room for
    # other tests' timers firing meanwhile; reading the run for each batch of results made
    # 27 here); each result reads its item.
    assert whole - whole_before < 10
    assert narrow - narrow_before >= count


async def test_the_for_each_example_runs_with_its_worker(api: Api, server: ServerThread) -> None:
    folder = EXAMPLES
    definition = json.loads((folder / "for_each_orders.json").read_text())
    definition["name"] = unique(definition["name"])
    await api.register(definition)
    orders = json.loads((folder / "for_each_orders.input.json").read_text())
    orders["orders"].append({"amount": 99})  # no id: its charge fails, and is collected
    worker = load_worker(str(folder / "for_each_orders_worker.py"))
    worker.server_url = server.url
    flow_id = await api.start(definition["name"], orders)
    async with running(worker):
        flow = await api.wait_status(flow_id, "COMPLETED")
    charges = [
        {"charged": "b", "position": 1},
        {"charged": "c", "position": 2},
        {"error": "NonRetryableError: order 3 has no id (after 1 attempt(s))"},
    ]
    assert flow["actions"]["1"]["output"] == charges
    assert flow["actions"]["2"]["output"] == {"sent": 3}


async def test_a_for_each_in_a_loop_runs_its_items_again_in_each_pass(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("fe-loop")
    body, after = f"{name}-item", f"{name}-after"
    loop = system(1, "while", {"body": [2], "default": [3]}, condition="{$.1.output.iteration} < 2")
    items = for_each(
        2,
        body,
        {"default": [1]},
        parameters={"v": "{$.item}", "pass": "{$.1.output.iteration}"},
        concurrency=2,
    )
    await api.register(workflow(name, loop, items, user(3, after, outputs="{$.2.output}")))
    flow_id = await api.start(name, {"items": ["a", "b", "c"]})
    async with serving_worker(server, settings, body, lambda task_input: task_input):
        task = await api.poll_one(after, wait=15)
    assert task["input"]["outputs"] == [{"v": v, "pass": 2} for v in ("a", "b", "c")]
    history = await api.history(flow_id)
    assert [e["item"] for e in history if e.get("item") is not None] == [0, 1, 2] * 2
