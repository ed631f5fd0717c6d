"""An action that runs more than once in a run: each run is an execution with its own
status, attempts, input, output, error and times. ``GET /flow/{id}`` shows the latest
execution of each action and how many it has had; ``GET /flow/{id}/actions/{id}/executions``
lists them all, a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from app.jsontypes import JSONObject
from app.settings import Settings
from orchy import NonRetryableError
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api
from tests.helpers.waiting import unique
from tests.helpers.worker_wire import TappedServer, fast_worker, new_worker, running


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return fast_worker(settings)


async def executions(http: httpx.AsyncClient, flow_id: str, action_id: int, **query: Any) -> Any:
    response = await http.get(f"/flow/{flow_id}/actions/{action_id}/executions", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_an_action_reached_by_two_branches_keeps_both_executions(
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    """1 -> 2 -> [3, 4] and 3 -> 4: action 4 runs once after 2 (3 has not run yet) and once
    after 3, each with the input and output of its own."""
    name = unique("exec-merge")
    worker = new_worker(tapped.url, worker_settings, concurrency=2)
    worker.action(f"{name}-start")(lambda input: {})
    worker.action(f"{name}-left")(lambda input: {"side": "L"})
    worker.action(f"{name}-right")(lambda input: {"side": "R"})
    worker.action(f"{name}-merge")(lambda input: {"saw": input})
    await api.register(
        workflow(
            name,
            user(1, f"{name}-start", {"default": [2]}),
            user(2, f"{name}-left", {"default": [3, 4]}),
            user(3, f"{name}-right", {"default": [4]}),
            user(4, f"{name}-merge", left="{$.2.output.side}", right="{$.3.output.side}"),
        )
    )
    async with running(worker):
        flow_id = await api.start(name)
        flow = await api.wait_status(flow_id, "COMPLETED")

    first_input, second_input = {"left": "L", "right": None}, {"left": "L", "right": "R"}
    # The action's view is its latest execution's, with the count of its executions.
    assert flow["actions"]["4"] == {
        "status": "COMPLETED",
        "attempts": 1,
        "input": second_input,
        "output": {"saw": second_input},
        "error": None,
        "executions": 2,
    }
    assert flow["data"]["4"] == {"output": {"saw": second_input}}
    assert flow["actions"]["3"]["executions"] == 1

    listed = await executions(http, flow_id, 4)
    assert (listed["total"], listed["nextOffset"]) == (2, None)
    first, second = listed["executions"]
    assert first["seq"] < second["seq"]
    assert (first["input"], first["output"]) == (first_input, {"saw": first_input})
    assert (second["input"], second["output"]) == (second_input, {"saw": second_input})
    for execution in (first, second):
        assert (execution["status"], execution["attempts"], execution["error"]) == (
            "COMPLETED",
            1,
            None,
        )
        assert moment(execution["startedAt"]) <= moment(execution["endedAt"])
    assert moment(first["startedAt"]) <= moment(second["startedAt"])

    # Paging: one at a time, then past the end.
    page = await executions(http, flow_id, 4, limit=1)
    assert (page["executions"], page["total"], page["nextOffset"]) == ([first], 2, 1)
    page = await executions(http, flow_id, 4, offset=1, limit=1)
    assert (page["executions"], page["total"], page["nextOffset"]) == ([second], 2, None)
    page = await executions(http, flow_id, 4, offset=5)
    assert (page["executions"], page["total"], page["nextOffset"]) == ([], 2, None)


async def test_an_error_edge_into_a_running_branch_runs_its_target_again(
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    """1 -> [2, 3] and 2 -error-> 3: the failed execution keeps its error and output."""
    name = unique("exec-error")
    worker = new_worker(tapped.url, worker_settings)
    worker.action(f"{name}-start")(lambda input: {})

    @worker.action(f"{name}-charge", retry_count=0)
    def charge(input: JSONObject) -> JSONObject:
        raise NonRetryableError("card declined")

    worker.action(f"{name}-notify")(lambda input: {"told": input["why"]})
    await api.register(
        workflow(
            name,
            user(1, f"{name}-start", {"default": [2, 3]}),
            user(2, f"{name}-charge", {"error": [3]}),
            user(3, f"{name}-notify", why="{$.2.output.error}"),
        )
    )
    async with running(worker):
        flow_id = await api.start(name)
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["3"]["executions"] == 2
    [failed] = (await executions(http, flow_id, 2))["executions"]
    assert failed["status"] == "FAILED"
    assert "card declined" in failed["error"]
    assert failed["output"] == {"error": failed["error"]}
    assert failed["endedAt"] is not None
    listed = await executions(http, flow_id, 3)
    assert [item["input"] for item in listed["executions"]] == [
        {"why": None},
        {"why": failed["error"]},
    ]
    assert [item["output"] for item in listed["executions"]] == [
        {"told": None},
        {"told": failed["error"]},
    ]


async def test_each_pass_of_a_loop_is_an_execution_of_its_body(
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    """A while runs its body three times: the body's action has three executions, each with
    the pass it got and the output it gave; the while has four (three passes, the exit)."""
    name = unique("exec-loop")
    worker = new_worker(tapped.url, worker_settings)
    worker.action(f"{name}-body")(lambda input: {"double": input["pass"] * 2})
    await api.register(
        workflow(
            name,
            system(
                1,
                "while",
                {"body": [2]},
                condition="{$.1.output.iteration} < 3",
            ),
            user(2, f"{name}-body", {"default": [1]}, **{"pass": "{$.1.output.iteration}"}),
        )
    )
    async with running(worker):
        flow_id = await api.start(name)
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert (flow["actions"]["1"]["executions"], flow["actions"]["2"]["executions"]) == (4, 3)
    assert flow["actions"]["2"]["output"] == {"double": 6}
    body = await executions(http, flow_id, 2)
    assert [(item["input"], item["output"]) for item in body["executions"]] == [
        ({"pass": n}, {"double": 2 * n}) for n in (1, 2, 3)
    ]
    loop = await executions(http, flow_id, 1, limit=3)
    assert [item["output"]["iteration"] for item in loop["executions"]] == [1, 2, 3]
    assert (loop["total"], loop["nextOffset"]) == (4, 3)
    last = await executions(http, flow_id, 1, offset=3)
    assert [item["output"] for item in last["executions"]] == [{"iteration": 3, "exited": True}]
    assert last["nextOffset"] is None


async def test_the_items_of_a_for_each_are_executions_of_its_action(
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    """The for-each's own execution and each item's, with the item's input and output."""
    name = unique("exec-each")
    worker = new_worker(tapped.url, worker_settings)
    worker.action(f"{name}-item")(lambda input: {"tenfold": input["n"] * 10})
    for_each = system(
        1,
        "forEach",
        items="{$.input.numbers}",
        concurrency=1,
        body={"type": "user", "name": f"{name}-item", "parameters": {"n": "{$.item}"}},
    )
    await api.register(workflow(name, for_each))
    async with running(worker):
        flow_id = await api.start(name, {"numbers": [1, 2]})
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["output"] == [{"tenfold": 10}, {"tenfold": 20}]
    assert flow["actions"]["1"]["executions"] == 3
    listed = await executions(http, flow_id, 1)
    first, *items = listed["executions"]
    assert (first["seq"], first["output"]) == (1, [{"tenfold": 10}, {"tenfold": 20}])
    assert [(item["input"], item["output"], item["status"]) for item in items] == [
        ({"n": 1}, {"tenfold": 10}, "COMPLETED"),
        ({"n": 2}, {"tenfold": 20}, "COMPLETED"),
    ]


