"""Loops (the ``while`` system action) over real HTTP, their body actions answered by real
workers: passes and iteration numbers, do-while, nested loops, a join in a loop body, the
per-run limit of executions, and what registration refuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.jsontypes import JSONObject
from app.settings import Settings
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, api_of
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import (
    TappedServer,
    fast_worker,
    new_worker,
    running,
    tapped_serving,
)

LIMIT = 12
LIMIT_REASON = f"run reached its limit of {LIMIT} executions (ORCHY_MAX_RUN_EXECUTIONS)"


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return fast_worker(settings)


@pytest.fixture(scope="module")
def limited(settings: Settings, redis_client: Any) -> Iterator[TappedServer]:
    """A server whose runs may create at most ``LIMIT`` executions each."""
    with tapped_serving(settings.model_copy(update={"max_run_executions": LIMIT})) as server:
        yield server


def while_(
    action_id: int, condition: str, body: list[int], after: list[int] | None = None, **fields: Any
) -> dict[str, Any]:
    nxt = {"body": body} if after is None else {"body": body, "default": after}
    return system(action_id, "while", nxt, condition=condition, **fields)


def add_one(action: dict[str, Any], var: str) -> dict[str, Any]:
    return {**action, "setVars": [{"var": var, "op": "add", "value": 1}]}


def completions(history: list[dict[str, Any]], action_id: int) -> int:
    return sum(1 for e in history if e["event"] == "COMPLETED" and e.get("action") == action_id)


async def test_a_while_runs_its_body_while_the_condition_holds(
    api: Api, tapped: TappedServer, worker_settings: Settings
) -> None:
    """LiteFlow's ``WHILE(x).DO(body)``: the body adds one to value1 until it is 3."""
    name = unique("loop-while")
    seen: list[JSONObject] = []
    after: list[JSONObject] = []
    worker = new_worker(tapped.url, worker_settings)

    @worker.action(f"{name}-inc")
    def inc(input: JSONObject) -> JSONObject:
        seen.append(input)
        return {"ok": True}

    @worker.action(f"{name}-after")
    def finish(input: JSONObject) -> JSONObject:
        after.append(input)
        return {}

    body = user(
        2,
        f"{name}-inc",
        {"default": [1]},
        iteration="{$.1.output.iteration}",
        value="{$.vars.value1}",
    )
    definition = workflow(
        name,
        while_(1, "{$.vars.value1} < 3", body=[2], after=[3]),
        add_one(body, "value1"),
        user(3, f"{name}-after", value="{$.vars.value1}", passes="{$.1.output.iteration}"),
        vars={"value1": 0},
    )
    await api.register(definition)
    async with running(worker):
        flow_id = await api.start(name)
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert seen == [{"iteration": n, "value": n - 1} for n in (1, 2, 3)]
    assert after == [{"value": 3, "passes": 3}]
    assert flow["actions"]["1"]["output"] == {"iteration": 3, "exited": True}
    assert flow["vars"] == {"value1": 3}
    history = await api.history(flow_id)
    assert completions(history, 1) == 4  # three passes, then the way out
    assert completions(history, 2) == 3


@pytest.mark.parametrize(("check", "passes"), [("after", 1), ("before", 0)])
async def test_a_do_while_runs_its_body_once_when_the_condition_never_holds(
    api: Api, tapped: TappedServer, worker_settings: Settings, check: str, passes: int
) -> None:
    name = unique(f"loop-{check}")
    seen: list[JSONObject] = []
    worker = new_worker(tapped.url, worker_settings)

    @worker.action(name)
    def body(input: JSONObject) -> JSONObject:
        seen.append(input)
        return {}

    await api.register(
        workflow(
            name,
            while_(1, "{$.input.again} == true", body=[2], check=check),
            user(2, name, {"default": [1]}, iteration="{$.1.output.iteration}"),
        )
    )
    async with running(worker):
        flow_id = await api.start(name, {"again": False})
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert seen == [{"iteration": 1}] * passes
    assert flow["actions"]["1"]["output"] == {"iteration": passes, "exited": True}


