"""POST /flow/{id}/retry and /flow/{id}/rerun over real HTTP: a real server, real workers
(app/engine/repair.py, retry.lua, note_rerun.lua)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.settings import Settings
from orchy import NonRetryableError
from tests.helpers.definitions import sub_workflow, system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import fast_worker, new_worker, running


class Breakable:
    """A user action that fails for good while ``broken`` (or for the inputs ``breaks_on``
    accepts), and otherwise answers ``{"got": <its input>}``; it keeps every input it got."""

    def __init__(self, broken: bool = False, breaks_on: Any = None) -> None:
        self.broken = broken
        self.breaks_on = breaks_on
        self.inputs: list[dict[str, Any]] = []

    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        self.inputs.append(task)
        if self.broken or (self.breaks_on is not None and self.breaks_on(task)):
            raise NonRetryableError(f"broken on {task}")
        return {"got": task}


@asynccontextmanager
async def serving(
    server: ServerThread, settings: Settings, handlers: Mapping[str, Breakable]
) -> AsyncIterator[None]:
    worker = new_worker(server.url, fast_worker(settings), concurrency=4)
    for name, handler in handlers.items():
        worker.action(name)(handler)
    async with running(worker):
        yield


async def retry(http: httpx.AsyncClient, flow_id: str, body: Any = None) -> httpx.Response:
    return await http.post(f"/flow/{flow_id}/retry", json=body)


def events(history: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in history if entry["event"] == name]


async def test_a_failed_task_in_a_chain_goes_on_with_a_new_input(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("chain")
    first, middle, last = f"{name}-a", f"{name}-b", f"{name}-c"
    await api.register(
        workflow(
            name,
            user(1, first, {"default": [2]}, n="{$.input.n}"),
            user(2, middle, {"default": [3]}, n="{$.1.output.got.n}"),
            user(3, last, n="{$.2.output.got.n}"),
        )
    )
    handlers = {first: Breakable(), middle: Breakable(broken=True), last: Breakable()}
    async with serving(server, settings, handlers):
        flow_id = await api.start(name, {"n": 1})
        failed = await api.wait_status(flow_id, "FAILED")
        assert failed["actions"]["2"]["status"] == "FAILED"

        handlers[middle].broken = False
        answer = await retry(http, flow_id, {"input": {"n": 5}})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "ok", "actions": [2]}
        run = await api.wait_status(flow_id, "COMPLETED")

    assert run["actions"]["3"]["output"] == {"got": {"n": 5}}
    assert run["actions"]["1"]["executions"] == 1  # completed work is kept
    assert (run["actions"]["2"]["executions"], run["actions"]["2"]["attempts"]) == (2, 1)
    assert len(handlers[first].inputs) == 1
    assert handlers[middle].inputs == [{"n": 1}, {"n": 5}]
    assert "finishedAt" in run and run["reason"] == ""
    executions = (await http.get(f"/flow/{flow_id}/actions/2/executions")).json()["executions"]
    assert [(e["status"], e["attempts"]) for e in executions] == [("FAILED", 1), ("COMPLETED", 1)]
    [retried] = events(await api.history(flow_id), "RUN_RETRIED")
    assert (retried["by"], retried["actions"]) == ("anonymous", [2])

    conflict = await retry(http, flow_id)  # COMPLETED
    assert conflict.status_code == 409 and "COMPLETED" in conflict.json()["error"]
    missing = await retry(http, "0" * 32)
    assert missing.status_code == 404 and "error" in missing.json()


async def test_retry_refuses_running_runs_and_bad_inputs(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("refusals")
    queue = f"{name}-work"
    await api.register(workflow(name, user(1, queue)))
    running_id = await api.start(name)
    answer = await retry(http, running_id)
    assert answer.status_code == 409 and "RUNNING" in answer.json()["error"]

    async with serving(server, settings, {queue: Breakable(broken=True)}):
        await api.wait_status(running_id, "FAILED")
    wrong_id = await retry(http, running_id, {"inputs": {"7": {}}})
    assert wrong_id.status_code == 422 and "inputs.7" in wrong_id.json()["error"]
    assert (await api.flow(running_id))["status"] == "FAILED"


async def test_a_failed_branch_before_a_join_keeps_the_other_branch(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("fork")
    left, right, after = f"{name}-left", f"{name}-right", f"{name}-after"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="go"),
            user(2, left, {"default": [4]}, side="l"),
            user(3, right, {"default": [4]}, side="r"),
            system(4, "join", {"default": [5]}, joinOn=[2, 3]),
            user(5, after, both="{$.4.output}"),
        )
    )
    handlers = {left: Breakable(), right: Breakable(broken=True), after: Breakable()}
    flow_id = await api.start(name)
    # The left branch reaches the join first; then the right one fails the run.
    async with serving(server, settings, {left: handlers[left]}):

        async def left_done() -> bool:
            return bool((await api.flow(flow_id))["actions"]["2"]["status"] == "COMPLETED")

        await wait_until(left_done, 15.0, what="the left branch")
    async with serving(server, settings, {right: handlers[right]}):
        await api.wait_status(flow_id, "FAILED")

    handlers[right].broken = False
    answer = await retry(http, flow_id, {"inputs": {"3": {"side": "R"}}})
    assert answer.json()["actions"] == [3, 4]
    async with serving(server, settings, handlers):
        run = await api.wait_status(flow_id, "COMPLETED")
    assert len(handlers[left].inputs) == 1
    assert run["actions"]["2"]["executions"] == 1
    assert handlers[after].inputs == [
        {"both": {"2": {"got": {"side": "l"}}, "3": {"got": {"side": "R"}}}}
    ]


async def test_a_failed_for_each_item_runs_again_alone(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("items")
    body, after = f"{name}-item", f"{name}-after"
    await api.register(
        workflow(
            name,
            system(
                1,
                "forEach",
                {"default": [2]},
                items="{$.input.items}",
                body={"type": "user", "name": body, "parameters": {"n": "{$.item}"}},
                concurrency=1,
                onItemFailure="fail",
            ),
            user(2, after, all="{$.1.output}"),
        )
    )
    handler = Breakable(breaks_on=lambda task: task["n"] == 3)
    handlers = {body: handler, after: Breakable()}
    async with serving(server, settings, handlers):
        flow_id = await api.start(name, {"items": [1, 2, 3, 4]})
        await api.wait_status(flow_id, "FAILED")
        assert [task["n"] for task in handler.inputs] == [1, 2, 3]

        handler.breaks_on = None
        assert (await retry(http, flow_id)).json()["actions"] == [1]
        run = await api.wait_status(flow_id, "COMPLETED")
    # Items 1 and 2 ran once: only item 3 ran again, then item 4.
    assert [task["n"] for task in handler.inputs] == [1, 2, 3, 3, 4]
    assert run["actions"]["1"]["output"] == [{"got": {"n": n}} for n in (1, 2, 3, 4)]


async def test_a_failed_sub_workflow_starts_a_new_child(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    parent, child = unique("parent"), unique("child")
    work, after = f"{child}-work", f"{parent}-after"
    await api.register(workflow(child, user(1, work, n="{$.input.n}")))
    await api.register(
        workflow(
            parent,
            sub_workflow(1, child, {"default": [2]}, n="{$.input.n}"),
            user(2, after, child="{$.1.output}"),
        )
    )
    handlers = {work: Breakable(broken=True), after: Breakable()}
    async with serving(server, settings, handlers):
        flow_id = await api.start(parent, {"n": 7})
        await api.wait_status(flow_id, "FAILED")
        [first_child] = (await api.flow(flow_id))["children"]
        child_refused = await retry(http, first_child["flowId"])
        assert child_refused.status_code == 409
        assert flow_id in child_refused.json()["error"]

        handlers[work].broken = False
        assert (await retry(http, flow_id)).json()["actions"] == [1]
        run = await api.wait_status(flow_id, "COMPLETED")
    children = run["children"]
    assert len(children) == 2 and children[0]["flowId"] == first_child["flowId"]
    assert (await api.flow(children[0]["flowId"]))["status"] == "FAILED"
    assert (await api.flow(children[1]["flowId"]))["status"] == "COMPLETED"
    assert handlers[work].inputs == [{"n": 7}, {"n": 7}]


async def test_a_terminated_task_in_flight_starts_again_and_its_old_lease_is_refused(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("inflight")
    queue = f"{name}-work"
    await api.register(workflow(name, user(1, queue, n=1)))
    flow_id = await api.start(name)
    old = await api.poll_one(queue)
    assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 200

    assert (await retry(http, flow_id)).json()["actions"] == [1]
    late = await api.complete(old["taskId"], {"late": True})
    assert late.status_code == 409
    handler = Breakable()
    async with serving(server, settings, {queue: handler}):
        run = await api.wait_status(flow_id, "COMPLETED")
    assert run["actions"]["1"]["output"] == {"got": {"n": 1}}
    assert run["actions"]["1"]["executions"] == 2


async def test_a_delay_and_a_wait_open_at_termination_start_again(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("timers")
    queue = f"{name}-work"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="go"),
            system(2, "delay", {"default": [4]}, delaySeconds=0.3),
            system(3, "wait", {"default": [4]}, event="go"),
            system(4, "join", {"default": [5]}, joinOn=[2, 3]),
            user(5, queue, event="{$.3.output}"),
        )
    )
    flow_id = await api.start(name)
    assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 200
    assert (await retry(http, flow_id)).json()["actions"] == [2, 3]
    sent = await http.post(f"/flow/{flow_id}/events/go", json={"ok": 1})
    assert sent.json()["status"] == "delivered"
    async with serving(server, settings, {queue: Breakable()}):
        run = await api.wait_status(flow_id, "COMPLETED")
    assert run["actions"]["5"]["output"] == {"got": {"event": {"ok": 1}}}


async def test_rerun_starts_a_new_run_and_both_histories_say_so(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("rerun")
    queue = f"{name}-work"
    await api.register(workflow(name, user(1, queue, n="{$.input.n}")))
    async with serving(server, settings, {queue: Breakable()}):
        old = await api.start(name, {"n": 1})
        await api.wait_status(old, "COMPLETED")
        same = await http.post(f"/flow/{old}/rerun")
        assert same.status_code == 201, same.text
        again = same.json()["flowId"]
        changed = (await http.post(f"/flow/{old}/rerun", json={"input": {"n": 2}})).json()
        first = await api.wait_status(again, "COMPLETED")
        second = await api.wait_status(changed["flowId"], "COMPLETED")
    assert again != old
    assert first["rerunOf"] == old and "rerunOf" not in await api.flow(old)
    assert first["actions"]["1"]["output"] == {"got": {"n": 1}}
    assert second["input"] == {"n": 2}
    [origin] = events(await api.history(again), "RERUN_OF")
    assert (origin["flow"], origin["by"]) == (old, "anonymous")
    noted = [entry["flow"] for entry in events(await api.history(old), "RERUN")]
    assert noted == [again, changed["flowId"]]
    assert (await http.post(f"/flow/{'0' * 32}/rerun")).status_code == 404


async def test_a_loop_goes_on_from_the_failed_pass(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    name = unique("loop")
    step, report = f"{name}-step", f"{name}-report"
    await api.register(
        workflow(
            name,
            system(1, "while", {"body": [2], "default": [3]}, condition="{$.vars.count} < 4"),
            {
                **user(2, step, {"default": [1]}, n="{$.1.output.iteration}"),
                "setVars": [{"var": "count", "op": "add", "value": 1}],
            },
            user(3, report, total="{$.vars.count}"),
            vars={"count": 0},
        )
    )
    handler = Breakable(breaks_on=lambda task: task["n"] == 3)
    handlers = {step: handler, report: Breakable()}
    async with serving(server, settings, handlers):
        flow_id = await api.start(name)
        await api.wait_status(flow_id, "FAILED")
        handler.breaks_on = None
        assert (await retry(http, flow_id)).json()["actions"] == [2]
        await api.wait_status(flow_id, "COMPLETED")
    # Passes 1 and 2 are kept (and their variable changes): only pass 3 ran again.
    assert [task["n"] for task in handler.inputs] == [1, 2, 3, 3, 4]
    assert handlers[report].inputs == [{"total": 4}]


async def test_a_run_failed_by_a_terminate_action_has_nothing_to_retry(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("ended")
    await api.register(
        workflow(name, system(1, "terminate", parameters={"status": "FAILED", "reason": "no"}))
    )
    flow_id = await api.start(name)
    await api.wait_status(flow_id, "FAILED")
    answer = await retry(http, flow_id)
    assert answer.status_code == 409
    assert "no failed or interrupted action" in answer.json()["error"]


async def test_a_for_each_of_sub_workflows_starts_a_new_child_for_the_failed_item(
    api: Api, http: httpx.AsyncClient, server: ServerThread, settings: Settings
) -> None:
    parent, child = unique("fe-parent"), unique("fe-child")
    work = f"{child}-work"
    await api.register(workflow(child, user(1, work, n="{$.input.n}"), output="{$.1.output}"))
    body = {"workflow": child, "input": {"n": "{$.item}"}}
    await api.register(
        workflow(
            parent,
            system(1, "forEach", items="{$.input.items}", body=body, concurrency=1),
        )
    )
    handler = Breakable(breaks_on=lambda task: task["n"] == 2)
    async with serving(server, settings, {work: handler}):
        flow_id = await api.start(parent, {"items": [1, 2, 3]})
        await api.wait_status(flow_id, "FAILED")
        handler.breaks_on = None
        assert (await retry(http, flow_id)).json()["actions"] == [1]
        run = await api.wait_status(flow_id, "COMPLETED")
    assert [task["n"] for task in handler.inputs] == [1, 2, 2, 3]
    assert run["actions"]["1"]["output"] == [{"got": {"n": n}} for n in (1, 2, 3)]
    statuses = [(await api.flow(link["flowId"]))["status"] for link in run["children"]]
    assert sorted(statuses) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
