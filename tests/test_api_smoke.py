"""End to end over HTTP with hand-driven polls: the engine's basic paths."""

from __future__ import annotations

from typing import Any

from tests.helpers.http import Api
from tests.helpers.waiting import unique


def chain(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "rootAction": 1,
        "actions": [
            {
                "id": 1,
                "type": "user",
                "name": f"{name}-a",
                "parameters": {"x": "{$.input.x}"},
                "next": {"default": [2]},
            },
            {
                "id": 2,
                "type": "user",
                "name": f"{name}-b",
                "parameters": {"y": "{$.1.output.y}", "text": "got {$.1.output.y}"},
            },
        ],
    }


async def test_two_step_chain_completes(api: Api) -> None:
    name = unique("chain")
    await api.register(chain(name))
    flow_id = await api.start(name, {"x": 5})
    first = await api.poll_one(f"{name}-a")
    assert first["input"] == {"x": 5}
    assert (await api.complete(first["taskId"], {"y": 7})).status_code == 200
    second = await api.poll_one(f"{name}-b")
    assert second["input"] == {"y": 7, "text": "got 7"}
    assert (await api.complete(second["taskId"], {"done": True})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["2"] == {
        "status": "COMPLETED",
        "attempts": 1,
        "input": {"y": 7, "text": "got 7"},
        "output": {"done": True},
        "error": None,
        "executions": 1,
    }
    assert flow["output"]["1"]["output"] == {"y": 7}
