"""The README's promises about runs, held to its word over HTTP: idempotency keys belong to
their workflow, identical definitions are identical whatever their key order, an action
reached several times runs once per arrival, a terminated run refuses results, and a run
kept in a server's memory is never trusted once another server changed it or it was
evicted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store.keys import Keys
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique, wait_until

# -- idempotency ---------------------------------------------------------------------------


async def start_with_key(api: Api, name: str, key: str) -> dict[str, Any]:
    response = await api.http.post("/flow/execute", json={"name": name, "idempotencyKey": key})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_one_workflow_and_key_name_one_run(api: Api) -> None:
    name = unique("idem-same")
    action = f"{name}-a"
    await api.register(workflow(name, user(1, action)))

    first = await start_with_key(api, name, "k")
    again = await start_with_key(api, name, "k")

    assert first["created"] and not again["created"]
    assert again["flowId"] == first["flowId"]
    assert len(await api.poll([action], most=5, wait=0.2)) == 1


async def test_one_key_in_two_workflows_names_two_runs(api: Api) -> None:
    names = [unique("idem-one"), unique("idem-two")]
    for name in names:
        await api.register(workflow(name, user(1, f"{name}-a")))

    started = [await start_with_key(api, name, "shared-key") for name in names]

    assert [answer["created"] for answer in started] == [True, True]
    assert started[0]["flowId"] != started[1]["flowId"]
    for name, answer in zip(names, started, strict=True):
        assert (await api.flow(answer["flowId"]))["name"] == name
        assert await start_with_key(api, name, "shared-key") == {**answer, "created": False}


async def test_a_key_cannot_reach_into_another_workflows_name(api: Api) -> None:
    """Workflow ``x\\ny`` with key ``k``, and workflow ``x`` with key ``y\\nk``, are two runs."""
    base = unique("idem-x")
    for name in (f"{base}\ny", base):
        await api.register(workflow(name, user(1, unique("t"))))

    first = await start_with_key(api, f"{base}\ny", "k")
    second = await start_with_key(api, base, "y\nk")

    assert first["created"] and second["created"]
    assert first["flowId"] != second["flowId"]
    assert (await api.flow(first["flowId"]))["name"] == f"{base}\ny"
    assert (await api.flow(second["flowId"]))["name"] == base


# -- versions ----------------------------------------------------------------------------


def reordered(value: Any) -> Any:
    """``value`` with the keys of every object in reverse order (arrays keep theirs)."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


async def post_definition(http: httpx.AsyncClient, definition: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_an_identical_definition_in_any_key_order_adds_no_version(api: Api) -> None:
    name = unique("key-order")
    definition = workflow(
        name,
        user(1, f"{name}-a", {"default": [2], "error": [3]}, b="{$.input.b}", a={"y": 1, "x": 2}),
        system(2, "switch", {"1": [3], "default": [3]}, expression="{$.1.output.v}"),
        system(3, "delay", delaySeconds=0),
        output={"z": "{$.3.output}", "a": "{$.1.output}"},
    )
    shuffled = reordered(definition)
    assert list(shuffled) != list(definition)
    assert list(shuffled["actions"][0]["parameters"]["a"]) == ["x", "y"]

    assert await post_definition(api.http, definition) == {
        "name": name,
        "version": 1,
        "created": True,
    }
    assert await post_definition(api.http, shuffled) == {
        "name": name,
        "version": 1,
        "created": False,
    }

    changed = reordered(definition)
    changed["actions"][0]["parameters"]["a"]["y"] = 3
    assert await post_definition(api.http, changed) == {
        "name": name,
        "version": 2,
        "created": True,
    }
    # Either version, posted again in another order, is the one already stored.
    assert (await post_definition(api.http, definition))["version"] == 1
    assert (await post_definition(api.http, reordered(changed)))["version"] == 2
    latest = (await api.http.get(f"/metadata/workflow/{name}")).json()
    assert latest["version"] == 2


# -- executions ---------------------------------------------------------------------------


async def test_an_action_reached_several_times_runs_once_per_arrival(api: Api) -> None:
    """Three branches lead to action 5: it runs three times, each with its own task, and the
    run completes once all three have."""
    name = unique("arrivals")
    first, middle, last = f"{name}-first", f"{name}-middle", f"{name}-last"
    await api.register(
        workflow(
            name,
            user(1, first, {"default": [2, 3, 4]}),
            *(user(action_id, middle, {"default": [5]}, n=action_id) for action_id in (2, 3, 4)),
            user(5, last, came="{$.input.x}"),
        )
    )
    flow_id = await api.start(name, {"x": 1})
    assert (await api.complete((await api.poll_one(first))["taskId"], {})).status_code == 200
    middles = await poll_exactly(api, middle, 3)
    assert sorted(task["input"]["n"] for task in middles) == [2, 3, 4]

    for task in middles:
        assert (await api.complete(task["taskId"], {})).status_code == 200
    lasts = await poll_exactly(api, last, 3)

    assert [task["actionId"] for task in lasts] == [5, 5, 5]
    assert len({task["taskId"].split(".")[1] for task in lasts}) == 3
    for done, task in enumerate(lasts, start=1):
        assert (await api.flow(flow_id))["status"] == "RUNNING"
        assert (await api.complete(task["taskId"], {"done": done})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["5"]["output"] == {"done": 3}
    entries = await api.history(flow_id)
    assert sum(1 for e in entries if e["event"] == "COMPLETED" and e.get("action") == 5) == 3
    assert await api.poll([last], wait=0) == []


async def test_a_join_that_can_never_fire_fails_the_run_naming_it(api: Api) -> None:
    """The switch takes one branch; the join also waits for the action on the other."""
    name = unique("join-never")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"a": [2], "b": [3]}, expression="a"),
            user(2, f"{name}-a", {"default": [4]}),
            user(3, f"{name}-b", {"default": [4]}),
            system(4, "join", {"default": [5]}, joinOn=[2, 3]),
            user(5, f"{name}-after"),
        )
    )
    flow_id = await api.start(name)
    assert (await api.complete((await api.poll_one(f"{name}-a"))["taskId"], {})).status_code == 200

    flow = await api.wait_status(flow_id, "FAILED")
    assert "join action(s) 4" in flow["reason"], flow["reason"]
    assert await api.poll([f"{name}-b", f"{name}-after"], wait=0) == []


