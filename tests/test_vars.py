"""Workflow variables over real HTTP, with tests acting as the workers: ``vars`` and the
``setVars`` of actions, read back as ``{$.vars.x}``."""

from __future__ import annotations

from typing import Any

import httpx

from app.settings import Settings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, serving
from tests.helpers.waiting import unique


def mutation(var: str, op: str, value: Any) -> dict[str, Any]:
    return {"var": var, "op": op, "value": value}


def var_changes(history: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(e["action"], e["var"], e["op"]) for e in history if e["event"] == "VAR_SET"]


async def test_each_op_applies_and_a_later_action_reads_the_vars(api: Api) -> None:
    name = unique("vars-ops")
    first, second = f"{name}-first", f"{name}-second"
    step = user(1, first, {"default": [2]})
    step["setVars"] = [
        mutation("total", "assign", "{$.output.total}"),
        mutation("count", "add", 2),
        mutation("count", "add", "{$.output.more}"),
        mutation("items", "append", "{$.output.item}"),
        mutation("seen", "removeKey", "b"),
        mutation("label", "assign", "{$.input.label}"),
    ]
    reader = user(
        2,
        second,
        total="{$.vars.total}",
        count="{$.vars.count}",
        items="{$.vars.items}",
        seen="{$.vars.seen}",
        text="n={$.vars.count} {$.vars.label}",
    )
    initial = {"total": None, "count": 1, "items": ["a"], "seen": {"a": 1, "b": 2}, "label": ""}
    await api.register(workflow(name, step, reader, vars=initial))
    flow_id = await api.start(name, {"label": "hi"})
    assert (await api.flow(flow_id))["vars"] == initial

    task = await api.poll_one(first)
    output = {"total": 12.5, "more": 3, "item": {"k": "v"}}
    response = await api.complete(task["taskId"], output)
    assert response.status_code == 200, response.text

    expected = {
        "total": 12.5,
        "count": 6,
        "items": ["a", {"k": "v"}],
        "seen": {"a": 1},
        "label": "hi",
    }
    following = await api.poll_one(second)
    assert following["input"] == {
        "total": 12.5,
        "count": 6,
        "items": ["a", {"k": "v"}],
        "seen": {"a": 1},
        "text": "n=6 hi",
    }
    flow = await api.flow(flow_id)
    assert flow["vars"] == expected
    assert flow["data"]["vars"] == expected
    assert var_changes(await api.history(flow_id)) == [
        (1, "total", "assign"),
        (1, "count", "add"),
        (1, "count", "add"),
        (1, "items", "append"),
        (1, "seen", "removeKey"),
        (1, "label", "assign"),
    ]


