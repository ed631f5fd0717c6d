"""forEach over real HTTP: a real server, and the worker library's workers running the
items (app/actions/for_each.py, the "each" and "item" ops of common.lua)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.settings import Settings
from app.store.store import Store
from app.worker import NonRetryableError, Worker
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker, new_worker, running


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
        yield worker


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
