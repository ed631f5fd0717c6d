"""Wide and deep runs: a fan-out at the widest width allowed, chains of system steps longer
than Python's recursion limit, timers whose step keeps failing, and a run whose data is big
enough to take a while to resolve. Each ends where the README says, over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.settings import Settings
from app.store import Store
from tests.helpers.definitions import fan_out, set_action, switch_chain
from tests.helpers.http import Api, ServerThread
from tests.helpers.waiting import unique, wait_until

FAN_OUT = 10_000
"""The widest ``next`` list the README promises to start in one transition."""
CHAIN = 2_000
"""Far beyond Python's default recursion limit (1,000 frames)."""
DRAIN_SECONDS = 120.0
FINISH_SECONDS = 60.0


async def drain(api: Api, queue: str, count: int, most: int) -> None:
    """Takes ``count`` tasks of ``queue`` and completes each, ``most`` at a time."""
    done = 0
    while done < count:
        tasks = await api.poll([queue], most=most, wait=DRAIN_SECONDS)
        assert tasks, f"{done} of {count} tasks came; the rest never did"
        results = [{"taskId": task["taskId"], "output": {"n": 1}} for task in tasks]
        response = await api.http.post("/tasks/results", json={"results": results})
        assert response.status_code == 200, response.text[:500]
        refused = [answer for answer in response.json()["results"] if answer["status"] != 200]
        assert not refused, f"{len(refused)} of {len(results)} results refused: {refused[0]}"
        done += len(tasks)
    assert done == count


async def assert_every_leaf_ran(api: Api, flow_id: str) -> None:
    flow = await api.wait_status(flow_id, "COMPLETED", timeout=FINISH_SECONDS)
    actions = flow["actions"]
    assert len(actions) == FAN_OUT + 1
    assert {action["status"] for action in actions.values()} == {"COMPLETED"}


@pytest.fixture
def most(settings: Settings) -> int:
    return settings.poll_max_tasks


# -- 1. a transition that starts many actions applies all of them ---------------------------


async def test_fan_out_of_ten_thousand_at_the_root(api: Api, most: int) -> None:
    name, queue = unique("wide-root"), unique("leaf")
    head = {"type": "system", "name": "switch", "expression": "go"}
    await api.register(fan_out(name, head, queue, FAN_OUT))
    flow_id = await api.start(name)
    assert (await api.flow(flow_id))["status"] == "RUNNING"
    await drain(api, queue, FAN_OUT, most)
    await assert_every_leaf_ran(api, flow_id)


async def test_fan_out_of_ten_thousand_behind_a_delay(api: Api, most: int) -> None:
    name, queue = unique("wide-delay"), unique("leaf")
    head = {"type": "system", "name": "delay", "delaySeconds": 0}
    await api.register(fan_out(name, head, queue, FAN_OUT))
    flow_id = await api.start(name)
    await drain(api, queue, FAN_OUT, most)
    await assert_every_leaf_ran(api, flow_id)


async def test_fan_out_of_ten_thousand_behind_a_user_action(api: Api, most: int) -> None:
    name, head_queue, queue = unique("wide-user"), unique("head"), unique("leaf")
    await api.register(fan_out(name, {"type": "user", "name": head_queue}, queue, FAN_OUT))
    flow_id = await api.start(name)
    head = await api.poll_one(head_queue)
    response = await api.complete(head["taskId"], {"go": True})
    assert response.status_code == 200, response.text
    await drain(api, queue, FAN_OUT, most)
    await assert_every_leaf_ran(api, flow_id)


# -- 2. a chain of system steps of any length runs without recursion ------------------------


async def test_chain_of_two_thousand_switches_at_the_root(api: Api) -> None:
    name = unique("deep-root")
    await api.register({"name": name, "rootAction": 1, "actions": switch_chain(1, CHAIN)})
    flow_id = await api.start(name, {"way": "on"})
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert len(flow["actions"]) == CHAIN
    assert flow["actions"][str(CHAIN)]["output"] == {"value": "on"}


async def test_chain_of_two_thousand_switches_after_a_user_action(api: Api) -> None:
    name, queue = unique("deep-user"), unique("head")
    actions = [{"id": 1, "type": "user", "name": queue, "next": {"default": [2]}}]
    await api.register({"name": name, "rootAction": 1, "actions": actions + switch_chain(2, CHAIN)})
    flow_id = await api.start(name, {"way": "on"})
    head = await api.poll_one(queue)
    response = await api.complete(head["taskId"], {})
    assert response.status_code == 200, response.text
    flow = await api.wait_status(flow_id, "COMPLETED")
    assert len(flow["actions"]) == CHAIN + 1
    assert flow["actions"][str(CHAIN + 1)]["output"] == {"value": "on"}


# -- 3. a timer whose step keeps raising ends in a FAILED run, not in retries for ever -------