async def test_an_inner_loop_counts_again_from_one_in_each_pass_of_the_outer(
    api: Api, tapped: TappedServer, worker_settings: Settings
) -> None:
    name = unique("loop-nested")
    cells: list[tuple[int, int]] = []
    worker = new_worker(tapped.url, worker_settings)

    @worker.action(name)
    def cell(input: JSONObject) -> JSONObject:
        cells.append((input["outer"], input["inner"]))  # type: ignore[arg-type]
        return {}

    await api.register(
        workflow(
            name,
            while_(1, "{$.1.output.iteration} < 2", body=[2]),
            while_(2, "{$.2.output.iteration} < 3", body=[3], after=[1]),
            user(
                3,
                name,
                {"default": [2]},
                outer="{$.1.output.iteration}",
                inner="{$.2.output.iteration}",
            ),
        )
    )
    async with running(worker):
        flow_id = await api.start(name)
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert cells == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert flow["actions"]["1"]["output"] == {"iteration": 2, "exited": True}
    assert flow["actions"]["2"]["output"] == {"iteration": 3, "exited": True}


async def test_a_join_in_a_loop_body_fires_once_per_pass(
    api: Api, http: httpx.AsyncClient, tapped: TappedServer, worker_settings: Settings
) -> None:
    """split -> [left, prep -> right] -> join on left and right -> back to the while. From
    the second pass on, prep waits until left of its pass has completed: the join, reached
    by left, must wait for right of this pass, not take right's output of the last one."""
    name = unique("loop-join")
    splits: list[JSONObject] = []
    worker = new_worker(tapped.url, worker_settings, concurrency=4)

    @worker.action(f"{name}-split")
    def split(input: JSONObject) -> JSONObject:
        splits.append(input)
        return {}

    @worker.action(f"{name}-left")
    def left(input: JSONObject) -> JSONObject:
        return {"side": "left", "iteration": input["iteration"]}

    @worker.action(f"{name}-prep")
    async def prep(input: JSONObject) -> JSONObject:
        iteration = input["iteration"]
        if iteration != 1:

            async def left_done() -> bool:
                flow = (await http.get(f"/flow/{input['flow']}")).json()
                action = flow["actions"].get("3", {})
                return bool(
                    action.get("status") == "COMPLETED"
                    and action["output"] == {"side": "left", "iteration": iteration}
                )

            await wait_until(left_done, what=f"left of pass {iteration}")
        return {}

    @worker.action(f"{name}-right")
    def right(input: JSONObject) -> JSONObject:
        return {"side": "right", "iteration": input["iteration"]}

    iteration = "{$.1.output.iteration}"
    await api.register(
        workflow(
            name,
            while_(1, "{$.1.output.iteration} < 3", body=[2], after=[6]),
            user(
                2, f"{name}-split", {"default": [3, 4]}, iteration=iteration, joined="{$.5.output}"
            ),
            user(3, f"{name}-left", {"default": [5]}, iteration=iteration),
            user(4, f"{name}-prep", {"default": [7]}, iteration=iteration, flow="{$.flow.id}"),
            user(7, f"{name}-right", {"default": [5]}, iteration=iteration),
            system(5, "join", {"default": [1]}, joinOn=[3, 7]),
            user(6, f"{name}-split", joined="{$.5.output}", iteration="done"),
        )
    )
    async with running(worker):
        flow_id = await api.start(name)
        await api.wait_status(flow_id, "COMPLETED")

    def both(n: int) -> JSONObject:
        return {"3": {"side": "left", "iteration": n}, "7": {"side": "right", "iteration": n}}

    assert [(s["iteration"], s["joined"]) for s in splits[1:]] == [
        (2, both(1)),
        (3, both(2)),
        ("done", both(3)),
    ]
    assert splits[0]["iteration"] == 1
    assert completions(await api.history(flow_id), 5) == 3


