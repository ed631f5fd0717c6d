"""Queues that no worker serves: an action's ``pollTimeoutSeconds`` fails attempts nobody
takes, and ``GET /tasks/queues`` (``orchy queue list``) shows each queue's depth and when a
worker last polled for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.helpers.cli import orchy
from tests.helpers.definitions import set_action, user, workflow
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until


async def queues(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/tasks/queues")
    assert response.status_code == 200, response.text
    return {queue["action"]: queue for queue in response.json()["queues"]}


async def test_an_action_nobody_polls_fails_after_its_retries_with_the_reason(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("unpolled")
    action = f"{name}-nobody"
    await set_action(http, action, pollTimeoutSeconds=0.2, retryCount=1, retryAfterSeconds=0)
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)

    flow = await api.wait_status(flow_id, "FAILED")

    assert "not polled within 0.2 s" in flow["reason"], flow["reason"]
    assert "after 2 attempt(s)" in flow["reason"], flow["reason"]
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert flow["actions"]["1"]["attempts"] == 2
    events = [entry["event"] for entry in await api.history(flow_id)]
    assert events.count("RETRY_SCHEDULED") == 1
    assert "RUNNING" not in events
    assert events[-1] == "RUN_FAILED"
    # Nothing of it is left waiting in the queue.
    assert (await queues(http))[action]["depth"] == 0


async def test_a_worker_that_comes_late_takes_a_retried_attempt(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("late")
    action = f"{name}-task"
    await set_action(http, action, pollTimeoutSeconds=0.3, retryCount=100, retryAfterSeconds=0)
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)

    async def retried() -> bool:
        return any(entry["event"] == "RETRY_SCHEDULED" for entry in await api.history(flow_id))

    await wait_until(retried, what="a poll timeout's retry")
    task = await api.poll_one(action)
    assert task["attempt"] >= 2
    assert (await api.complete(task["taskId"], {"late": True})).status_code == 200
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert flow["actions"]["1"]["output"] == {"late": True}


async def test_poll_timeout_is_part_of_the_action_definition(http: httpx.AsyncClient) -> None:
    name = unique("pto-def")
    response = await http.post("/metadata/action", json={"name": name, "pollTimeoutSeconds": 30})
    assert response.status_code == 200, response.text
    assert response.json()["pollTimeoutSeconds"] == 30
    read = (await http.get(f"/metadata/action/{name}")).json()
    assert read["pollTimeoutSeconds"] == 30
    # Left out, there is none.
    assert (await http.get(f"/metadata/action/{unique('none')}")).json()[
        "pollTimeoutSeconds"
    ] is None
    for bad in (0, -1, "soon", 10**12):
        refused = await http.post(
            "/metadata/action", json={"name": name, "pollTimeoutSeconds": bad}
        )
        assert refused.status_code == 422, f"{bad!r}: {refused.text}"
        assert "pollTimeoutSeconds" in refused.json()["error"], refused.text
    too_long = await http.post("/metadata/action", json={"name": name, "pollTimeoutSeconds": 1e9})
    assert "at most 31536000 seconds" in too_long.json()["error"], too_long.text
    assert (await http.get(f"/metadata/action/{name}")).json()["pollTimeoutSeconds"] == 30


async def test_queues_show_depth_and_last_poll(api: Api, http: httpx.AsyncClient) -> None:
    name = unique("depth")
    action = f"{name}-task"
    await api.register(workflow(name, user(1, action)))
    assert (await queues(http))[action] == {
        "action": action,
        "depth": 0,
        "lastPollAt": None,
        "leased": 0,
        "retrying": 0,
        "oldestQueuedAt": None,
        "oldestQueuedAgeSeconds": None,
        "workers": 0,
        "noWorker": False,
    }

    for _ in range(3):
        await api.start(name)
    assert (await queues(http))[action]["depth"] == 3

    await api.poll_one(action)
    after_first = (await queues(http))[action]
    assert after_first["depth"] == 2
    first_poll = datetime.fromisoformat(after_first["lastPollAt"])

    async def poll_time_moved() -> bool:
        await api.poll([action], most=1, wait=0)
        last = (await queues(http))[action]["lastPollAt"]
        return datetime.fromisoformat(last) > first_poll

    await wait_until(poll_time_moved, step=0.2, what="a later poll time")
    assert (await queues(http))[action]["depth"] <= 1


async def test_queue_list_prints_depth_and_last_poll(api: Api, server: ServerThread) -> None:
    name = unique("cli-queue")
    action = f"{name}-task"
    await api.register(workflow(name, user(1, action)))
    for _ in range(2):
        await api.start(name)

    before = await orchy("queue", "list", server=server)
    assert before.code == 0, before.stderr
    assert before.stdout.splitlines()[0].split() == ["ACTION", "DEPTH", "LAST", "POLL"]
    [row] = [line.split() for line in before.stdout.splitlines() if line.startswith(action)]
    assert row == [action, "2", "never"]

    await api.poll_one(action)
    after = await orchy("queue", "list", server=server)
    assert after.code == 0, after.stderr
    [row] = [line.split() for line in after.stdout.splitlines() if line.startswith(action)]
    assert row[:2] == [action, "1"]
    assert datetime.fromisoformat(row[2]) == datetime.fromisoformat(
        (await queues(api.http))[action]["lastPollAt"]
    )
