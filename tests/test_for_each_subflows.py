"""forEach with a sub-workflow body over real HTTP: a real server, real workers running the
children's user actions (app/actions/for_each.py's SubflowBody, the "subeach" op and
start_item in common.lua, the spawn, cend, istep and kill timers of app/engine/children.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store.connection import client_for_url
from app.store.keys import Keys
from app.store.store import Store
from orchy import NonRetryableError
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until
from tests.test_for_each import Gated, serving_worker


def for_each_sub(
    action_id: int,
    child: str,
    nxt: dict[str, list[int]] | None = None,
    items: Any = "{$.input.items}",
    child_input: Any = None,
    version: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workflow": child,
        "input": {"value": "{$.item}", "position": "{$.index}"}
        if child_input is None
        else child_input,
    }
    if version is not None:
        body["version"] = version
    return system(action_id, "forEach", nxt, items=items, body=body, **fields)


async def register_child(api: Api, child: str, queue: str) -> None:
    """A child workflow: one user action of ``queue`` on its input; its output is the
    action's output and its position."""
    await api.register(
        workflow(
            child,
            user(1, queue, value="{$.input.value}", position="{$.input.position}"),
            output={"got": "{$.1.output}", "at": "{$.input.position}"},
        )
    )


@dataclass(frozen=True)
class Parent:
    """The names of a parent workflow registered by ``register_parent``."""

    name: str
    child: str

    @property
    def queue(self) -> str:
        """The child's user action."""
        return f"{self.child}-work"

    @property
    def after(self) -> str:
        """The parent's action after the for-each."""
        return f"{self.name}-after"


async def register_parent(api: Api, prefix: str, child_prefix: str, concurrency: int) -> Parent:
    """A parent workflow whose for-each (action 1) runs a child per item, at most
    ``concurrency`` at once, then action 2, a user action given the for-each's output; and
    its child (see ``register_child``)."""
    parent = Parent(unique(prefix), unique(child_prefix))
    await register_child(api, parent.child, parent.queue)
    await api.register(
        workflow(
            parent.name,
            for_each_sub(1, parent.child, {"default": [2]}, concurrency=concurrency),
            user(2, parent.after, outputs="{$.1.output}"),
        )
    )
    return parent


async def children_of(api: Api, flow_id: str) -> list[dict[str, Any]]:
    """The runs of the for-each's children, as GET /flow shows them."""
    return [await api.flow(link["flowId"]) for link in (await api.flow(flow_id))["children"]]


def most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most runs open at one moment, from their createdAt and finishedAt."""
    moments = []
    for run in runs:
        moments.append((run["createdAt"], 1))
        moments.append((run["finishedAt"], -1))
    open_now = most = 0
    for _, change in sorted(moments, key=lambda moment: (moment[0], moment[1])):
        open_now += change
        most = max(most, open_now)
    return most


async def open_children(store: Store, flow_id: str) -> int:
    """How many of the run's sub-workflow items wait for their child, read from the run."""
    fields = await store.read_run(flow_id)
    return sum(1 for key in fields if key.endswith(":p") and fields[key[:-1] + "s"] == "WAITING")


