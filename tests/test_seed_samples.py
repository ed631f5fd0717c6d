"""Orchy README's samples in ``workflows/``, files unchanged, each run by its real worker
process (``orchy worker workflows/<name>_worker.py``) against a real uvicorn server, the way
the README's quick start runs the notification example."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.helpers.http import Api, ServerThread
from tests.helpers.samples import (
    ALL,
    DELAY,
    JAVASCRIPT,
    LOG_ACTION,
    RUN_SECONDS,
    SWITCH,
    WAIT,
    completed_runs,
    register_sample,
    worker_process,
)
from tests.helpers.waiting import wait_until

DELAY_MS = 10_000


async def test_every_sample_file_registers_as_it_is(http: httpx.AsyncClient) -> None:
    for sample in ALL:
        await register_sample(http, sample)
        stored = (await http.get(f"/metadata/workflow/{sample.name}")).json()
        posted = json.loads(sample.workflow.read_text())
        assert posted["description"]
        assert stored == {**posted, "version": stored["version"]}


async def test_switch_takes_200_300_and_default(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    inputs: list[Any] = [SWITCH.input["key1"], "300", 404]
    runs = await completed_runs(api, http, server, SWITCH, [{"key1": key1} for key1 in inputs])
    for key1, (_, flow), (leaf, branch) in zip(
        inputs, runs, [("3", "200"), ("4", "300"), ("6", "default")], strict=True
    ):
        assert set(flow["actions"]) == {"1", "2", leaf}
        assert flow["actions"]["2"]["output"] == {"value": key1}
        assert flow["actions"][leaf]["output"] == {"branch": branch, "key1": key1}


async def test_delay_runs_the_next_action_after_its_timer(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    [(flow_id, flow)] = await completed_runs(api, http, server, DELAY, [DELAY.input])
    assert flow["actions"]["7"]["output"] == {}
    assert flow["actions"]["2"]["output"] == {"message": DELAY.input["message"]}
    history = await api.history(flow_id)
    timeline = [(entry["event"], entry.get("action")) for entry in history]
    assert timeline == [
        ("RUN_STARTED", None),
        ("WAITING", 7),
        ("COMPLETED", 7),
        ("QUEUED", 2),
        ("RUNNING", 2),
        ("COMPLETED", 2),
        ("RUN_COMPLETED", None),
    ]
    assert history[1]["delayMs"] == DELAY_MS


async def _waiting(api: Api, flow_id: str, action: str) -> bool:
    actions: dict[str, Any] = (await api.flow(flow_id))["actions"]
    return bool(actions.get(action, {}).get("status") == "WAITING")


async def test_wait_takes_the_test_branch_on_the_event_and_default_on_timeout(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    await register_sample(http, WAIT)
    with worker_process(WAIT, server.url):
        sent_in_time = await api.start(WAIT.name, WAIT.input)
        timed_out = await api.start(WAIT.name, WAIT.input)
        await wait_until(lambda: _waiting(api, sent_in_time, "3"), what="the wait to start")
        body = {"opened": True, "by": "alice"}
        delivered = await http.post(f"/flow/{sent_in_time}/events/test", json=body)
        assert delivered.json() == {"status": "delivered"}
        event_flow, timeout_flow = await asyncio.gather(
            api.wait_status(sent_in_time, "COMPLETED", RUN_SECONDS),
            api.wait_status(timed_out, "COMPLETED", RUN_SECONDS),
        )
    assert set(event_flow["actions"]) == {"3", "6"}
    assert event_flow["actions"]["3"]["output"] == body
    assert event_flow["actions"]["6"]["output"] == {"event": body}
    assert set(timeout_flow["actions"]) == {"3", "4"}
    assert timeout_flow["actions"]["4"]["output"] == {"waited": {"timedOut": True}}
    event_history = await api.history(sent_in_time)
    wait_end = next(e for e in event_history if e["event"] == "COMPLETED" and e["action"] == 3)
    assert wait_end["branch"] == "test"


async def test_javascript_adds_the_discount_by_age(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    cases = [
        (JAVASCRIPT.input, 20),
        ({"name": "Ana", "age": 20}, 20),
        ({"name": "Teo", "age": 19}, 10),
    ]
    runs = await completed_runs(api, http, server, JAVASCRIPT, [user for user, _ in cases])
    for (user, discount), (_, flow) in zip(cases, runs, strict=True):
        script_output = flow["actions"]["2"]["output"]
        assert script_output["user"] == {**user, "discount": discount}
        assert flow["actions"]["3"]["input"] == {"name": user["name"], "discount": discount}
        assert flow["actions"]["3"]["output"] == {"name": user["name"], "discount": discount}


async def test_log_action_gets_its_shorthand_parameters_resolved(
    api: Api, http: httpx.AsyncClient, server: ServerThread
) -> None:
    [(flow_id, flow)] = await completed_runs(api, http, server, LOG_ACTION, [LOG_ACTION.input])
    resolved = {"k1": 23, "k2": LOG_ACTION.input["key1"], "k3": LOG_ACTION.input["x"]}
    assert flow["actions"]["4"]["input"] == resolved
    assert flow["actions"]["4"]["output"] == resolved
    assert flow["actions"]["3"]["input"] == {"logged": resolved}
    history = await api.history(flow_id)
    assert not [entry for entry in history if entry["event"] == "WARNING"]
