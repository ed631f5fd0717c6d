"""Sub-workflows over HTTP with a real worker: a subWorkflow action starts a child run (in
another partition than its parent: the tests choose parents so), waits for it, and goes on
with its output or fails with its reason; ending the parent ends the child; a depth limit
stops a workflow that calls itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.engine.ids import child_flow_id, idempotent_flow_id
from app.settings import Settings
from app.store.keys import Keys
from orchy import NonRetryableError, Worker
from tests.helpers.definitions import sub_workflow, system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker, running


def keys_apart(name: str, settings: Settings, seq: int = 1) -> Iterator[str]:
    """Idempotency keys whose run of ``name`` and that run's child of execution ``seq``
    land in different partitions."""
    keys = Keys(settings.partitions)
    for number in range(1000):
        key = unique(f"apart-{number}")
        parent = idempotent_flow_id(name, key)
        if keys.partition_of(parent) != keys.partition_of(child_flow_id(parent, seq)):
            yield key


async def start_apart(api: Api, settings: Settings, name: str, input_data: Any = None) -> str:
    """Starts a run of ``name`` whose first execution's child lands in another partition."""
    return await api.start(name, input_data, idempotencyKey=next(keys_apart(name, settings)))


async def child_of(api: Api, flow_id: str, action: int = 1) -> str:
    """The child run that ``action`` of ``flow_id`` started, once it has one."""

    async def started() -> bool:
        return bool((await api.flow(flow_id))["actions"].get(str(action), {}).get("child"))

    await wait_until(started, what=f"action {action} of {flow_id} to start its child")
    child: str = (await api.flow(flow_id))["actions"][str(action)]["child"]
    return child


def worker_for(server: ServerThread, settings: Settings) -> Worker:
    return Worker(
        server_url=server.url,
        concurrency=4,
        worker_id=unique("subflows"),
        settings=fast_worker(settings),
    )


