"""The engine's semantics over real HTTP, with tests acting as the worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.helpers.definitions import set_action, system, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until

HEARTBEAT_LEASE_SECONDS = 1.0
HEARTBEAT_LEASES_KEPT = 3
# The delay of the pause test falls due during the pause: far longer than the few requests
# between the run's start and the pause.
PAUSE_DELAY_SECONDS = 1.0


# -- switch ---------------------------------------------------------------------------


async def test_switch_takes_matching_then_default_branch(api: Api) -> None:
    name = unique("switch")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"true": [2], "default": [3]}, expression="{$.input.flag}"),
            user(2, f"{name}-yes"),
            user(3, f"{name}-other"),
        )
    )
    yes = await api.start(name, {"flag": True})
    other = await api.start(name, {"flag": 42})
    assert (await api.poll_one(f"{name}-yes"))["flowId"] == yes
    assert (await api.poll_one(f"{name}-other"))["flowId"] == other
    flow = await api.flow(yes)
    assert flow["actions"]["1"]["status"] == "COMPLETED"


async def test_switch_without_match_or_default_fails_naming_value(api: Api) -> None:
    name = unique("switch-nomatch")
    await api.register(
        workflow(
            name, system(1, "switch", {"MALE": [2]}, expression="{$.input.g}"), user(2, f"{name}-x")
        )
    )
    flow_id = await api.start(name, {"g": "OTHER"})
    flow = await api.wait_status(flow_id, "FAILED")
    assert "OTHER" in flow["reason"]
    assert flow["actions"]["1"]["status"] == "FAILED"


# -- javascript -----------------------------------------------------------------------


async def test_javascript_output_feeds_next_action(api: Api) -> None:
    name = unique("js")
    script = "$.total = $.input.a + $.input.b; $.input.a * 10"
    await api.register(
        workflow(
            name,
            system(1, "javascript", {"default": [2]}, expression=script),
            user(2, f"{name}-use", total="{$.1.output.total}", result="{$.1.output.result}"),
        )
    )
    flow_id = await api.start(name, {"a": 2, "b": 3})
    task = await api.poll_one(f"{name}-use")
    assert task["input"] == {"total": 5, "result": 20}
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["output"] == {"total": 5, "result": 20}


async def test_javascript_runtime_error_takes_error_branch(api: Api) -> None:
    name = unique("js-error")
    await api.register(
        workflow(
            name,
            system(1, "javascript", {"default": [2], "error": [3]}, expression="null.x"),
            user(2, f"{name}-ok"),
            user(3, f"{name}-recover", why="{$.1.output.error}"),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-recover")
    assert "TypeError" in task["input"]["why"]
    assert task["flowId"] == flow_id


async def test_javascript_syntax_error_is_rejected_at_registration(http: httpx.AsyncClient) -> None:
    definition = workflow(unique("js-syntax"), system(1, "javascript", expression="if ("))
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422
    assert "action 1" in response.json()["error"]


async def test_infinite_loop_fails_in_limit_and_server_keeps_answering(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("js-loop")
    await api.register(workflow(name, system(1, "javascript", expression="while(true){}")))
    starts = asyncio.gather(*(api.start(name) for _ in range(3)))
    answered = 0
    try:
        while not starts.done():
            health = await http.get("/health")
            assert health.status_code == 200, health.text
            answered += 1
    finally:
        await asyncio.wait([starts])
    # The starts plan the scripts, which loop until their time limit: /health answered
    # while they ran.
    assert answered > 0
    for flow_id in starts.result():
        flow = await api.wait_status(flow_id, "FAILED")
        assert "timed out" in flow["reason"]


# -- delay, wait ----------------------------------------------------------------------


async def test_delay_fires_then_continues(api: Api) -> None:
    name = unique("delay")
    await api.register(
        workflow(
            name, system(1, "delay", {"default": [2]}, delaySeconds=0.3), user(2, f"{name}-after")
        )
    )
    started = time.monotonic()
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-after", wait=5)
    assert time.monotonic() - started >= 0.3
    assert task["flowId"] == flow_id


async def test_wait_consumes_event_sent_before_it_is_reached(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("wait-early")
    await api.register(
        workflow(
            name,
            user(1, f"{name}-first", {"default": [2]}),
            system(2, "wait", {"open": [3], "default": [4]}, event="open", timeoutSeconds=30),
            user(3, f"{name}-opened", data="{$.2.output.clicks}"),
            user(4, f"{name}-timeout"),
        )
    )
    flow_id = await api.start(name)
    response = await http.post(f"/flow/{flow_id}/events/open", json={"clicks": 3})
    assert response.json() == {"status": "buffered"}
    first = await api.poll_one(f"{name}-first")
    await api.complete(first["taskId"], {})
    opened = await api.poll_one(f"{name}-opened")
    assert opened["input"] == {"data": 3}


async def test_wait_times_out_to_default(api: Api) -> None:
    name = unique("wait-timeout")
    await api.register(
        workflow(
            name,
            system(1, "wait", {"open": [2], "default": [3]}, event="open", timeoutSeconds=0.2),
            user(2, f"{name}-opened"),
            user(3, f"{name}-timeout", out="{$.1.output.timedOut}"),
        )
    )
    await api.start(name)
    task = await api.poll_one(f"{name}-timeout")
    assert task["input"] == {"out": True}


async def test_two_parallel_waits_wait_independently(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("two-waits")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="go"),
            system(2, "wait", {"default": [4]}, event="a", timeoutSeconds=30),
            system(3, "wait", {"default": [5]}, event="b", timeoutSeconds=30),
            user(4, f"{name}-a", v="{$.2.output.v}"),
            user(5, f"{name}-b", v="{$.3.output.v}"),
        )
    )
    flow_id = await api.start(name)
    await wait_until(
        lambda: _status_is(api, flow_id, "2", "WAITING"), what="first wait to be waiting"
    )
    delivered = await http.post(f"/flow/{flow_id}/events/b", json={"v": "B"})
    assert delivered.json() == {"status": "delivered"}
    assert (await api.poll_one(f"{name}-b"))["input"] == {"v": "B"}
    flow = await api.flow(flow_id)
    assert flow["actions"]["2"]["status"] == "WAITING"
    await http.post(f"/flow/{flow_id}/events/a", json={"v": "A"})
    assert (await api.poll_one(f"{name}-a"))["input"] == {"v": "A"}


async def _status_is(api: Api, flow_id: str, action_id: str, status: str) -> bool:
    actions = (await api.flow(flow_id))["actions"]
    return action_id in actions and actions[action_id]["status"] == status


async def test_event_for_unknown_or_finished_run_is_refused(
    api: Api, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/flow/nope/events/x", json={})).status_code == 404
    name = unique("ended")
    await api.register(workflow(name, system(1, "delay", delaySeconds=0)))
    flow_id = await api.start(name)
    await api.wait_status(flow_id, "COMPLETED")
    response = await http.post(f"/flow/{flow_id}/events/x", json={})
    assert response.status_code == 409


# -- join and failure edges -----------------------------------------------------------


async def test_parallel_branches_join_once(api: Api) -> None:
    name = unique("join")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="go"),
            user(2, f"{name}-left", {"default": [4]}),
            user(3, f"{name}-right", {"default": [4]}),
            system(4, "join", {"default": [5]}, joinOn=[2, 3]),
            user(5, f"{name}-after", left="{$.4.output.2.l}", right="{$.4.output.3.r}"),
        )
    )
    flow_id = await api.start(name)
    tasks = await api.poll([f"{name}-left", f"{name}-right"], most=2)
    assert len(tasks) == 2
    for task in tasks:
        output = {"l": 1} if task["name"].endswith("left") else {"r": 2}
        assert (await api.complete(task["taskId"], output)).status_code == 200
    after = await api.poll_one(f"{name}-after")
    assert after["input"] == {"left": 1, "right": 2}
    assert await api.poll([f"{name}-after"], wait=0.3) == []
    await api.complete(after["taskId"], {})
    await api.wait_status(flow_id, "COMPLETED")


async def test_failure_without_error_branch_fails_run(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("fail-run")
    await api.register(workflow(name, user(1, f"{name}-a")))
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-a")
    await api.fail(task["taskId"], "card declined", retryable=False)
    flow = await api.wait_status(flow_id, "FAILED")
    assert "action 1" in flow["reason"] and "card declined" in flow["reason"]


async def test_failure_takes_error_branch_with_error_output(api: Api) -> None:
    name = unique("fail-edge")
    await api.register(
        workflow(
            name,
            user(1, f"{name}-a", {"default": [2], "error": [3]}),
            user(2, f"{name}-ok"),
            user(3, f"{name}-handle", reason="{$.1.output.error}"),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-a")
    await api.fail(task["taskId"], "boom", retryable=False)
    handle = await api.poll_one(f"{name}-handle")
    assert "boom" in handle["input"]["reason"]
    await api.complete(handle["taskId"], {})
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["status"] == "FAILED"


# -- retries and leases ---------------------------------------------------------------


async def test_fails_twice_then_succeeds_with_retry_count_3(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("retry")
    action = f"{name}-flaky"
    await set_action(http, action, retryCount=3, retryAfterSeconds=0.05, retryPolicy="FIXED")
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    for attempt in (1, 2):
        task = await api.poll_one(action)
        assert task["attempt"] == attempt
        assert (await api.fail(task["taskId"], f"try {attempt}")).status_code == 200
    task = await api.poll_one(action)
    assert task["attempt"] == 3
    await api.complete(task["taskId"], {"ok": True})
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["attempts"] == 3


async def test_retries_exhausted_fail_the_run(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("retry-out")
    action = f"{name}-bad"
    await set_action(http, action, retryCount=1, retryAfterSeconds=0.01)
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    for _ in range(2):
        task = await api.poll_one(action)
        await api.fail(task["taskId"], "nope")
    flow = await api.wait_status(flow_id, "FAILED")
    assert "after 2 attempt(s)" in flow["reason"]


async def test_not_retryable_error_fails_at_once(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("no-retry")
    action = f"{name}-a"
    await set_action(http, action, retryCount=5)
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    task = await api.poll_one(action)
    await api.fail(task["taskId"], "fatal", retryable=False)
    flow = await api.wait_status(flow_id, "FAILED")
    assert flow["actions"]["1"]["attempts"] == 1


async def test_lease_expiry_retries_and_late_result_gets_409(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("lease")
    action = f"{name}-slow"
    await set_action(http, action, timeoutSeconds=0.3, retryCount=2, retryAfterSeconds=0)
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    first = await api.poll_one(action)
    second = await api.poll_one(action, wait=5)
    assert second["attempt"] == 2
    late = await api.complete(first["taskId"], {"late": True})
    assert late.status_code == 409
    assert "error" in late.json()
    assert (await api.complete(second["taskId"], {"v": 2})).status_code == 200
    duplicate = await api.complete(second["taskId"], {"v": 3})
    assert duplicate.status_code == 409
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"v": 2}


async def test_heartbeat_keeps_the_lease(api: Api, http: httpx.AsyncClient) -> None:
    """Heartbeats ten times per lease keep the task for three leases' time: no second
    attempt comes, and the result is taken."""
    name = unique("heartbeat")
    action = f"{name}-long"
    await set_action(
        http, action, timeoutSeconds=HEARTBEAT_LEASE_SECONDS, retryCount=1, retryAfterSeconds=0
    )
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    task = await api.poll_one(action)
    kept_until = time.monotonic() + HEARTBEAT_LEASES_KEPT * HEARTBEAT_LEASE_SECONDS

    async def beat_until_kept() -> bool:
        beat = await http.post(f"/tasks/{task['taskId']}/heartbeat")
        assert beat.status_code == 200, beat.text
        return time.monotonic() > kept_until

    await wait_until(
        beat_until_kept,
        step=HEARTBEAT_LEASE_SECONDS / 10,
        what=f"{HEARTBEAT_LEASES_KEPT} leases' time of heartbeats",
    )
    assert await api.poll([action], wait=0) == []
    assert (await api.complete(task["taskId"], {})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["attempts"] == 1


async def test_unknown_task_is_404(api: Api) -> None:
    assert (await api.complete("nope", {})).status_code == 404
    assert (await api.complete("abc.1.1", {})).status_code == 404


# -- idempotency, versions, lifecycle -------------------------------------------------


async def test_idempotency_key_returns_same_flow(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("idem")
    await api.register(workflow(name, user(1, f"{name}-a")))
    body = {"name": name, "input": {}, "idempotencyKey": "order-1"}
    first = (await http.post("/flow/execute", json=body)).json()
    second = (await http.post("/flow/execute", json=body)).json()
    assert first["flowId"] == second["flowId"]
    assert (first["created"], second["created"]) == (True, False)
    assert len(await api.poll([f"{name}-a"], wait=0.2)) == 1


async def test_run_keeps_its_version(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("versions")
    v1 = workflow(name, user(1, f"{name}-a", version="one"))
    assert await api.register(v1) == 1
    assert await api.register(v1) == 1
    flow_id = await api.start(name)
    v2 = workflow(name, user(1, f"{name}-a", version="two"))
    assert await api.register(v2) == 2
    task = await api.poll_one(f"{name}-a")
    assert task["input"] == {"version": "one"}
    assert (await api.flow(flow_id))["version"] == 1
    stored = (await http.get(f"/metadata/workflow/{name}", params={"version": 1})).json()
    assert stored["actions"][0]["parameters"] == {"version": "one"}
    await api.start(name)
    assert (await api.poll_one(f"{name}-a"))["input"] == {"version": "two"}


async def test_pause_holds_completion_and_timer_until_resume(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("pause")
    await api.register(
        workflow(
            name,
            system(1, "switch", {"default": [2, 3]}, expression="go"),
            user(2, f"{name}-work", {"default": [4]}),
            system(3, "delay", {"default": [5]}, delaySeconds=PAUSE_DELAY_SECONDS),
            user(4, f"{name}-after-work"),
            user(5, f"{name}-after-delay"),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-work")
    assert (await http.post(f"/flow/{flow_id}/pause")).status_code == 200
    # What the test is about needs the delay to fall due after the pause.
    assert (await api.flow(flow_id))["actions"]["3"]["status"] == "WAITING"
    held = await api.complete(task["taskId"], {"w": 1})
    assert held.json() == {"status": "held"}
    assert (await api.complete(task["taskId"], {"w": 2})).status_code == 409
    # The delay falls due during the pause: nothing moves on.
    await wait_until(lambda: _history_has(http, flow_id, "HELD", 2), what="the timer to be held")
    assert await api.poll([f"{name}-after-work", f"{name}-after-delay"], wait=0) == []
    assert (await api.flow(flow_id))["status"] == "PAUSED"
    assert (await http.post(f"/flow/{flow_id}/resume")).status_code == 200
    names = set()
    for _ in range(2):
        for resumed in await api.poll([f"{name}-after-work", f"{name}-after-delay"], wait=5):
            names.add(resumed["name"])
            await api.complete(resumed["taskId"], {})
    assert names == {f"{name}-after-work", f"{name}-after-delay"}
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["2"]["output"] == {"w": 1}


async def _history_has(http: httpx.AsyncClient, flow_id: str, event: str, count: int) -> bool:
    history = (await http.get(f"/flow/{flow_id}/history")).json()["history"]
    return sum(1 for entry in history if entry["event"] == event) >= count


async def test_terminate_stops_queued_tasks(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("terminate")
    await api.register(workflow(name, user(1, f"{name}-a")))
    flow_id = await api.start(name)
    assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 200
    assert await api.poll([f"{name}-a"], wait=0.2) == []
    flow = await api.flow(flow_id)
    assert flow["status"] == "TERMINATED"
    assert (await http.post(f"/flow/{flow_id}/terminate")).status_code == 409
    assert (await http.post(f"/flow/{flow_id}/pause")).status_code == 409


async def test_list_and_history(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("list")
    await api.register(workflow(name, system(1, "delay", delaySeconds=0)))
    ids = [await api.start(name) for _ in range(3)]
    for flow_id in ids:
        await api.wait_status(flow_id, "COMPLETED")
    listed = (await http.get("/flow", params={"name": name})).json()["runs"]
    assert [run["id"] for run in listed] == list(reversed(ids))
    completed = (
        await http.get("/flow", params={"name": name, "status": "COMPLETED", "limit": 2})
    ).json()
    assert len(completed["runs"]) == 2
    history = (await http.get(f"/flow/{ids[0]}/history")).json()["history"]
    events = [entry["event"] for entry in history]
    assert events[0] == "RUN_STARTED" and events[-1] == "RUN_COMPLETED"
    assert all(entry["at"].endswith("Z") for entry in history)


# -- bad input ------------------------------------------------------------------------


async def test_bad_input_gets_clear_4xx(http: httpx.AsyncClient) -> None:
    malformed = await http.post(
        "/metadata/workflow", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and "error" in malformed.json()
    missing = await http.post("/flow/execute", json={"input": {}})
    assert missing.status_code == 422 and "name" in missing.json()["error"]
    unknown = await http.post("/flow/execute", json={"name": unique("none")})
    assert unknown.status_code == 404
    assert (await http.get("/flow/none")).status_code == 404
    poll = await http.post("/tasks/poll", json={"workerId": "w", "actions": []})
    assert poll.status_code == 422 and "actions" in poll.json()["error"]


async def test_form_encoded_curl_body_is_read_as_json(http: httpx.AsyncClient) -> None:
    name = unique("curl")
    body = b'{"name": "%s", "rootAction": 1, "actions": [{"id": 1, "type": "user", "name": "%s"}]}'
    response = await http.post(
        "/metadata/workflow",
        content=body % (name.encode(), f"{name}-a".encode()),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


async def test_poll_abandoned_by_its_client_leases_nothing(api: Api, server: ServerThread) -> None:
    name = unique("hangup")
    action = f"{name}-a"
    await api.register(workflow(name, user(1, action)))
    body = {"workerId": "gone", "actions": [action], "max": 1, "waitSeconds": 30}
    async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as impatient:
        try:
            await impatient.post("/tasks/poll", json=body)
        except httpx.TimeoutException:
            pass
        else:
            raise AssertionError("the long poll answered before its wait was over")
    wakeups = server.app.state.engine.wakeups

    async def poll_gone() -> bool:
        return bool(wakeups.waiting(action) == 0)

    await wait_until(poll_gone, timeout=3, what="the server to drop the abandoned poll")
    flow_id = await api.start(name)
    task = await api.poll_one(action, wait=3)
    assert task["flowId"] == flow_id


async def test_batch_results_answer_each_result_on_its_own(
    api: Api, http: httpx.AsyncClient, settings: Any
) -> None:
    name = unique("batch")
    action = f"{name}-a"
    await set_action(http, action, retryCount=0)
    await api.register(workflow(name, user(1, action)))
    ok_flow, failing_flow, big_flow = [await api.start(name) for _ in range(3)]
    tasks = {task["flowId"]: task for task in await api.poll([action], most=3)}
    assert set(tasks) == {ok_flow, failing_flow, big_flow}
    huge = "x" * (settings.max_output_bytes + 1)
    body = {
        "results": [
            {"taskId": tasks[ok_flow]["taskId"], "output": {"v": 1}},
            {"taskId": tasks[ok_flow]["taskId"], "output": {"v": 2}},
            {"taskId": tasks[failing_flow]["taskId"], "error": "nope", "retryable": False},
            {"taskId": tasks[big_flow]["taskId"], "output": {"huge": huge}},
            {"taskId": "unknown.1.1", "output": {}},
        ]
    }
    response = await http.post("/tasks/results", json=body)
    assert response.status_code == 200, response.text
    statuses = [item["status"] for item in response.json()["results"]]
    assert statuses == [200, 409, 200, 413, 404]
    assert (await api.wait_status(ok_flow, "COMPLETED"))["actions"]["1"]["output"] == {"v": 1}
    await api.wait_status(failing_flow, "FAILED")
    assert (await api.flow(big_flow))["actions"]["1"]["status"] == "RUNNING"
    neither = await http.post("/tasks/results", json={"results": [{"taskId": "a.1.1"}]})
    assert neither.status_code == 422 and "output" in neither.json()["error"]


async def test_results_with_next_lease_the_tasks_they_start_to_that_worker(
    api: Api, http: httpx.AsyncClient, settings: Any
) -> None:
    name = unique("next")
    first, mine, other = f"{name}-first", f"{name}-mine", f"{name}-other"
    await api.register(
        workflow(
            name,
            user(1, first, {"default": [2, 3, 4]}),
            user(2, mine, {"default": [5]}, v="{$.1.output.v}"),
            user(3, mine, w="{$.1.output.v}"),
            user(4, other),
            user(5, mine),
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(first)
    offer = {"workerId": "w-next", "actions": [mine], "max": 1}
    body = {"results": [{"taskId": task["taskId"], "output": {"v": 7}}], "next": offer}

    response = await http.post("/tasks/results", json=body)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert [item["status"] for item in answer["results"]] == [200]
    [handed] = answer["tasks"]
    assert (handed["flowId"], handed["actionId"], handed["name"]) == (flow_id, 2, mine)
    assert (handed["attempt"], handed["input"]) == (1, {"v": 7})
    flow = await api.flow(flow_id)
    assert flow["actions"]["2"]["status"] == "RUNNING"
    # Beyond ``max``, and for actions the worker did not offer to take, tasks are queued.
    [queued] = await api.poll([mine], most=5)
    assert (queued["actionId"], queued["input"]) == (3, {"w": 7})
    assert (await api.poll_one(other))["actionId"] == 4

    offer["max"] = 5
    body = {"results": [{"taskId": handed["taskId"], "output": {}}], "next": offer}
    answer = (await http.post("/tasks/results", json=body)).json()
    assert [task["actionId"] for task in answer["tasks"]] == [5]
    assert await api.poll([mine], most=5, wait=0) == []

    too_many = {**offer, "max": settings.poll_max_tasks + 1}
    refused = await http.post("/tasks/results", json={**body, "next": too_many})
    assert refused.status_code == 422 and "next.max" in refused.json()["error"]
    no_worker = await http.post("/tasks/results", json={**body, "next": {"actions": [mine]}})
    assert no_worker.status_code == 422 and "workerId" in no_worker.json()["error"]


async def test_results_with_next_lease_nothing_for_a_paused_run(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("next-paused")
    await api.register(workflow(name, user(1, f"{name}-a", {"default": [2]}), user(2, f"{name}-a")))
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-a")
    assert (await http.post(f"/flow/{flow_id}/pause")).status_code == 200
    offer = {"workerId": "w-next", "actions": [f"{name}-a"], "max": 1}
    body = {"results": [{"taskId": task["taskId"], "output": {}}], "next": offer}

    answer = (await http.post("/tasks/results", json=body)).json()

    assert (answer["results"][0]["held"], answer["tasks"]) == (True, [])


async def test_a_kept_run_that_changed_meanwhile_is_read_again(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    """The run kept from a result that took its next task is behind once something else
    changes the run (here an event ends a wait): the next result must plan from that."""
    name = unique("kept")
    mine = f"{name}-mine"
    await api.register(
        workflow(
            name,
            user(1, mine, {"default": [2, 3]}),
            user(2, mine, {"default": [4]}),
            system(3, "wait", event="go"),
            user(4, mine, seen="{$.3.output.from}"),
        )
    )
    flow_id = await api.start(name)
    first = await api.poll_one(mine)
    offer = {"workerId": "w-kept", "actions": [mine], "max": 1}
    body = {"results": [{"taskId": first["taskId"], "output": {}}], "next": offer}
    [second] = (await http.post("/tasks/results", json=body)).json()["tasks"]
    assert flow_id in server.app.state.engine.runs
    assert (
        await http.post(f"/flow/{flow_id}/events/go", json={"from": "event"})
    ).status_code == 200

    async def wait_ended() -> bool:
        return bool((await api.flow(flow_id))["actions"]["3"]["status"] == "COMPLETED")

    await wait_until(wait_ended)
    body = {"results": [{"taskId": second["taskId"], "output": {}}], "next": offer}
    answer = (await http.post("/tasks/results", json=body)).json()

    assert [item["status"] for item in answer["results"]] == [200]
    [fourth] = answer["tasks"]
    assert (fourth["actionId"], fourth["input"]) == (4, {"seen": "event"})


async def test_worker_calls_answer_errors_as_every_route_does(
    http: httpx.AsyncClient, settings: Any
) -> None:
    """/tasks/poll and /tasks/results skip FastAPI's layers; their errors must not differ."""
    most = settings.poll_max_tasks
    too_many_tasks = {"workerId": "w", "actions": ["a"], "max": most + 1}
    poll = await http.post("/tasks/poll", json=too_many_tasks)
    assert (poll.status_code, poll.json()) == (
        422,
        {"error": f"max: at most {most} tasks per poll"},
    )
    results = [{"taskId": f"f.{n}.1", "output": {}} for n in range(most + 1)]
    batch = await http.post("/tasks/results", json={"results": results})
    assert batch.status_code == 422 and batch.json()["error"].startswith("results: at most")
    # Bodies that do not validate are answered by the routes themselves, naming the field.
    no_worker = await http.post("/tasks/poll", json={"actions": ["a"]})
    assert no_worker.status_code == 422 and "workerId" in no_worker.json()["error"]
    not_json = await http.post("/tasks/results", content=b"{not json")
    assert not_json.status_code == 422 and "error" in not_json.json()