async def test_an_arrival_at_a_join_that_fired_is_recorded_and_ignored(api: Api) -> None:
    """The join waits for action 2 only; action 3 reaches it after it fired."""
    name = unique("join-late")
    left, right, after = f"{name}-left", f"{name}-right", f"{name}-after"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="x"),
            user(2, left, {"default": [4]}),
            user(3, right, {"default": [4]}),
            system(4, "join", {"default": [5]}, joinOn=[2]),
            user(5, after, got="{$.4.output.2.v}"),
        )
    )
    flow_id = await api.start(name)
    late = await api.poll_one(right)
    assert (await api.complete((await api.poll_one(left))["taskId"], {"v": 1})).status_code == 200
    fired = await api.poll_one(after)
    assert fired["input"] == {"got": 1}

    assert (await api.complete(late["taskId"], {})).status_code == 200

    async def arrival_recorded() -> bool:
        entries = await api.history(flow_id)
        return any(e["event"] == "JOIN_ALREADY_DONE" and e.get("action") == 4 for e in entries)

    await wait_until(arrival_recorded, what="the late arrival in the history")
    assert await api.poll([after], wait=0.3) == []
    assert (await api.complete(fired["taskId"], {})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["4"]["output"] == {"2": {"v": 1}}


async def test_one_event_wakes_the_oldest_wait_for_its_name(api: Api) -> None:
    """Wait 2 is reached at the start, wait 4 after a task: the first ``go`` ends wait 2
    only, the second ends wait 4."""
    name = unique("oldest-wait")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="x"),
            system(2, "wait", event="go"),
            user(3, f"{name}-a", {"default": [4]}),
            system(4, "wait", event="go"),
        )
    )
    flow_id = await api.start(name)
    assert (await api.complete((await api.poll_one(f"{name}-a"))["taskId"], {})).status_code == 200
    await wait_until(lambda: action_status_is(api, flow_id, "4", "WAITING"), what="wait 4")

    first = await api.http.post(f"/flow/{flow_id}/events/go", json={"n": 1})
    assert first.json() == {"status": "delivered"}
    await wait_until(lambda: action_status_is(api, flow_id, "2", "COMPLETED"), what="wait 2")
    flow = await api.flow(flow_id)
    assert (flow["actions"]["2"]["output"], flow["actions"]["4"]["status"]) == ({"n": 1}, "WAITING")

    second = await api.http.post(f"/flow/{flow_id}/events/go", json={"n": 2})
    assert second.json() == {"status": "delivered"}
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["4"]["output"] == {"n": 2}


async def action_status_is(api: Api, flow_id: str, action_id: str, status: str) -> bool:
    return bool((await api.flow(flow_id))["actions"].get(action_id, {}).get("status") == status)