async def test_the_parent_goes_on_with_the_childs_output(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("order")
    child_name = unique("payment")
    charge, ship = f"{child_name}-charge", f"{name}-ship"
    await api.register(
        workflow(
            child_name,
            user(1, charge, amount="{$.input.amount}"),
            output={"paid": "{$.1.output.charged}", "by": "{$.flow.name}"},
        )
    )
    await api.register(
        workflow(
            name,
            sub_workflow(1, child_name, {"default": [2]}, amount="{$.input.total}"),
            user(2, ship, payment="{$.1.output}"),
        )
    )
    worker = worker_for(server, settings)
    seen: dict[str, Any] = {}

    @worker.action(charge)
    def do_charge(input: dict[str, Any]) -> dict[str, Any]:
        return {"charged": input["amount"] * 2}

    @worker.action(ship)
    def do_ship(input: dict[str, Any]) -> dict[str, Any]:
        seen.update(input)
        return {"shipped": True}

    parent_id = await start_apart(api, settings, name, {"total": 21})
    async with running(worker):
        parent = await api.wait_status(parent_id, "COMPLETED")
    assert seen == {"payment": {"paid": 42, "by": child_name}}
    assert parent["actions"]["1"]["status"] == "COMPLETED"
    assert parent["actions"]["1"]["output"] == {"paid": 42, "by": child_name}
    assert parent["actions"]["1"]["input"] == {
        "workflow": child_name,
        "version": None,
        "input": {"amount": 21},
    }
    child_id = parent["actions"]["1"]["child"]
    assert parent["children"] == [{"flowId": child_id, "actionId": 1}]
    assert "parent" not in parent and "child" not in parent["actions"]["2"]
    child = await api.flow(child_id)
    assert child["status"] == "COMPLETED"
    assert child["name"] == child_name and child["input"] == {"amount": 21}
    assert child["parent"] == {"flowId": parent_id, "actionId": 1}
    assert child["children"] == []
    keys = Keys(settings.partitions)
    assert keys.partition_of(child_id) != keys.partition_of(parent_id)
    events = [entry["event"] for entry in await api.history(parent_id)]
    assert events.count("CHILD_STARTED") == 1 and events.count("CHILD_ENDED") == 1


async def test_a_failed_child_takes_the_parents_error_edge(
    api: Api, server: ServerThread, settings: Settings
) -> None:
    name = unique("order-fails")
    child_name = unique("payment-fails")
    charge, refund = f"{child_name}-charge", f"{name}-refund"
    await api.register(workflow(child_name, user(1, charge)))
    await api.register(
        workflow(
            name,
            sub_workflow(1, child_name, {"default": [3], "error": [2]}),
            user(2, refund, why="{$.1.output.error}"),
            user(3, f"{name}-never"),
        )
    )
    worker = worker_for(server, settings)
    seen: dict[str, Any] = {}

    @worker.action(charge)
    def do_charge(input: dict[str, Any]) -> dict[str, Any]:
        raise NonRetryableError("card declined")

    @worker.action(refund)
    def do_refund(input: dict[str, Any]) -> dict[str, Any]:
        seen.update(input)
        return {}

    parent_id = await start_apart(api, settings, name)
    async with running(worker):
        parent = await api.wait_status(parent_id, "COMPLETED")
    child_id = parent["actions"]["1"]["child"]
    child = await api.flow(child_id)
    assert child["status"] == "FAILED"
    error = f"sub-workflow {child_name} run {child_id} FAILED: {child['reason']}"
    assert "card declined" in child["reason"]
    assert parent["actions"]["1"]["status"] == "FAILED"
    assert parent["actions"]["1"]["error"] == error
    assert seen == {"why": error}
    assert "3" not in parent["actions"]


async def test_a_failed_child_without_error_edge_fails_the_parent(api: Api) -> None:
    name = unique("order-fails-too")
    child_name = unique("payment-terminates")
    await api.register(
        workflow(
            child_name,
            system(1, "terminate", parameters={"status": "FAILED", "reason": "no stock"}),
        )
    )
    await api.register(workflow(name, sub_workflow(1, child_name)))
    parent_id = await api.start(name)
    parent = await api.wait_status(parent_id, "FAILED")
    child_id = parent["actions"]["1"]["child"]
    assert parent["reason"] == (
        f"action 1 (subWorkflow) failed: sub-workflow {child_name} run {child_id} FAILED: no stock"
    )


async def test_a_pinned_version_and_the_latest(api: Api) -> None:
    """Children that end as they start (a terminate action): the parent hears of them all
    the same, whichever of the spawn and the end comes first."""
    name = unique("versions")
    child_name = unique("versioned")

    def child(version: int) -> dict[str, Any]:
        end = {"status": "COMPLETED", "output": {"v": version, "x": "{$.input.x}"}}
        return workflow(child_name, system(1, "terminate", parameters=end))

    assert await api.register(child(1)) == 1
    assert await api.register(child(2)) == 2
    await api.register(
        workflow(
            name,
            sub_workflow(1, child_name, {"default": [2]}, version=1, x="one"),
            sub_workflow(2, child_name, x="{$.1.output.v}"),
            output={"pinned": "{$.1.output}", "latest": "{$.2.output}"},
        )
    )
    parent = await api.wait_status(await api.start(name), "COMPLETED")
    assert parent["output"] == {"pinned": {"v": 1, "x": "one"}, "latest": {"v": 2, "x": 1}}
    assert parent["actions"]["1"]["input"]["version"] == 1
    assert parent["actions"]["2"]["input"]["version"] is None
    versions = [(await api.flow(link["flowId"]))["version"] for link in parent["children"]]
    assert versions == [1, 2]
    assert [link["actionId"] for link in parent["children"]] == [1, 2]


async def test_terminating_the_parent_terminates_its_children_and_theirs(
    api: Api, settings: Settings
) -> None:
    name = unique("top")
    middle_name = unique("middle")
    leaf_name = unique("leaf")
    await api.register(workflow(leaf_name, user(1, f"{leaf_name}-nobody-polls")))
    await api.register(workflow(middle_name, sub_workflow(1, leaf_name)))
    await api.register(workflow(name, sub_workflow(1, middle_name)))
    top = await start_apart(api, settings, name)
    middle = await child_of(api, top)
    leaf = await child_of(api, middle)
    assert (await api.flow(leaf))["parent"] == {"flowId": middle, "actionId": 1}

    response = await api.http.post(f"/flow/{top}/terminate", json={"reason": "enough"})
    assert response.status_code == 200, response.text
    middle_run = await api.wait_status(middle, "TERMINATED")
    assert middle_run["reason"] == f"parent run {top} TERMINATED"
    leaf_run = await api.wait_status(leaf, "TERMINATED")
    assert leaf_run["reason"] == f"parent run {middle} TERMINATED"
    assert (await api.flow(top))["actions"]["1"]["status"] == "FAILED"


async def test_a_workflow_that_calls_itself_stops_at_the_depth_limit(
    api: Api, settings: Settings
) -> None:
    name = unique("recursive")
    await api.register(workflow(name, sub_workflow(1, name, level="{$.input.level}")))
    top = await api.start(name, {"level": 0})
    run = await api.wait_status(top, "FAILED", timeout=60)
    most = settings.max_subworkflow_depth
    assert most == 10
    chain = [top]
    while run["children"]:
        chain.append(run["children"][0]["flowId"])
        run = await api.flow(chain[-1])
    assert len(chain) == most + 1  # the top run and ten levels below it
    assert run["status"] == "FAILED"
    assert run["actions"]["1"]["error"] == (
        f"sub-workflow {name} not started: it would be {most + 1} levels deep; the limit is "
        f"{most} (ORCHY_MAX_SUBWORKFLOW_DEPTH)"
    )
    assert run["parent"] == {"flowId": chain[-2], "actionId": 1}
    assert "it would be 11 levels deep" in (await api.flow(top))["reason"]


async def test_an_unknown_workflow_or_version_fails_the_action(api: Api) -> None:
    name = unique("unknown")
    missing = unique("no-such-workflow")
    existing = unique("exists")
    await api.register(
        workflow(existing, system(1, "terminate", parameters={"status": "COMPLETED"}))
    )
    await api.register(
        workflow(
            name,
            sub_workflow(1, missing, {"error": [2]}),
            sub_workflow(2, existing, {"error": [3]}, version=9),
            user(3, f"{name}-report", first="{$.1.output.error}", second="{$.2.output.error}"),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-report")
    assert task["input"] == {
        "first": f"sub-workflow {missing} not found",
        "second": f"sub-workflow {existing} version 9 not found",
    }
    flow = await api.flow(flow_id)
    assert flow["children"] == []
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert "child" not in flow["actions"]["1"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "subWorkflow needs workflow"),
        ({"workflow": "  "}, "subWorkflow needs workflow"),
        ({"workflow": 3}, "subWorkflow needs workflow"),
        ({"workflow": "x", "version": 0}, "version must be an integer >= 1"),
        ({"workflow": "x", "version": "2"}, "version must be an integer >= 1"),
        ({"workflow": "x", "version": True}, "version must be an integer >= 1"),
        ({"workflow": "x", "version": 1.5}, "version must be an integer >= 1"),
        ({"workflow": "x", "parameters": [1]}, "parameters must be an object"),
    ],
)
async def test_bad_definitions_are_refused(
    http: httpx.AsyncClient, fields: dict[str, Any], problem: str
) -> None:
    definition = workflow(unique("bad-sub"), system(1, "subWorkflow", **fields))
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith("action 1 (subWorkflow): ") and problem in error, error


async def test_a_sub_workflow_in_a_loop_starts_a_child_per_pass(api: Api) -> None:
    name = unique("looped")
    child_name = unique("looped-child")
    end = {"status": "COMPLETED", "output": {"pass": "{$.input.pass}"}}
    await api.register(workflow(child_name, system(1, "terminate", parameters=end)))
    body = sub_workflow(2, child_name, {"default": [1]}, **{"pass": "{$.1.output.iteration}"})
    body["setVars"] = [{"var": "passes", "op": "append", "value": "{$.output.pass}"}]
    await api.register(
        workflow(
            name,
            system(1, "while", {"body": [2]}, condition="{$.vars.count} < 3"),
            {**body, "setVars": [*body["setVars"], {"var": "count", "op": "add", "value": 1}]},
            vars={"count": 0, "passes": []},
        )
    )
    flow_id = await api.start(name)
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["vars"] == {"count": 3, "passes": [1, 2, 3]}
    children = [link["flowId"] for link in flow["children"]]
    assert len(set(children)) == 3
    assert [link["actionId"] for link in flow["children"]] == [2, 2, 2]
    assert flow["actions"]["2"]["child"] == children[-1]
    for child_id in children:
        child = await api.flow(child_id)
        assert child["status"] == "COMPLETED"
        assert child["parent"] == {"flowId": flow_id, "actionId": 2}