async def test_execute_many_starts_one_run_per_input(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("many")
    await api.register(workflow(name, user(1, f"{name}-a", x="{$.input.x}")))
    response = await http.post(
        "/flow/execute/many", json={"name": name, "inputs": [{"x": 1}, {"x": 2}]}
    )
    assert response.status_code == 201, response.text
    flow_ids = response.json()["flowIds"]
    assert len(set(flow_ids)) == 2
    tasks = await api.poll([f"{name}-a"], most=2)
    assert sorted((task["flowId"], task["input"]["x"]) for task in tasks) == sorted(
        zip(flow_ids, [1, 2], strict=True)
    )
    empty = await http.post("/flow/execute/many", json={"name": name, "inputs": []})
    assert empty.status_code == 422 and "inputs" in empty.json()["error"]


async def test_output_template_and_missing_path_warning(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("template")
    await api.register(
        workflow(
            name,
            user(1, f"{name}-a", who="{$.input.nobody}", flow="{$.flow.name}"),
            output={"answer": "{$.1.output.n}", "text": "n={$.1.output.n}"},
        )
    )
    flow_id = await api.start(name)
    task = await api.poll_one(f"{name}-a")
    assert task["input"] == {"who": None, "flow": name}
    await api.complete(task["taskId"], {"n": 42})
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["output"] == {"answer": 42, "text": "n=42"}
    history = (await http.get(f"/flow/{flow_id}/history")).json()["history"]
    warnings = [entry for entry in history if entry["event"] == "WARNING"]
    assert len(warnings) == 1 and "$.input.nobody" in warnings[0]["detail"]