async def poll_exactly(api: Api, action: str, count: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []

    async def all_leased() -> bool:
        tasks.extend(await api.poll([action], most=count - len(tasks), wait=1))
        return len(tasks) >= count

    await wait_until(all_leased, what=f"{count} tasks of {action}")
    assert len(tasks) == count
    return tasks


async def test_results_for_a_terminated_run_are_answered_409(api: Api) -> None:
    name = unique("terminated-results")
    action = f"{name}-a"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="x"),
            *(user(action_id, action) for action_id in (2, 3)),
        )
    )
    flow_id = await api.start(name)
    completing, failing = await poll_exactly(api, action, 2)
    assert (await api.http.post(f"/flow/{flow_id}/terminate")).status_code == 200

    answers = {
        "complete": await api.complete(completing["taskId"], {"late": True}),
        "fail": await api.fail(failing["taskId"], "late"),
        "heartbeat": await api.http.post(f"/tasks/{completing['taskId']}/heartbeat"),
        "event": await api.http.post(f"/flow/{flow_id}/events/e", json={}),
    }
    batch = await api.http.post(
        "/tasks/results", json={"results": [{"taskId": completing["taskId"], "output": {}}]}
    )

    for verb, answer in answers.items():
        assert answer.status_code == 409, (verb, answer.text)
        assert "error" in answer.json()
    assert batch.status_code == 200, batch.text
    assert [item["status"] for item in batch.json()["results"]] == [409]
    flow = await api.flow(flow_id)
    assert flow["status"] == "TERMINATED"
    # The actions still open are marked FAILED with the run's reason.
    for key in ("2", "3"):
        assert flow["actions"][key]["status"] == "FAILED"
        assert flow["actions"][key]["error"] == flow["reason"] != ""
        assert flow["actions"][key]["output"] is None


async def test_a_failing_run_marks_its_open_actions_failed(api: Api) -> None:
    name = unique("failed-open")
    failing, open_one = f"{name}-fails", f"{name}-open"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="x"),
            user(2, failing),
            user(3, open_one),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(failing)
    assert (await api.fail(task["taskId"], "broken", retryable=False)).status_code == 200

    flow = await api.wait_status(flow_id, "FAILED")
    assert "broken" in flow["reason"]
    assert flow["actions"]["3"]["status"] == "FAILED"
    assert flow["actions"]["3"]["error"] == flow["reason"]
    assert await api.poll([open_one], wait=0) == []


async def test_a_paused_run_delivers_queued_tasks_and_holds_results_and_events(
    api: Api,
) -> None:
    name = unique("paused")
    first, after = f"{name}-first", f"{name}-after"
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="x"),
            user(2, first),
            system(3, "wait", {"default": [4]}, event="go"),
            user(4, after, got="{$.3.output.v}"),
        )
    )
    flow_id = await api.start(name)
    await wait_until(lambda: action_status_is(api, flow_id, "3", "WAITING"), what="the wait")
    assert (await api.http.post(f"/flow/{flow_id}/pause")).status_code == 200

    task = await api.poll_one(first)
    event = await api.http.post(f"/flow/{flow_id}/events/go", json={"v": 7})
    result = await api.complete(task["taskId"], {"done": True})

    assert event.json() == {"status": "held"}
    assert result.json() == {"status": "held"}
    assert await api.poll([after], wait=0.3) == []
    flow = await api.flow(flow_id)
    assert (flow["status"], flow["actions"]["2"]["status"]) == ("PAUSED", "RUNNING")

    assert (await api.http.post(f"/flow/{flow_id}/resume")).status_code == 200
    resumed = await api.poll_one(after)
    assert resumed["input"] == {"got": 7}
    assert (await api.complete(resumed["taskId"], {})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["2"]["output"] == {"done": True}


# -- runs kept in memory -----------------------------------------------------------------


@asynccontextmanager
async def api_of(thread: ServerThread) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=thread.url, timeout=30) as client:
        yield Api(client)


@pytest.fixture
def small_cache_server(settings: Settings) -> Iterator[ServerThread]:
    with serving(settings.model_copy(update={"run_cache_size": 1})) as thread:
        yield thread


def chain(name: str, action: str) -> dict[str, Any]:
    """1 -> (2 -> 4, and 3 on a queue of its own); 4 shows what 2 and 3 gave."""
    return workflow(
        name,
        user(1, action, {"default": [2, 3]}),
        user(2, action, {"default": [4]}),
        user(3, f"{action}-side"),
        user(4, action, fromTwo="{$.2.output.v}", fromThree="{$.3.output.from}"),
    )