async def test_a_loop_that_never_ends_fails_at_the_limit_with_a_user_action_body(
    limited: TappedServer, worker_settings: Settings
) -> None:
    name = unique("loop-forever")
    passes: list[int] = []
    worker = new_worker(limited.url, worker_settings)

    @worker.action(name)
    def spin(input: JSONObject) -> JSONObject:
        passes.append(input["iteration"])  # type: ignore[arg-type]
        return {}

    async with api_of(limited.url) as api:
        await api.register(
            workflow(
                name,
                while_(1, "true", body=[2]),
                user(2, name, {"default": [1]}, iteration="{$.1.output.iteration}"),
            )
        )
        async with running(worker):
            flow_id = await api.start(name)
            flow = await api.wait_status(flow_id, "FAILED")
        history = await api.history(flow_id)

    assert flow["reason"] == LIMIT_REASON
    assert passes == list(range(1, LIMIT // 2 + 1))  # while, body, while, body...
    assert len({e["seq"] for e in history if "seq" in e}) == LIMIT
    assert history[-1]["event"] == "RUN_FAILED"


@pytest.mark.parametrize("after_a_user_action", [False, True])
async def test_a_loop_of_system_actions_only_fails_at_the_limit(
    limited: TappedServer, worker_settings: Settings, after_a_user_action: bool
) -> None:
    """while -> if -> while...: planned in one pass (the start's, or a result's), which stops
    at the limit too."""
    name = unique("loop-system")
    worker = new_worker(limited.url, worker_settings)

    @worker.action(name)
    def first(input: JSONObject) -> JSONObject:
        return {}

    loop = [
        while_(2, "true", body=[3]),
        system(3, "if", {"true": [2]}, condition="{$.2.output.iteration} > 0"),
    ]
    root = user(1, name, {"default": [2]}) if after_a_user_action else None
    definition = workflow(name, root, *loop) if root is not None else workflow(name, *loop, root=2)
    async with api_of(limited.url) as api:
        await api.register(definition)
        async with running(worker):
            flow_id = await api.start(name)
            flow = await api.wait_status(flow_id, "FAILED")
        history = await api.history(flow_id)

    assert flow["reason"] == LIMIT_REASON
    assert len({e["seq"] for e in history if "seq" in e}) == LIMIT


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (
            [
                user(1, "a", {"default": [2]}),
                user(2, "b", {"default": [3]}),
                user(3, "c", {"default": [4, 2]}),
                user(4, "d"),
            ],
            "actions 2, 3 form a cycle that no condition can leave",
        ),
        (
            [
                user(1, "a", {"default": [2]}),
                system(2, "if", {"true": [3], "false": [3]}, condition="{$.input.x} > 1"),
                user(3, "c", {"default": [2]}),
            ],
            "actions 2, 3 form a cycle that no condition can leave",
        ),
        (
            [system(1, "while", {"body": [2]}), user(2, "b", {"default": [1]})],
            "action 1 (while): while needs a condition",
        ),
        (
            [system(1, "while", {"default": [2]}, condition="true"), user(2, "b")],
            "action 1 (while): while needs next.body",
        ),
        (
            [
                system(1, "while", {"body": [2]}, condition="true", check="during"),
                user(2, "b", {"default": [1]}),
            ],
            "action 1 (while): check must be one of 'before', 'after', not 'during'",
        ),
        (
            [system(1, "while", {"body": [2]}, condition="{$.x} <"), user(2, "b")],
            "action 1 (while): condition: at position",
        ),
        (
            [
                user(1, "a", {"default": [2]}),
                system(2, "while", {"body": [3]}, condition="true"),
                user(3, "c", {"default": [4]}),
                system(4, "join", {"default": [2]}, joinOn=[1, 3]),
            ],
            "action 4 (join): joinOn names action 1, which is not in the loop of action 2 (while)",
        ),
    ],
)
async def test_registration_refuses_loops_that_cannot_work(
    http: httpx.AsyncClient, actions: list[dict[str, Any]], message: str
) -> None:
    response = await http.post("/metadata/workflow", json=workflow(unique("bad"), *actions))
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(message), response.json()
