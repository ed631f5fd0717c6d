"""The terminate system action over real HTTP: a run ended from its definition, COMPLETED or
FAILED with a reason, from a worker's result, from the start, after a delay and at the end of
a chain of system steps; and the definitions it refuses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.actions.base import End
from app.actions.terminate import TerminateAction
from app.definition import ActionDef, ActionType
from app.jsontypes import JSONObject
from app.settings import Settings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique
from tests.helpers.worker_wire import fast_worker, new_worker, running

DELAY_SECONDS = 0.3


def terminate(action_id: int, status: str, **parameters: Any) -> dict[str, Any]:
    return system(action_id, "terminate", parameters={"status": status, **parameters})


def run_ended_by(history: list[dict[str, Any]], status: str) -> dict[str, Any]:
    ends = [entry for entry in history if entry["event"] == f"RUN_{status}"]
    assert len(ends) == 1, history
    return ends[0]


async def test_a_rejected_order_fails_the_run_and_closes_its_parallel_tasks(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("order")
    check, audit, archive, ship = (f"{name}-{what}" for what in ("check", "audit", "arch", "ship"))
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3, 4]}, expression="go"),
            user(2, audit),
            user(3, archive),
            user(4, check, {"default": [5]}, orderId="{$.input.orderId}"),
            system(
                5, "switch", {"rejected": [6], "default": [7]}, expression="{$.4.output.decision}"
            ),
            terminate(6, "FAILED", reason="order {$.input.orderId} rejected: {$.4.output.why}"),
            user(7, ship),
        )
    )
    flow_id = await api.start(name, {"orderId": "A-17"})
    audit_task = await api.poll_one(audit)  # running when the run ends

    worker = new_worker(server.url, fast_worker(settings))

    @worker.action(check)
    def check_order(input: JSONObject) -> JSONObject:
        return {"decision": "rejected", "why": f"no stock for {input['orderId']}"}

    async with running(worker):
        flow = await api.wait_status(flow_id, "FAILED")

    reason = "order A-17 rejected: no stock for A-17"
    assert flow["reason"] == reason
    assert flow["output"] is None
    actions = flow["actions"]
    assert actions["4"]["status"] == "COMPLETED"
    assert (actions["6"]["status"], actions["6"]["output"]) == (
        "COMPLETED",
        {"status": "FAILED", "reason": reason},
    )
    assert actions["6"]["input"] == {"status": "FAILED", "reason": reason}
    for closed in ("2", "3"):
        assert (actions[closed]["status"], actions[closed]["error"]) == ("FAILED", reason)
    assert "7" not in actions
    ended = run_ended_by(await api.history(flow_id), "FAILED")
    assert (ended["action"], ended["reason"]) == (6, reason)

    # The queued task is never delivered, the running one's late result is refused.
    assert await api.poll([archive, ship], wait=0.2) == []
    late = await api.complete(audit_task["taskId"], {"audited": True})
    assert late.status_code == 409
    assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 409


async def test_ending_completed_with_an_output_and_without_one(api: Api) -> None:
    name = unique("paid")
    price = f"{name}-price"
    await api.register(
        workflow(
            name,
            user(1, price, {"default": [2, 3]}),
            terminate(
                2,
                "COMPLETED",
                reason="paid {$.1.output.total}",
                output={"order": "{$.input.orderId}", "total": "{$.1.output.total}"},
            ),
            user(3, f"{name}-never"),
            output={"template": "{$.input.orderId}"},
        )
    )
    flow_id = await api.start(name, {"orderId": "B-2"})
    task = await api.poll_one(price)
    assert (await api.complete(task["taskId"], {"total": 42})).status_code == 200

    flow = await api.wait_status(flow_id, "COMPLETED")
    assert (flow["reason"], flow["output"]) == ("paid 42", {"order": "B-2", "total": 42})
    assert "3" not in flow["actions"]
    ended = run_ended_by(await api.history(flow_id), "COMPLETED")
    assert (ended["action"], ended["reason"]) == (2, "paid 42")

    # Without an output, the run's output is the definition's usual one.
    plain = unique("plain")
    await api.register(
        workflow(
            plain,
            terminate(1, "COMPLETED"),
            output={"template": "{$.input.orderId}"},
        )
    )
    plain_id = await api.start(plain, {"orderId": "C-3"})
    flow = await api.wait_status(plain_id, "COMPLETED")
    assert flow["output"] == {"template": "C-3"}
    assert flow["reason"] == "ended by action 1 (terminate)"


async def test_terminate_at_the_root_and_after_a_chain_of_system_steps(api: Api) -> None:
    root = unique("root")
    await api.register(workflow(root, terminate(1, "FAILED", reason="{$.input.why}")))
    flow_id = await api.start(root, {"why": "closed for the day"})
    flow = await api.flow(flow_id)  # ended by the start itself
    assert (flow["status"], flow["reason"]) == ("FAILED", "closed for the day")
    assert run_ended_by(await api.history(flow_id), "FAILED")["action"] == 1

    chain = unique("chain")
    await api.register(
        workflow(
            chain,
            system(1, "switch", {"default": [2]}, expression="{$.input.way}"),
            system(2, "javascript", {"default": [3]}, expression="$.input.n * 2"),
            terminate(3, "COMPLETED", reason="doubled", output="{$.2.output.result}"),
        )
    )
    chain_id = await api.start(chain, {"way": "on", "n": 21})
    flow = await api.flow(chain_id)
    assert (flow["status"], flow["reason"], flow["output"]) == ("COMPLETED", "doubled", 42)


async def test_terminate_after_a_delay_drops_the_waits_and_tasks_still_open(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("deadline")
    slow = f"{name}-slow"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3, 4]}, expression="go"),
            system(2, "delay", {"default": [5]}, delaySeconds=DELAY_SECONDS),
            user(3, slow, {"default": [6]}),
            system(4, "wait", {"default": [6]}, event="paid"),
            terminate(5, "FAILED", reason="order {$.input.orderId} not paid in time"),
            system(6, "join", {"default": []}, joinOn=[3, 4]),
        )
    )
    flow_id = await api.start(name, {"orderId": "D-4"})
    flow = await api.wait_status(flow_id, "FAILED")

    reason = "order D-4 not paid in time"
    assert flow["reason"] == reason
    for closed in ("3", "4"):
        assert (flow["actions"][closed]["status"], flow["actions"][closed]["error"]) == (
            "FAILED",
            reason,
        )
    assert "6" not in flow["actions"]
    assert run_ended_by(await api.history(flow_id), "FAILED")["action"] == 5
    assert await api.poll([slow], wait=0.2) == []
    assert (await http.post(f"/flow/{flow_id}/events/paid", json={})).status_code == 409


async def test_a_result_that_takes_the_next_task_gets_none_when_it_ends_the_run(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("end-next")
    first, mine = f"{name}-first", f"{name}-mine"
    await api.register(
        workflow(
            name,
            user(1, first, {"default": [2, 3]}),
            user(2, mine),
            terminate(3, "FAILED", reason="stop at {$.1.output.v}"),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(first)
    offer = {"workerId": "w-next", "actions": [mine], "max": 5}
    body = {"results": [{"taskId": task["taskId"], "output": {"v": 7}}], "next": offer}

    response = await http.post("/tasks/results", json=body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert ([item["status"] for item in answer["results"]], answer["tasks"]) == ([200], [])
    flow = await api.flow(flow_id)
    assert (flow["status"], flow["reason"]) == ("FAILED", "stop at 7")
    assert (flow["actions"]["2"]["status"], flow["actions"]["2"]["error"]) == (
        "FAILED",
        "stop at 7",
    )
    assert await api.poll([mine], wait=0.2) == []


@pytest.mark.parametrize(
    ("parameters", "nxt", "problem"),
    [
        ({"status": "FAILED"}, {"default": [2]}, "has no next"),
        ({"status": "TERMINATED"}, None, "'COMPLETED' or 'FAILED', not 'TERMINATED'"),
        ({"reason": "no status"}, None, "'COMPLETED' or 'FAILED', not None"),
        ({"status": "FAILED", "output": {}}, None, "output is for status COMPLETED only"),
        ({"status": "FAILED", "reason": 3}, None, "reason must be a string"),
        ({"status": "FAILED", "why": "x"}, None, "not why"),
    ],
)
async def test_bad_terminate_definitions_are_refused_naming_the_action(
    http: httpx.AsyncClient,
    parameters: dict[str, Any],
    nxt: dict[str, list[int]] | None,
    problem: str,
) -> None:
    definition = workflow(
        unique("bad-end"),
        system(1, "switch", {"default": [9]}, expression="go"),
        system(9, "terminate", nxt, parameters=parameters),
        user(2, unique("q")),
        root=1,
    )
    if nxt is None:
        definition["actions"][0]["next"] = {"default": [9, 2]}
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422, response.text
    assert "action 9 (terminate)" in response.json()["error"]
    assert problem in response.json()["error"]


# -- the action on its own -------------------------------------------------------------


def terminate_def(**parameters: Any) -> ActionDef:
    return ActionDef(id=9, type=ActionType.SYSTEM, name="terminate", parameters=parameters)


def test_run_resolves_the_reason_and_output_against_the_document() -> None:
    action = terminate_def(
        status="COMPLETED", reason="total {$.1.output.total}", output={"t": "{$.1.output.total}"}
    )
    outcome = TerminateAction().run(action, {"1": {"output": {"total": 42}}})
    assert outcome == End("COMPLETED", "total 42", {"t": 42}, gives_output=True)
    assert outcome.input == {"status": "COMPLETED", "reason": "total 42", "output": {"t": 42}}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("{$.input.code}", "42"),
        ("{$.input.missing}", ""),
        ("plain", "plain"),
    ],
)
def test_the_reason_is_text_whatever_it_resolves_to(reason: str, expected: str) -> None:
    outcome = TerminateAction().run(
        terminate_def(status="FAILED", reason=reason), {"input": {"code": 42}}
    )
    assert outcome == End("FAILED", expected)


def test_without_a_reason_or_an_output() -> None:
    outcome = TerminateAction().run(terminate_def(status="FAILED"), {})
    assert outcome == End("FAILED", "ended by action 9 (terminate)")
    TerminateAction().validate(terminate_def(status="COMPLETED", reason=None, output=None))
