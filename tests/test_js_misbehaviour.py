"""A javascript step whose script misbehaves ends FAILED with a message naming the problem,
wherever it is reached: at the root (by ``/flow/execute``), after a delay (by the sweeper),
or after a user action (by a worker's result, through ``/tasks/{id}/complete`` or
``/tasks/results``). The request that reached it never gets a 500, and the run never stays
RUNNING. A script that tampers with the builtins the runner uses still gets its true output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api
from tests.helpers.waiting import unique

STEP = 2  # the javascript step's id in every placement
AFTER_ERROR = 3  # the user action on the step's error edge

# script -> words the step's error must hold
MISBEHAVIOURS = {
    "cyclic object": ("var o = {}; o.self = o; o", "(a cycle)"),
    "cycle in the data document": ("$.loop = {}; $.loop.back = $.loop; 1", "(a cycle)"),
    "BigInt": ("10n", "is a BigInt"),
    "Symbol": ("Symbol('s')", "is a Symbol"),
    "function": ("(function () {})", "is a function"),
    "100 MB string": ("'x'.repeat(100 * 1024 * 1024)", "ORCHY_JS_MAX_RESULT_BYTES"),
    "nested 5,000 deep": (
        "var o = {}; for (var i = 0; i < 5000; i++) o = {o: o}; o",
        "ORCHY_JS_MAX_RESULT_DEPTH",
    ),
    "NaN": ("0 / 0", "is NaN"),
    "lone surrogate": ("'\\ud800'", "lone surrogate"),
    "toJSON that throws": (
        "Object.prototype.toJSON = function () { throw new Error('no JSON here') }; ({})",
        "no JSON here",
    ),
    "toJSON that answers a function": (
        "Object.prototype.toJSON = function () { return function () {} }; 1",
        "is a function",
    ),
}

# script -> the step's output: what the script really did, whatever it did to the builtins
TRUE_OUTPUT = {"total": 2, "result": "real"}
TAMPERING = {
    "JSON.stringify answers text that is not JSON": (
        "JSON.stringify = function () { return 'not json' }; $.total = 2; 'real'",
        TRUE_OUTPUT,
    ),
    "JSON.stringify answers a forged output": (
        'JSON.stringify = function () { return \'{"output": {"result": "forged"}}\' };'
        " $.total = 2; 'real'",
        TRUE_OUTPUT,
    ),
    "JSON.stringify answers a list": (
        "JSON.stringify = function () { return '[1]' }; $.total = 2; 'real'",
        TRUE_OUTPUT,
    ),
    "builtins broken": (
        "JSON.parse = Object.keys = Object.hasOwn = Array.isArray = Reflect.apply = null;"
        " String.prototype.isWellFormed = RegExp.prototype.exec = null; $.total = 2; 'real'",
        TRUE_OUTPUT,
    ),
    # A JSON text is a string like any other: the result is the text, not parsed.
    "result that is a JSON text": (
        'JSON.stringify({output: {result: "forged"}})',
        {"result": '{"output":{"result":"forged"}}'},
    ),
}


@dataclass(frozen=True)
class Placement:
    """Where the javascript step sits, and how a run is brought to it."""

    before: Callable[[str], list[dict[str, Any]]]  # the actions leading to the step
    reach: Callable[[Api, str, str], Awaitable[str]]  # starts a run, brings it to the step


async def start(api: Api, name: str, queue: str) -> str:
    response = await api.http.post("/flow/execute", json={"name": name, "input": {}})
    assert response.status_code == 201, response.text
    flow_id: str = response.json()["flowId"]
    return flow_id


async def complete_one(api: Api, name: str, queue: str) -> str:
    flow_id = await start(api, name, queue)
    task = await api.poll_one(queue)
    response = await api.complete(task["taskId"], {})
    assert response.status_code == 200, response.text
    return flow_id


async def send_in_batch(api: Api, name: str, queue: str) -> str:
    flow_id = await start(api, name, queue)
    task = await api.poll_one(queue)
    body = {"results": [{"taskId": task["taskId"], "output": {}}]}
    response = await api.http.post("/tasks/results", json=body)
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["results"]] == [200], response.text
    return flow_id


def leading_delay(queue: str) -> list[dict[str, Any]]:
    return [system(1, "delay", {"default": [STEP]}, delaySeconds=0)]


def leading_task(queue: str) -> list[dict[str, Any]]:
    return [user(1, queue, {"default": [STEP]})]


PLACEMENTS = {
    "root": Placement(lambda queue: [], start),
    "after a delay": Placement(leading_delay, start),
    "after /complete": Placement(leading_task, complete_one),
    "after /tasks/results": Placement(leading_task, send_in_batch),
}


async def run_script(
    api: Api, placement: Placement, script: str, **step_next: list[int]
) -> tuple[str, str]:
    """Registers a workflow with the script at ``placement`` and runs it to the step; the
    flow id and the workflow's name."""
    name = unique("js-misbehaving")
    queue = f"{name}-before"
    leading = placement.before(queue)
    step = system(STEP, "javascript", step_next or None, expression=script)
    extra = [user(AFTER_ERROR, f"{name}-after-error")] if step_next else []
    root = leading[0]["id"] if leading else STEP
    await api.register(workflow(name, *leading, step, *extra, root=root))
    return await placement.reach(api, name, queue), name


@pytest.mark.parametrize("placement", PLACEMENTS.values(), ids=PLACEMENTS.keys())
@pytest.mark.parametrize(("script", "problem"), MISBEHAVIOURS.values(), ids=MISBEHAVIOURS.keys())
async def test_misbehaving_script_fails_its_step_and_run(
    api: Api, placement: Placement, script: str, problem: str
) -> None:
    flow_id, _ = await run_script(api, placement, script)

    flow = await api.wait_status(flow_id, "FAILED")
    step = flow["actions"][str(STEP)]
    assert step["status"] == "FAILED"
    assert problem in step["error"], step["error"]
    assert f"action {STEP}" in flow["reason"] and problem in flow["reason"], flow["reason"]


@pytest.mark.parametrize("placement", PLACEMENTS.values(), ids=PLACEMENTS.keys())
@pytest.mark.parametrize(("script", "output"), TAMPERING.values(), ids=TAMPERING.keys())
async def test_script_tampering_with_builtins_gets_its_true_output(
    api: Api, placement: Placement, script: str, output: dict[str, Any]
) -> None:
    flow_id, _ = await run_script(api, placement, script)

    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"][str(STEP)]["status"] == "COMPLETED"
    assert flow["actions"][str(STEP)]["output"] == output


async def test_misbehaving_script_takes_the_error_edge_when_its_step_has_one(api: Api) -> None:
    script, problem = MISBEHAVIOURS["cyclic object"]
    flow_id, name = await run_script(
        api, PLACEMENTS["after /complete"], script, error=[AFTER_ERROR]
    )

    handler = await api.poll_one(f"{name}-after-error")
    assert handler["flowId"] == flow_id
    flow = await api.flow(flow_id)
    assert flow["status"] == "RUNNING"
    step = flow["actions"][str(STEP)]
    assert step["status"] == "FAILED" and problem in step["error"], step
    assert problem in step["output"]["error"], step
    assert (await api.complete(handler["taskId"], {})).status_code == 200
    await api.wait_status(flow_id, "COMPLETED")
