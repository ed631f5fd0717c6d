"""The run view shows, for each action, the input its latest execution received: a user
action's parameters and a system action's settings, resolved against the data document as
they were when it ran; for a javascript step, the data document it ran on."""

from __future__ import annotations

from typing import Any

from app.settings import get_settings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api
from tests.helpers.waiting import unique, wait_until


async def test_each_kind_of_action_shows_the_input_it_received(api: Api) -> None:
    name = unique("received")
    first, second = f"{name}-first", f"{name}-second"
    await api.register(
        workflow(
            name,
            user(1, first, {"default": [2]}, who="{$.input.name}", hello="Hi {$.input.name}", n=5),
            system(2, "switch", {"go": [3]}, expression="{$.1.output.kind}"),
            system(3, "javascript", {"default": [4]}, expression="$.twice = $.input.n * 2; 0"),
            system(4, "delay", {"default": [5, 6]}, delaySeconds=0),
            system(5, "wait", {"default": [7]}, event="go", timeoutSeconds=30),
            user(6, second, {"default": [7]}, twice="{$.3.output.twice}"),
            system(7, "join", joinOn=[5, 6]),
        )
    )
    flow_id = await api.start(name, {"name": "Ada", "n": 21})
    task = await api.poll_one(first)
    assert (await api.complete(task["taskId"], {"kind": "go"})).status_code == 200
    task = await api.poll_one(second)

    waiting = await api.flow(flow_id)
    assert waiting["actions"]["5"]["status"] == "WAITING"
    assert waiting["actions"]["5"]["input"] == {"event": "go", "timeoutSeconds": 30}
    assert (await api.http.post(f"/flow/{flow_id}/events/go", json={})).status_code == 200
    assert (await api.complete(task["taskId"], {})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")

    received = {action_id: view["input"] for action_id, view in flow["actions"].items()}
    assert received == {
        "1": {"who": "Ada", "hello": "Hi Ada", "n": 5},
        "2": {"expression": "go"},
        "3": {
            "input": {"name": "Ada", "n": 21},
            "flow": {"id": flow_id, "name": name, "version": 1},
            "1": {"output": {"kind": "go"}},
            "2": {"output": {"value": "go"}},
        },
        "4": {"delaySeconds": 0},
        "5": {"event": "go", "timeoutSeconds": 30},
        "6": {"twice": 42},
        "7": {"joinOn": [5, 6]},
    }


async def test_a_failed_system_action_shows_the_input_it_failed_on(api: Api) -> None:
    name = unique("received-failed")
    switch = system(1, "switch", {"yes": [2]}, expression="{$.input.answer}")
    await api.register(workflow(name, switch, user(2, f"{name}-yes")))
    flow_id = await api.start(name, {"answer": "maybe"})

    flow = await api.wait_status(flow_id, "FAILED")
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert flow["actions"]["1"]["input"] == {"expression": "maybe"}


async def test_the_view_shows_the_latest_execution_of_an_action(api: Api) -> None:
    """Action 4 is reached twice (once per branch): the second execution resolves
    ``{$.3.output.v}`` after action 3 finished, the first before."""
    name = unique("received-latest")
    queues = {action_id: f"{name}-{action_id}" for action_id in (1, 2, 3, 4)}
    await api.register(
        workflow(
            name,
            user(1, queues[1], {"default": [2, 3]}),
            user(2, queues[2], {"default": [4]}),
            user(3, queues[3], {"default": [4]}),
            user(4, queues[4], v="{$.3.output.v}"),
        )
    )
    flow_id = await api.start(name)
    for action_id, output in ((1, {}), (2, {}), (3, {"v": "late"})):
        task = await api.poll_one(queues[action_id])
        assert (await api.complete(task["taskId"], output)).status_code == 200
        if action_id == 2:
            first = await api.flow(flow_id)
            assert first["actions"]["4"]["input"] == {"v": None}

    async def run_twice() -> bool:
        return bool((await api.flow(flow_id))["actions"]["4"]["input"] == {"v": "late"})

    await wait_until(run_twice, what="the second execution of action 4")
    inputs = [task["input"] for task in await api.poll([queues[4]], most=2)]
    assert sorted(inputs, key=str) == sorted([{"v": None}, {"v": "late"}], key=str)


async def test_a_javascript_step_over_a_large_document_notes_its_size(api: Api) -> None:
    most = get_settings().js_max_recorded_input_bytes
    name = unique("received-large")
    await api.register(workflow(name, system(1, "javascript", expression="$.input.text.length")))
    flow_id = await api.start(name, {"text": "x" * most})

    flow = await api.wait_status(flow_id, "COMPLETED")
    step: dict[str, Any] = flow["actions"]["1"]
    assert step["output"] == {"result": most}
    note = step["input"]["omitted"]
    assert f"larger than ORCHY_JS_MAX_RECORDED_INPUT_BYTES ({most} bytes)" in note, note