async def test_a_timer_whose_step_keeps_raising_fails_its_action_and_the_run(
    api: Api, store: Store, settings: Settings
) -> None:
    name, queue = unique("stuck"), unique("broken")
    # A real fault that no retry cures: the queue that the step after the delay pushes to is
    # a key of another type (say, written by another program sharing the database).
    broken = [store.keys.queue(partition, queue) for partition in range(store.keys.partitions)]
    for key in broken:
        await store.client.set(key, "not a list")
    try:
        await api.register(
            {
                "name": name,
                "rootAction": 1,
                "actions": [
                    {
                        "id": 1,
                        "type": "system",
                        "name": "delay",
                        "delaySeconds": 0,
                        "next": {"default": [2]},
                    },
                    {"id": 2, "type": "user", "name": queue},
                ],
            }
        )
        flow_id = await api.start(name)
        attempts = settings.timer_max_attempts
        flow = await api.wait_status(
            flow_id, "FAILED", timeout=FINISH_SECONDS + attempts * settings.timer_retry_seconds
        )
    finally:
        await store.client.delete(*broken)
    assert "action 1: its fire timer failed" in flow["reason"]
    assert "holds a string, not a list" in flow["reason"]
    assert flow["actions"]["1"]["status"] == "FAILED"
    assert flow["actions"]["1"]["error"] == flow["reason"]
    assert "2" not in flow["actions"]  # nothing of the step that could not be applied
    history = (await api.http.get(f"/flow/{flow_id}/history")).json()["history"]
    failures = [entry for entry in history if entry["event"] == "TIMER_FAILED"]
    assert [entry["attempt"] for entry in failures] == list(range(1, attempts + 1))


async def test_a_timer_that_names_no_run_is_dropped(server: ServerThread, store: Store) -> None:
    key = store.keys.timers(0)
    stray = f"{unique('not-a-timer')}|no flow here"
    seconds, micros = await store.client.time()
    await store.client.zadd(key, {stray: int(seconds) * 1000 + int(micros) // 1000})
    await store.client.publish(store.keys.notify_channel, f"t|0|{int(seconds) * 1000}")

    async def dropped() -> bool:
        return await store.client.zscore(key, stray) is None

    await wait_until(dropped, FINISH_SECONDS, what="the stray timer to be dropped")


# -- 4. one run's data cannot stall the server ---------------------------------------------

PRODUCERS = 4
ROWS_PER_OUTPUT = 18_000
"""About 0.8 MB of JSON per output: under ORCHY_MAX_OUTPUT_BYTES, 3.2 MB in all."""
HEALTH_ANSWERS = 20
PLANNING_LEASE_SECONDS = 300.0
"""While the big run is planned, /health must answer this many times in a row. A server
whose event loop runs the JSONPath answers only while it reads the run (2 to 4 times where
this was written), against dozens of times with the JSONPath in a thread."""


def big_output(producer: int) -> dict[str, Any]:
    return {"rows": [{"id": i, "by": producer, "tags": ["a", "b"]} for i in range(ROWS_PER_OUTPUT)]}


async def test_health_answers_while_a_big_document_is_resolved(api: Api) -> None:
    name, producer, trigger, consumer = (
        unique("big"),
        unique("producer"),
        unique("trigger"),
        unique("consumer"),
    )
    actions: list[dict[str, Any]] = [
        {"id": index, "type": "user", "name": producer, "next": {"default": [index + 1]}}
        for index in range(1, PRODUCERS + 1)
    ]
    actions += [
        {
            "id": PRODUCERS + 1,
            "type": "user",
            "name": trigger,
            "next": {"default": [PRODUCERS + 2]},
        },
        {"id": PRODUCERS + 2, "type": "user", "name": consumer, "parameters": {"all": "{$..*}"}},
    ]
    # Planning the consumer takes seconds on a loaded machine: the trigger's lease outlasts it.
    await set_action(api.http, trigger, timeoutSeconds=PLANNING_LEASE_SECONDS)
    await api.register({"name": name, "rootAction": 1, "actions": actions})
    flow_id = await api.start(name)
    for index in range(1, PRODUCERS + 1):
        task = await api.poll_one(producer)
        assert (await api.complete(task["taskId"], big_output(index))).status_code == 200
    task = await api.poll_one(trigger)

    # A small request whose transition plans the consumer: "{$..*}" over the big document.
    completing = asyncio.ensure_future(api.complete(task["taskId"], {}))
    answered = 0
    while not completing.done() and answered < HEALTH_ANSWERS:
        response = await api.http.get("/health")
        assert response.status_code == 200, response.text
        answered += 1
    # Health answered again and again before the planning was over.
    assert not completing.done(), f"/health answered {answered} times while the run was planned"
    assert answered == HEALTH_ANSWERS
    assert (await completing).status_code == 200
    task = await api.poll_one(consumer)
    assert task["flowId"] == flow_id


async def test_a_large_document_is_resolved_as_a_small_one_is(api: Api, settings: Settings) -> None:
    """Past ORCHY_LARGE_DOCUMENT_BYTES the planner reads the document in another process:
    switches, parameters and warnings come out the same."""
    name, queue = unique("large"), unique("uses")
    await api.register(
        {
            "name": name,
            "rootAction": 1,
            "actions": [
                {
                    "id": 1,
                    "type": "system",
                    "name": "switch",
                    "expression": "{$.input.kind}",
                    "next": {"big": [2]},
                },
                {
                    "id": 2,
                    "type": "user",
                    "name": queue,
                    "parameters": {
                        "second": "{$.input.rows[1]}",
                        "text": "kind {$.1.output.value}",
                        "missing": "{$.input.nothing}",
                    },
                },
            ],
        }
    )
    rows = [{"id": i, "pad": "x" * 40} for i in range(settings.large_document_bytes // 40)]
    for size in ("small", "big"):
        flow_id = await api.start(
            name, {"kind": "big", "rows": rows if size == "big" else rows[:2]}
        )
        task = await api.poll_one(queue)
        assert task["flowId"] == flow_id
        assert task["input"] == {"second": rows[1], "text": "kind big", "missing": None}, size
        history = (await api.http.get(f"/flow/{flow_id}/history")).json()["history"]
        warnings = [entry["detail"] for entry in history if entry["event"] == "WARNING"]
        assert warnings == ["path $.input.nothing found nothing"], size
