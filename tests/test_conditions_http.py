"""Branching on conditions (switch cases, if) over real HTTP, with tests acting as the worker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api
from tests.helpers.waiting import unique

# Over ORCHY_LARGE_DOCUMENT_BYTES (64 KiB): such a run's switch is computed in a helper process.
LARGE_PADDING_CHARS = 70_000


def order_workflow(name: str, **switch: Any) -> dict[str, Any]:
    """check (a user action) -> switch on its output -> one leaf per branch."""
    return workflow(
        name,
        user(1, f"{name}-check", {"default": [2]}, order="{$.input.order}"),
        system(2, "switch", {"big": [3], "paid": [4], "default": [5]}, **switch),
        user(3, f"{name}-big"),
        user(4, f"{name}-paid"),
        user(5, f"{name}-other"),
    )


CASES = [
    {"when": "{$1.output.amount} > 100", "branch": "big"},
    {"when": '{$1.output.status} == "PAID" && {$1.output.amount} < 100', "branch": "paid"},
]


async def run_check(api: Api, name: str, output: dict[str, Any], padding: str = "") -> str:
    flow_id = await api.start(name, {"order": 1, "padding": padding})
    task = await api.poll_one(f"{name}-check")
    assert task["flowId"] == flow_id
    response = await api.complete(task["taskId"], output)
    assert response.status_code == 200, response.text
    return flow_id


async def test_switch_cases_take_the_first_that_holds_else_default(api: Api) -> None:
    name = unique("cases")
    await api.register(order_workflow(name, cases=CASES))
    big = await run_check(api, name, {"amount": 250, "status": "PAID"})
    paid = await run_check(api, name, {"amount": 40, "status": "PAID"})
    other = await run_check(api, name, {"amount": 40, "status": "OPEN"})
    missing = await run_check(api, name, {})
    assert (await api.poll_one(f"{name}-big"))["flowId"] == big
    assert (await api.poll_one(f"{name}-paid"))["flowId"] == paid
    reached_default = {task["flowId"] for task in await api.poll([f"{name}-other"], most=2)}
    assert reached_default == {other, missing}

    switch = (await api.flow(big))["actions"]["2"]
    assert switch["status"] == "COMPLETED"
    assert switch["output"] == {"case": 0, "branch": "big"}
    assert switch["input"] == {"cases": [{"when": CASES[0]["when"], "value": True}]}
    switch = (await api.flow(paid))["actions"]["2"]
    assert switch["output"] == {"case": 1, "branch": "paid"}
    assert [case["value"] for case in switch["input"]["cases"]] == [False, True]
    switch = (await api.flow(other))["actions"]["2"]
    assert switch["output"] == {"case": None, "branch": "default"}
    assert [case["value"] for case in switch["input"]["cases"]] == [False, False]


async def test_switch_cases_on_a_large_document(api: Api) -> None:
    name = unique("cases-large")
    await api.register(order_workflow(name, cases=CASES))
    flow_id = await run_check(
        api, name, {"amount": 40, "status": "PAID"}, "x" * LARGE_PADDING_CHARS
    )
    assert (await api.poll_one(f"{name}-paid"))["flowId"] == flow_id
    assert (await api.flow(flow_id))["actions"]["2"]["output"] == {"case": 1, "branch": "paid"}


async def test_no_case_and_no_default_fails_naming_the_switch(api: Api) -> None:
    name = unique("cases-nomatch")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"big": [2]}, cases=[CASES[0] | {"when": "{$.input.n} > 100"}]),
            user(2, f"{name}-big"),
        )
    )
    flow_id = await api.start(name, {"n": 5})
    flow = await api.wait_status(flow_id, "FAILED")
    assert "action 1 (switch): no case holds and there is no default" in flow["reason"]
    assert flow["actions"]["1"]["status"] == "FAILED"


async def test_a_condition_that_cannot_be_evaluated_takes_the_error_branch(api: Api) -> None:
    name = unique("cases-error")
    when = "{$.input.total} / {$.input.count} > 10"
    await api.register(
        workflow(
            name,
            system(
                1, "switch", {"high": [2], "error": [3]}, cases=[{"when": when, "branch": "high"}]
            ),
            user(2, f"{name}-high"),
            user(3, f"{name}-oops", error="{$.1.output.error}"),
        )
    )
    await api.start(name, {"total": 50, "count": 0})
    task = await api.poll_one(f"{name}-oops")
    assert "division by zero" in task["input"]["error"]
    assert when in task["input"]["error"]


async def test_if_takes_the_true_and_the_false_branch(api: Api) -> None:
    name = unique("if")
    condition = '{$.input.country} in ["FR", "BE"] && !({$.input.age} < 18)'
    await api.register(
        workflow(
            name,
            system(1, "if", {"true": [2], "false": [3]}, condition=condition),
            user(2, f"{name}-yes"),
            user(3, f"{name}-no"),
        )
    )
    yes = await api.start(name, {"country": "BE", "age": 30})
    no = await api.start(name, {"country": "FR", "age": 12})
    assert (await api.poll_one(f"{name}-yes"))["flowId"] == yes
    assert (await api.poll_one(f"{name}-no"))["flowId"] == no
    flow = await api.flow(yes)
    assert flow["actions"]["1"]["output"] == {"value": True}
    assert flow["actions"]["1"]["input"] == {"condition": condition}
    assert (await api.flow(no))["actions"]["1"]["output"] == {"value": False}


async def test_if_without_the_branch_taken_ends_there(api: Api) -> None:
    name = unique("if-leaf")
    await api.register(
        workflow(
            name,
            system(1, "if", {"true": [2]}, condition="{$.input.go} == true"),
            user(2, f"{name}-go"),
        )
    )
    flow_id = await api.start(name, {"go": False})
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"value": False}
    assert "2" not in flow["actions"]


async def test_the_expression_switch_still_branches_on_a_value(api: Api) -> None:
    name = unique("expression-switch")
    await api.register(order_workflow(name, expression="{$1.output.kind}"))
    flow_id = await run_check(api, name, {"kind": "paid"})
    assert (await api.poll_one(f"{name}-paid"))["flowId"] == flow_id
    assert (await api.flow(flow_id))["actions"]["2"]["output"] == {"value": "paid"}


def bad(**switch: Any) -> dict[str, Any]:
    return order_workflow("bad", **switch)


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            bad(cases=[{"when": "{$1.output.amount} >> 3", "branch": "big"}]),
            "action 2 (switch): cases[0].when: at position 21: expected a value, found '>'",
        ),
        (
            bad(cases=[{"when": "true", "branch": "huge"}]),
            "action 2 (switch): cases[0]: branch 'huge' is not a branch of next",
        ),
        (
            bad(cases=[{"when": "true", "branch": "big"}]),
            "action 2 (switch): next.paid is not the branch of any case",
        ),
        (
            bad(cases=CASES, expression="{$.input.x}"),
            "action 2 (switch): a switch has an expression or cases, not both",
        ),
        (bad(), "action 2 (switch): switch needs an expression or cases"),
        (
            workflow("bad", system(1, "if", condition="amount > 3")),
            "action 1 (if): condition: at position 1: unknown word 'amount'",
        ),
        (
            workflow("bad", system(1, "if", {"yes": [2]}, condition="true"), user(2, "x")),
            "action 1 (if): next.yes is not a branch of if",
        ),
        (workflow("bad", system(1, "if")), "action 1 (if): if needs a condition"),
        (
            workflow("bad", system(1, "if", condition="!" * 80 + "true")),
            "action 1 (if): condition is nested 81 levels deep; at most 64",
        ),
    ],
)
async def test_bad_conditions_are_refused_with_422_naming_the_action(
    http: httpx.AsyncClient, definition: dict[str, Any], message: str
) -> None:
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(message), response.json()
