"""Leases only their holder can answer: a task id carries a secret that a flow id and its
history do not give away, and results or heartbeats without it change nothing."""

from __future__ import annotations

import secrets
from typing import Any

from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api
from tests.helpers.waiting import unique


async def two_step_run(api: Api) -> tuple[str, str, str, dict[str, Any]]:
    """A run of two user actions in a row whose first task is leased to the test:
    (flow id, first action, second action, the leased task)."""
    name = unique("lease")
    first, second = f"{name}-1", f"{name}-2"
    await api.register(workflow(name, user(1, first, {"default": [2]}), user(2, second)))
    flow_id = await api.start(name, {"x": 1})
    task = await api.poll_one(first)
    assert task["flowId"] == flow_id
    return flow_id, first, second, task


async def views(api: Api, flow_id: str) -> tuple[str, str]:
    """The run view and its history, as text: all that anyone can read about a run."""
    flow = await api.http.get(f"/flow/{flow_id}")
    history = await api.http.get(f"/flow/{flow_id}/history")
    assert flow.status_code == history.status_code == 200
    return flow.text, history.text


def forgeries(flow_id: str, history: list[dict[str, Any]]) -> dict[str, str]:
    """Task ids that someone who read the run's history could build for its running task."""
    [running] = [entry for entry in history if entry["event"] == "RUNNING"]
    known = f"{flow_id}.{running['seq']}.{running['attempt']}"
    return {
        "the old shape, without a secret": known,
        "a made-up secret": f"{known}.{secrets.token_hex(16)}",
        "an empty secret": f"{known}.",
        "a short secret": f"{known}.{secrets.token_hex(8)}",
    }


async def test_a_task_id_built_from_the_history_is_refused_and_changes_nothing(api: Api) -> None:
    """Knowing the flow id and reading its history (seq and attempt of the running task) is
    not enough: /complete, /fail, /heartbeat and /tasks/results all refuse such ids, the
    run does not move, and the real holder's result still applies."""
    flow_id, _, second, task = await two_step_run(api)
    response = await api.http.get(f"/flow/{flow_id}/history")
    forged = forgeries(flow_id, response.json()["history"])
    before = await views(api, flow_id)

    for label, task_id in forged.items():
        answers = {
            "complete": await api.complete(task_id, {"forged": True}),
            "fail": await api.fail(task_id, "forged", retryable=False),
            "heartbeat": await api.http.post(f"/tasks/{task_id}/heartbeat"),
        }
        for verb, answer in answers.items():
            assert answer.status_code in (404, 409), f"{verb} with {label}: {answer.text}"
            assert answer.json()["error"], f"{verb} with {label}"
    batch: list[dict[str, Any]] = [
        {"taskId": task_id, "output": {"forged": True}} for task_id in forged.values()
    ]
    batch.append({"taskId": forged["a made-up secret"], "error": "forged", "retryable": False})
    offer = {"workerId": "forger", "actions": [second], "max": 4}
    response = await api.http.post("/tasks/results", json={"results": batch, "next": offer})
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["results"]] == [404, 409, 404, 404, 409]
    assert response.json()["tasks"] == []
    assert await views(api, flow_id) == before

    applied = await api.complete(task["taskId"], {"real": True})
    assert applied.status_code == 200, applied.text
    flow = await api.flow(flow_id)
    assert flow["actions"]["1"]["output"] == {"real": True}
    assert (await api.poll_one(second))["input"] == {}


async def test_a_secret_is_good_for_its_own_lease_only(api: Api) -> None:
    """Every lease gets a new secret: after a retry, the first lease's id is refused (even
    with the new attempt number), and one run's secret does not open another's task."""
    flow_id, first, _, task = await two_step_run(api)
    old_secret = task["taskId"].rsplit(".", 1)[1]
    assert (await api.fail(task["taskId"], "try again")).status_code == 200
    retried = await api.poll_one(first)
    assert retried["flowId"] == flow_id and retried["attempt"] == 2
    new_secret = retried["taskId"].rsplit(".", 1)[1]
    assert new_secret != old_secret

    seq = retried["taskId"].split(".")[1]
    old_with_new_attempt = f"{flow_id}.{seq}.2.{old_secret}"
    assert (await api.complete(old_with_new_attempt, {"stale": True})).status_code == 409
    assert (await api.http.post(f"/tasks/{task['taskId']}/heartbeat")).status_code == 409
    other_flow, _, _, other = await two_step_run(api)
    other_secret = other["taskId"].rsplit(".", 1)[1]
    borrowed = f"{flow_id}.{seq}.2.{other_secret}"
    assert (await api.complete(borrowed, {"borrowed": True})).status_code == 409
    assert (await api.flow(flow_id))["actions"]["1"]["status"] == "RUNNING"

    assert (await api.http.post(f"/tasks/{retried['taskId']}/heartbeat")).status_code == 200
    assert (await api.complete(retried["taskId"], {"ok": 2})).status_code == 200
    assert (await api.flow(flow_id))["actions"]["1"]["output"] == {"ok": 2}
    assert (await api.complete(other["taskId"], {})).status_code == 200
    assert (await api.flow(other_flow))["actions"]["1"]["status"] == "COMPLETED"


async def test_no_view_of_a_run_shows_a_lease_secret(api: Api) -> None:
    """Neither the run view nor its history (nor the runs list) holds the secret of a polled
    task or of a task leased at once through /tasks/results with next, while running or
    after the run ends."""
    flow_id, _, second, task = await two_step_run(api)
    offer = {"workerId": "w-next", "actions": [second], "max": 1}
    body = {"results": [{"taskId": task["taskId"], "output": {"a": 1}}], "next": offer}
    response = await api.http.post("/tasks/results", json=body)
    assert response.status_code == 200, response.text
    [handed] = response.json()["tasks"]
    issued = [task["taskId"], handed["taskId"]]
    issued_secrets = [task_id.rsplit(".", 1)[1] for task_id in issued]
    assert all(len(secret) == 32 for secret in issued_secrets)
    name = (await api.flow(flow_id))["name"]

    async def assert_hidden() -> None:
        listing = await api.http.get("/flow", params={"name": name})
        for text in (*await views(api, flow_id), listing.text):
            for secret in issued_secrets:
                assert secret not in text

    await assert_hidden()
    assert (await api.complete(handed["taskId"], {"b": 2})).status_code == 200
    await api.wait_status(flow_id, "COMPLETED")
    await assert_hidden()