async def test_while_its_latest_execution_runs_an_action_has_no_output(api: Api) -> None:
    """The output of an action is its latest execution's: none while that one is open,
    though an earlier execution has ended with one (it keeps it, in the list)."""
    name = unique("exec-open")
    await api.register(
        workflow(
            name,
            user(1, f"{name}-a", {"default": [2, 3]}),
            user(2, f"{name}-b", {"default": [4]}),
            user(3, f"{name}-c", {"default": [4]}),
            user(4, f"{name}-d", n="{$.input.n}"),
        )
    )
    flow_id = await api.start(name, {"n": 1})
    await api.complete((await api.poll_one(f"{name}-a"))["taskId"], {})
    await api.complete((await api.poll_one(f"{name}-b"))["taskId"], {})
    await api.complete((await api.poll_one(f"{name}-d"))["taskId"], {"first": True})
    await api.complete((await api.poll_one(f"{name}-c"))["taskId"], {})

    flow = await api.flow(flow_id)
    assert flow["actions"]["4"] == {
        "status": "QUEUED",
        "attempts": 1,
        "input": {"n": 1},
        "output": None,
        "error": None,
        "executions": 2,
    }
    assert "4" not in flow["data"]
    listed = await executions(api.http, flow_id, 4)
    assert [(item["status"], item["output"]) for item in listed["executions"]] == [
        ("COMPLETED", {"first": True}),
        ("QUEUED", None),
    ]
    assert listed["executions"][1]["endedAt"] is None

    await api.complete((await api.poll_one(f"{name}-d"))["taskId"], {"second": True})
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["4"]["output"] == {"second": True}
    assert flow["data"]["4"] == {"output": {"second": True}}


async def test_an_action_that_has_not_run_has_no_executions_and_unknown_ones_are_404(
    api: Api,
) -> None:
    name = unique("exec-none")
    await api.register(workflow(name, user(1, f"{name}-a", {"default": [2]}), user(2, f"{name}-b")))
    flow_id = await api.start(name)

    assert await executions(api.http, flow_id, 2) == {
        "executions": [],
        "total": 0,
        "nextOffset": None,
    }
    missing_action = await api.http.get(f"/flow/{flow_id}/actions/9/executions")
    assert missing_action.status_code == 404
    assert "action 9" in missing_action.json()["error"]
    missing_flow = await api.http.get(f"/flow/{unique('nope')}/actions/1/executions")
    assert missing_flow.status_code == 404
    assert "not found" in missing_flow.json()["error"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("actions/1/executions?offset=-1", "offset"),
        ("actions/1/executions?offset=x", "offset"),
        ("actions/1/executions?limit=0", "limit"),
        ("actions/1/executions?limit=many", "limit"),
        ("actions/1/executions?limit=501", "limit"),
        ("actions/one/executions", "action_id"),
    ],
)
async def test_bad_query_values_are_422_naming_the_field(api: Api, path: str, field: str) -> None:
    name = unique("exec-bad")
    await api.register(workflow(name, user(1, f"{name}-a")))
    flow_id = await api.start(name)

    response = await api.http.get(f"/flow/{flow_id}/{path}")

    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