async def take_next(api: Api, task: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    """Completes ``task`` offering its slot; returns the one task handed back."""
    offer = {"workerId": "kept", "actions": [task["name"]], "max": 1}
    body = {"results": [{"taskId": task["taskId"], "output": output}], "next": offer}
    response = await api.http.post("/tasks/results", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [item["status"] for item in answer["results"]] == [200], answer
    [handed] = answer["tasks"]
    assert isinstance(handed, dict)
    return handed


async def test_a_run_kept_by_one_server_and_changed_by_another_is_read_again(
    api: Api, small_cache_server: ServerThread
) -> None:
    """Server A keeps the run from the result that took task 2; server B then completes task
    3, and only B hears of it. Task 2's result, sent to A, must plan from the run as B left
    it."""
    name = unique("kept-elsewhere")
    action = f"{name}-a"
    async with api_of(small_cache_server) as on_a:
        await on_a.register(chain(name, action))
        flow_id = await on_a.start(name)
        second = await take_next(on_a, await on_a.poll_one(action), {})
        assert second["actionId"] == 2
        assert flow_id in small_cache_server.app.state.engine.runs

        third = await api.poll_one(f"{action}-side")
        assert (await api.complete(third["taskId"], {"from": "server B"})).status_code == 200
        fourth = await take_next(on_a, second, {"v": 2})

    assert (fourth["actionId"], fourth["input"]) == (4, {"fromTwo": 2, "fromThree": "server B"})


async def test_a_run_evicted_from_memory_is_read_again(
    api: Api, small_cache_server: ServerThread
) -> None:
    """With room for one run, keeping a second evicts the first; the first's next result is
    planned from the run read again, as another server changed it meanwhile."""
    name = unique("kept-evicted")
    action = f"{name}-a"
    engine = small_cache_server.app.state.engine
    async with api_of(small_cache_server) as on_a:
        await on_a.register(chain(name, action))
        flows = []
        handed = {}
        for _ in range(2):
            flow_id = await on_a.start(name)
            flows.append(flow_id)
            handed[flow_id] = await take_next(on_a, await on_a.poll_one(action), {})
            assert flow_id in engine.runs
        assert flows[0] not in engine.runs
        # Both runs queued a side task; the two partitions' queues are polled in no set order.
        side_tasks = [await api.poll_one(f"{action}-side") for _ in flows]
        [third] = [task for task in side_tasks if task["flowId"] == flows[0]]
        assert (await api.complete(third["taskId"], {"from": "server B"})).status_code == 200
        fourth = await take_next(on_a, handed[flows[0]], {"v": "evicted"})

    assert fourth["flowId"] == flows[0]
    assert fourth["input"] == {"fromTwo": "evicted", "fromThree": "server B"}


async def test_a_server_without_a_run_cache_keeps_nothing_and_runs_the_same(
    settings: Settings,
) -> None:
    name = unique("no-cache")
    action = f"{name}-a"
    with serving(settings.model_copy(update={"run_cache_size": 0})) as thread:
        async with api_of(thread) as on_it:
            await on_it.register(chain(name, action))
            flow_id = await on_it.start(name)
            second = await take_next(on_it, await on_it.poll_one(action), {})
            assert flow_id not in thread.app.state.engine.runs
            third = await on_it.poll_one(f"{action}-side")
            assert (await on_it.complete(third["taskId"], {"from": "poll"})).status_code == 200
            fourth = await take_next(on_it, second, {"v": 0})
            assert fourth["input"] == {"fromTwo": 0, "fromThree": "poll"}
            assert (await on_it.complete(fourth["taskId"], {})).status_code == 200
            await on_it.wait_status(flow_id, "COMPLETED")


async def test_a_run_kept_after_a_script_reload_is_the_run_as_its_transition_left_it(
    api: Api, small_cache_server: ServerThread, redis_client: Any
) -> None:
    """The run is read "in the same round trip as its transition": also when Redis had
    forgotten the script and it ran again after that round trip's read."""
    name = unique("kept-reloaded")
    action = f"{name}-a"
    engine = small_cache_server.app.state.engine
    async with api_of(small_cache_server) as on_a:
        await on_a.register(chain(name, action))
        flow_id = await on_a.start(name)
        first = await on_a.poll_one(action)
        await redis_client.script_flush()
        second = await take_next(on_a, first, {})

        assert second["actionId"] == 2
        kept = engine.runs.peek(flow_id)
        stored = await redis_client.hgetall(Keys(engine.store.keys.partitions).run(flow_id).run)
        assert kept == stored