async def test_system_actions_read_and_set_vars(api: Api) -> None:
    name = unique("vars-system")
    script = system(1, "javascript", {"default": [2]}, expression="$.vars.count * 10")
    script["setVars"] = [mutation("count", "assign", "{$.output.result}")]
    branch = system(
        2,
        "switch",
        {"big": [3], "default": [4]},
        cases=[{"when": "{$.vars.count} > 5", "branch": "big"}],
    )
    await api.register(
        workflow(
            name,
            script,
            branch,
            user(3, f"{name}-big"),
            user(4, f"{name}-small"),
            vars={"count": 1},
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-big")
    assert task["flowId"] == flow_id
    assert (await api.flow(flow_id))["vars"] == {"count": 10}


async def test_two_parallel_completions_each_add_one(api: Api, http: httpx.AsyncClient) -> None:
    """Both results come in one batch, so both are planned from the same read of the run
    (here the copy kept from the poll): the second is planned again after the first got
    in, and the counter ends at +2."""
    await _two_parallel_completions_each_add_one(api, http)


async def test_two_parallel_completions_each_add_one_without_kept_runs(
    settings: Settings, redis_client: Any
) -> None:
    """The same without copies of runs kept from polls: both results read their run."""
    with serving(settings.model_copy(update={"run_cache_size": 0})) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await _two_parallel_completions_each_add_one(Api(http), http)


async def _two_parallel_completions_each_add_one(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("vars-parallel")
    left, right = user(2, f"{name}-left"), user(3, f"{name}-right")
    for branch in (left, right):
        branch["setVars"] = [
            mutation("count", "add", 1),
            mutation("seen", "append", branch["name"]),
        ]
    head = system(1, "switch", {"default": [2, 3]}, expression="go")
    await api.register(workflow(name, head, left, right, vars={"count": 40, "seen": []}))
    flow_id = await api.start(name)
    tasks = [await api.poll_one(f"{name}-left"), await api.poll_one(f"{name}-right")]

    body = {"results": [{"taskId": task["taskId"], "output": {}} for task in tasks]}
    response = await http.post("/tasks/results", json=body)

    assert response.status_code == 200, response.text
    assert [result["status"] for result in response.json()["results"]] == [200, 200]
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["vars"]["count"] == 42
    assert sorted(flow["vars"]["seen"]) == sorted([f"{name}-left", f"{name}-right"])
    assert sorted(var_changes(await api.history(flow_id))) == [
        (2, "count", "add"),
        (2, "seen", "append"),
        (3, "count", "add"),
        (3, "seen", "append"),
    ]


async def test_a_mutation_that_cannot_apply_fails_the_execution(api: Api) -> None:
    name = unique("vars-fail")
    step = user(1, f"{name}-step", {"default": [2], "error": [3]})
    step["setVars"] = [mutation("count", "add", 1), mutation("items", "append", "{$.output.x}")]
    await api.register(
        workflow(
            name,
            step,
            user(2, f"{name}-ok"),
            user(3, f"{name}-recover", why="{$.1.output.error}", count="{$.vars.count}"),
            vars={"count": 0, "items": "not a list"},
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-step")
    response = await api.complete(task["taskId"], {"x": 1})
    assert response.status_code == 200, response.text

    recover = await api.poll_one(f"{name}-recover")
    assert recover["flowId"] == flow_id
    assert "setVars[1] (append items)" in recover["input"]["why"]
    assert "list" in recover["input"]["why"]
    assert recover["input"]["count"] == 0  # all of the action's mutations or none
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert flow["vars"] == {"count": 0, "items": "not a list"}
    assert var_changes(await api.history(flow_id)) == []


async def test_add_beyond_exact_integers_fails_the_run_without_error_branch(api: Api) -> None:
    name = unique("vars-big")
    step = user(1, f"{name}-step")
    step["setVars"] = [mutation("count", "add", "{$.output.n}")]
    await api.register(workflow(name, step, vars={"count": 2**53}))
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-step")
    assert (await api.complete(task["taskId"], {"n": 1})).status_code == 200
    flow = await api.wait_status(flow_id, "FAILED")
    assert "2^53" in flow["reason"]
    assert flow["vars"] == {"count": 2**53}


async def test_a_delay_sets_vars_when_it_fires(api: Api) -> None:
    name = unique("vars-delay")
    pause = system(1, "delay", {"default": [2]}, delaySeconds=0.05)
    pause["setVars"] = [mutation("done", "assign", True)]
    await api.register(
        workflow(name, pause, user(2, f"{name}-after", done="{$.vars.done}"), vars={"done": False})
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-after")
    assert (task["flowId"], task["input"]) == (flow_id, {"done": True})


BAD_DEFINITIONS = [
    ({"vars": [1]}, [], "vars must be an object"),
    ({"vars": {"a": 0}}, [mutation("b", "assign", 1)], "'b' is not declared"),
    ({"vars": {"a": 0}}, [mutation("a", "multiply", 1)], "op must be one of"),
    ({"vars": {"a": 0}}, [mutation("a", "add", "x")], "must be a number for add"),
    ({"vars": {"a": {}}}, [mutation("a", "removeKey", 3)], "a key (a string)"),
    ({"vars": {"a": 0}}, [{"var": "a", "op": "assign"}], "value is missing"),
    ({"vars": {"a": 0}}, [mutation("a", "assign", "{$.output[}")], "does not parse"),
    ({"vars": {"a": 0}}, {"var": "a"}, "setVars must be a list"),
]


async def test_bad_definitions_are_refused_naming_the_action(http: httpx.AsyncClient) -> None:
    for extra, set_vars, message in BAD_DEFINITIONS:
        step = user(1, "step")
        if set_vars:
            step["setVars"] = set_vars
        response = await http.post(
            "/metadata/workflow", json=workflow(unique("vars-bad"), step, **extra)
        )
        assert response.status_code == 422, (extra, set_vars, response.text)
        error = response.json()["error"]
        assert message in error, (message, error)
        if set_vars:
            assert "action 1 (step)" in error


async def test_terminate_takes_no_set_vars(http: httpx.AsyncClient) -> None:
    end = system(1, "terminate", parameters={"status": "COMPLETED"})
    end["setVars"] = [mutation("a", "assign", 1)]
    response = await http.post(
        "/metadata/workflow", json=workflow(unique("vars-end"), end, vars={"a": 0})
    )
    assert response.status_code == 422
    assert "action 1 (terminate)" in response.json()["error"]