async def test_outputs_come_in_the_items_order(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    parent = await register_parent(api, "fes-order", "fes-ship", 3)
    name, child, queue, after = parent.name, parent.child, parent.queue, parent.after
    items = [5, 1, 4, 2, 3, 9, 7]
    flow_id = await api.start(name, {"items": items})
    async with serving_worker(server, settings, queue, lambda task: {"double": task["value"] * 2}):
        task = await api.poll_one(after, wait=30)
    expected = [{"got": {"double": value * 2}, "at": index} for index, value in enumerate(items)]
    assert task["input"] == {"outputs": expected}
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["status"] == "COMPLETED"
    assert flow["actions"]["1"]["output"] == expected
    assert flow["actions"]["1"]["input"]["body"] == {"workflow": child}
    assert "child" not in flow["actions"]["1"]
    assert flow["childrenCount"] == len(items)
    runs = await children_of(api, flow_id)
    assert [run["input"] for run in runs] == [
        {"value": value, "position": index} for index, value in enumerate(items)
    ]
    assert {run["name"] for run in runs} == {child}
    for run in runs:
        assert run["status"] == "COMPLETED"
        assert run["parent"] == {"flowId": flow_id, "actionId": 1}
    events = [entry["event"] for entry in await api.history(flow_id)]
    assert events.count("CHILD_STARTED") == len(items)
    assert events.count("CHILD_ENDED") == len(items)


async def test_a_pinned_version_runs_that_version(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name, child = unique("fes-version"), unique("fes-versioned")
    queue = f"{child}-work"
    await register_child(api, child, queue)
    await api.register(
        workflow(child, user(1, queue, value="{$.input.value}"), output={"second": True})
    )
    await api.register(
        workflow(
            name,
            for_each_sub(1, child, {"default": [2]}, version=1, items=[7]),
            for_each_sub(2, child, items=[8]),
        )
    )
    flow_id = await api.start(name)
    async with serving_worker(server, settings, queue, lambda task: {"v": task["value"]}):
        flow = await api.wait_status(flow_id, "COMPLETED", timeout=30)
    assert flow["actions"]["1"]["output"] == [{"got": {"v": 7}, "at": 0}]
    assert flow["actions"]["2"]["output"] == [{"second": True}]
    runs = await children_of(api, flow_id)
    links = flow["children"]
    assert [(run["version"], link["actionId"]) for run, link in zip(runs, links, strict=True)] == [
        (1, 1),
        (2, 2),
    ]


async def test_no_more_than_concurrency_children_are_open_at_once(
    api: Api, server: ServerThread, settings: Settings, store: Store
) -> None:
    name, child = unique("fes-conc"), unique("fes-held")
    queue = f"{child}-work"
    await register_child(api, child, queue)
    await api.register(workflow(name, for_each_sub(1, child, concurrency=2)))
    count = 6
    flow_id = await api.start(name, {"items": list(range(count))})
    held = Gated()
    async with serving_worker(server, settings, queue, held, concurrency=8):
        for released in range(count):
            await held.wait_taken(released + min(2, count - released))
            assert held.holding <= 2
            assert await open_children(store, flow_id) <= 2
            assert (await api.flow(flow_id))["actions"]["1"]["status"] == "WAITING"
            held.gates[released].set()
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert held.most == 2
    assert flow["actions"]["1"]["output"] == [
        {"got": {"v": value}, "at": value} for value in range(count)
    ]
    runs = await children_of(api, flow_id)
    assert len(runs) == count
    assert most_at_once(runs) == 2


async def test_a_failed_child_fails_the_for_each_in_fail_mode(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name, child = unique("fes-fail"), unique("fes-breaks")
    queue, report = f"{child}-work", f"{name}-report"
    await register_child(api, child, queue)
    await api.register(
        workflow(
            name,
            for_each_sub(1, child, {"error": [2]}, concurrency=1),
            user(2, report, error="{$.1.output.error}"),
        )
    )
    flow_id = await api.start(name, {"items": [1, 2, 3, 4]})

    def work(task: dict[str, Any]) -> dict[str, Any]:
        if task["value"] == 2:
            raise NonRetryableError("no stock")
        return {"v": task["value"]}

    async with serving_worker(server, settings, queue, work):
        task = await api.poll_one(report, wait=30)
    flow = await api.flow(flow_id)
    runs = await children_of(api, flow_id)
    assert [run["status"] for run in runs] == ["COMPLETED", "FAILED"]  # no item after it
    failed = runs[1]
    assert task["input"]["error"] == (
        f"item 1 failed: sub-workflow {child} run {failed['id']} FAILED: {failed['reason']}"
    )
    assert "no stock" in failed["reason"]
    assert flow["actions"]["1"]["status"] == "FAILED"


async def test_collect_puts_the_failed_childs_error_in_its_place(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name, child = unique("fes-collect"), unique("fes-some-fail")
    queue = f"{child}-work"
    await register_child(api, child, queue)
    await api.register(
        workflow(name, for_each_sub(1, child, concurrency=2, onItemFailure="collect"))
    )
    flow_id = await api.start(name, {"items": [1, 2, 3, 4]})

    def work(task: dict[str, Any]) -> dict[str, Any]:
        if task["value"] % 2 == 0:
            raise NonRetryableError(f"odd only, not {task['value']}")
        return {"v": task["value"]}

    async with serving_worker(server, settings, queue, work):
        flow = await api.wait_status(flow_id, "COMPLETED", timeout=30)
    runs = await children_of(api, flow_id)
    assert [run["status"] for run in runs] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]
    output = flow["actions"]["1"]["output"]
    assert output[0] == {"got": {"v": 1}, "at": 0}
    assert output[2] == {"got": {"v": 3}, "at": 2}
    for index in (1, 3):
        run = runs[index]
        assert output[index] == {
            "error": f"sub-workflow {child} run {run['id']} FAILED: {run['reason']}"
        }
        assert f"odd only, not {index + 1}" in run["reason"]


async def test_terminating_the_parent_terminates_its_running_children(
    api: Api, store: Store
) -> None:
    name, child = unique("fes-term"), unique("fes-never")
    await register_child(api, child, f"{child}-nobody-polls")
    await api.register(workflow(name, for_each_sub(1, child, concurrency=3)))
    flow_id = await api.start(name, {"items": list(range(10))})

    async def three_started() -> bool:
        return len((await api.flow(flow_id))["children"]) == 3

    await wait_until(three_started, what="three children started")
    response = await api.http.post(f"/flow/{flow_id}/terminate", json={"reason": "enough"})
    assert response.status_code == 200, response.text
    links = (await api.flow(flow_id))["children"]
    for link in links:
        run = await api.wait_status(link["flowId"], "TERMINATED")
        assert run["reason"] == f"parent run {flow_id} TERMINATED"
    flow = await api.flow(flow_id)
    assert flow["status"] == "TERMINATED"
    assert len(flow["children"]) == 3  # no more started
    assert await open_children(store, flow_id) == 0


async def test_a_paused_parent_holds_its_items_ends_and_goes_on_when_resumed(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name, child = unique("fes-pause"), unique("fes-paused-child")
    queue = f"{child}-work"
    await register_child(api, child, queue)
    await api.register(workflow(name, for_each_sub(1, child, concurrency=2)))
    count = 4
    flow_id = await api.start(name, {"items": list(range(count))})
    held = Gated()
    async with serving_worker(server, settings, queue, held, concurrency=8):
        await held.wait_taken(2)
        response = await api.http.post(f"/flow/{flow_id}/pause")
        assert response.status_code == 200, response.text
        held.gates[0].set()
        held.gates[1].set()

        async def both_held() -> bool:
            return [e["event"] for e in await api.history(flow_id)].count("HELD") == 2

        await wait_until(both_held, what="the two items' ends held")
        flow = await api.flow(flow_id)
        assert len(flow["children"]) == 2  # no child started while paused
        assert [(await api.flow(link["flowId"]))["status"] for link in flow["children"]] == [
            "COMPLETED",
            "COMPLETED",
        ]
        response = await api.http.post(f"/flow/{flow_id}/resume")
        assert response.status_code == 200, response.text
        await held.wait_taken(4)
        held.gates[2].set()
        held.gates[3].set()
        flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == [
        {"got": {"v": value}, "at": value} for value in range(count)
    ]


async def test_an_unknown_workflow_and_the_depth_limit_fail_the_item(
    api: Api, settings: Settings
) -> None:
    name, missing = unique("fes-unknown"), unique("fes-no-such")
    await api.register(
        workflow(name, for_each_sub(1, missing, concurrency=2, onItemFailure="collect"))
    )
    flow = await api.wait_status(await api.start(name, {"items": [1, 2, 3]}), "COMPLETED")
    assert flow["actions"]["1"]["output"] == [{"error": f"sub-workflow {missing} not found"}] * 3
    assert flow["children"] == [] and flow["childrenCount"] == 0

    # A workflow whose for-each starts itself: each level one child, until the limit.
    deep = unique("fes-deep")
    await api.register(
        workflow(
            deep,
            for_each_sub(1, deep, items=[0], child_input={"level": "{$.index}"}, version=None),
        )
    )
    top = await api.start(deep)
    run = await api.wait_status(top, "FAILED", timeout=60)
    most = settings.max_subworkflow_depth
    chain = [top]
    while run["children"]:
        chain.append(run["children"][0]["flowId"])
        run = await api.flow(chain[-1])
    assert len(chain) == most + 1
    assert run["actions"]["1"]["error"] == (
        f"item 0 failed: sub-workflow {deep} not started: it would be {most + 1} levels "
        f"deep; the limit is {most} (ORCHY_MAX_SUBWORKFLOW_DEPTH)"
    )
    assert run["parent"] == {"flowId": chain[-2], "actionId": 1}


async def test_a_thousand_children_complete(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    parent = await register_parent(api, "fes-1000", "fes-small", 50)
    name, queue, after = parent.name, parent.queue, parent.after
    count = 1000
    flow_id = await api.start(name, {"items": list(range(count))})
    started = time.monotonic()
    async with serving_worker(
        server, settings, queue, lambda task: {"v": task["value"]}, concurrency=64
    ):
        task = await api.poll_one(after, wait=120)
    print(f"1,000 sub-workflow items: {time.monotonic() - started:.2f} s")
    assert task["input"]["outputs"] == [
        {"got": {"v": value}, "at": value} for value in range(count)
    ]
    flow = await api.flow(flow_id)
    assert flow["childrenCount"] == count
    assert len(flow["children"]) == settings.view_max_children
    assert flow["children"][0] == {"flowId": flow["children"][0]["flowId"], "actionId": 1}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            {"workflow": "x", "type": "user", "name": "y"},
            "body: name, type cannot be given with workflow",
        ),
        ({"workflow": "x", "parameters": {}}, "body: parameters cannot be given with workflow"),
        ({"type": "user", "name": "y", "input": {}}, "body: name, type cannot be given with input"),
        ({"workflow": "  "}, "body.workflow must be the name of a workflow"),
        ({"workflow": 3}, "body.workflow must be the name of a workflow"),
        ({"workflow": "x", "version": 0}, "body.version must be an integer >= 1"),
        ({"workflow": "x", "version": "2"}, "body.version must be an integer >= 1"),
        ({"workflow": "x", "version": True}, "body.version must be an integer >= 1"),
        ({"version": 2}, "body.workflow must be the name of a workflow"),
        ({"workflow": "x", "retries": 2}, "body: unknown field(s) retries"),
        ({"workflow": "x", "input": {"a": "{$.item.}"}}, "body.input"),
    ],
)
async def test_bad_sub_workflow_bodies_are_refused(
    http: httpx.AsyncClient, body: dict[str, Any], problem: str
) -> None:
    action = system(1, "forEach", items="{$.input.items}", body=body)
    response = await http.post("/metadata/workflow", json=workflow(unique("fes-bad"), action))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith("action 1 (forEach): ") and problem in error, error


class ReadsOf:
    """Counts, through Redis's MONITOR, the commands that read a whole hash (HGETALL) of
    each key while it watches."""

    def __init__(self, redis_url: str) -> None:
        self.client = client_for_url(redis_url)
        self.counts: dict[str, int] = {}
        self.watching: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReadsOf:
        ready = asyncio.Event()

        async def watch() -> None:
            async with self.client.monitor() as monitor:
                ready.set()
                async for command in monitor.listen():
                    words = str(command.get("command", "")).split()
                    if len(words) >= 2 and words[0].upper() == "HGETALL":
                        self.counts[words[1]] = self.counts.get(words[1], 0) + 1

        self.watching = asyncio.create_task(watch())
        await ready.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.watching is not None
        self.watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.watching
        await self.client.aclose()


async def test_items_never_read_their_whole_parent_run(
    api: Api, server: ServerThread, settings: Settings, redis_url: str
) -> None:
    parent = await register_parent(api, "fes-reads", "fes-read-child", 50)
    name, queue, after = parent.name, parent.queue, parent.after
    count = 500
    async with ReadsOf(redis_url) as reads:
        flow_id = await api.start(name, {"items": list(range(count))})
        started = time.monotonic()
        async with serving_worker(
            server, settings, queue, lambda task: {"v": task["value"]}, concurrency=32
        ):
            task = await api.poll_one(after, wait=120)
        elapsed = time.monotonic() - started
    assert len(task["input"]["outputs"]) == count
    parent_key = Keys(settings.partitions).run(flow_id).run
    parent_reads = reads.counts.get(parent_key, 0)
    child_reads = sum(value for key, value in reads.counts.items() if key != parent_key)
    print(
        f"500 sub-workflow items: {elapsed:.2f} s; HGETALL of the parent run: {parent_reads}, "
        f"of other runs: {child_reads}"
    )
    # Starting the for-each and ending it read the run; its 500 items never do.
    assert parent_reads <= 5
