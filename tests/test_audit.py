"""Audit over HTTP (README: Security, Audit): a run's history names who started, paused,
resumed or terminated it and who sent it an event (by run id, or correlated), as ``by``; on
a server without authentication every request is the anonymous principal. What the engine
does on its own names nobody, and a sub-workflow's child names its parent run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.security.principal import Role
from app.engine.audit import run_as
from app.settings import Settings
from tests.helpers.auth import Key
from tests.helpers.definitions import sub_workflow, system, user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique, wait_until

ANONYMOUS = "anonymous"
# Requests that ask for something on behalf of a principal (see app/engine/audit.py).
ASKED = {
    "RUN_STARTED",
    "RUN_PAUSED",
    "RUN_RESUMED",
    "RUN_TERMINATED",
    "EVENT_RECEIVED",
    "EVENT_BUFFERED",
}


def by_event(history: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(event, by) of each entry: ``by`` None when the entry names nobody."""
    return [(entry["event"], entry.get("by")) for entry in history]


def waits_then_works(name: str, event: str, **wait: Any) -> dict[str, Any]:
    """Waits for ``event``, then queues a task nobody polls: the run stays RUNNING."""
    return workflow(
        name,
        system(1, "wait", {"default": [2]}, event=event, **wait),
        user(2, f"{name}-nobody-polls"),
    )


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def action_waits(api: Api, flow_id: str) -> bool:
    return bool((await api.flow(flow_id))["actions"].get("1", {}).get("status") == "WAITING")


async def test_each_request_on_a_run_is_named_in_its_history(
    api: Api, http: httpx.AsyncClient
) -> None:
    name, event = unique("audited"), unique("go")
    await api.register(waits_then_works(name, event))
    flow_id = await api.start(name, {"n": 1})
    await wait_until(lambda: action_waits(api, flow_id), what="the wait to wait")

    await ok(await http.post(f"/flow/{flow_id}/pause"))
    await ok(await http.post(f"/flow/{flow_id}/resume"))
    assert (await ok(await http.post(f"/flow/{flow_id}/events/{event}", json={"a": 1}))) == {
        "status": "delivered"
    }
    assert (await ok(await http.post(f"/flow/{flow_id}/events/late", json={}))) == {
        "status": "buffered"
    }
    await wait_until(lambda: _has(api, flow_id, "QUEUED", action=2), what="the task after the wait")
    await ok(await http.post(f"/flow/{flow_id}/terminate", json={"reason": "enough"}))

    history = await api.history(flow_id)
    asked = [(event, by) for event, by in by_event(history) if event in ASKED]
    assert asked == [
        ("RUN_STARTED", ANONYMOUS),
        ("RUN_PAUSED", ANONYMOUS),
        ("RUN_RESUMED", ANONYMOUS),
        ("EVENT_RECEIVED", ANONYMOUS),
        ("EVENT_BUFFERED", ANONYMOUS),
        ("RUN_TERMINATED", ANONYMOUS),
    ]
    # The engine's own steps (the wait, its completion, the queued task) name nobody.
    own = [entry for entry in history if entry["event"] not in ASKED]
    assert {entry["event"] for entry in own} >= {"WAITING", "COMPLETED", "QUEUED"}
    assert all("by" not in entry for entry in own), own


async def _has(api: Api, flow_id: str, event: str, action: int) -> bool:
    history = await api.history(flow_id)
    return any(e["event"] == event and e.get("action") == action for e in history)


async def test_runs_started_together_each_name_who_started_them(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("many")
    await api.register(workflow(name, user(1, f"{name}-nobody-polls")))
    body = await ok(await http.post("/flow/execute/many", json={"name": name, "inputs": [{}, {}]}))
    for flow_id in body["flowIds"]:
        started = (await api.history(flow_id))[0]
        assert (started["event"], started["by"]) == ("RUN_STARTED", ANONYMOUS)
        await ok(await http.post(f"/flow/{flow_id}/terminate"))


async def test_a_correlated_event_is_named_in_each_run_it_reaches(
    api: Api, http: httpx.AsyncClient
) -> None:
    name, event = unique("audited-corr"), unique("paid")
    await api.register(waits_then_works(name, event, correlationKey="{$.input.orderId}"))
    # Published while no run waits: kept, and taken by the run that comes to wait.
    kept = await ok(await http.post(f"/events/{event}", json={"key": "o-kept", "ttlSeconds": 60}))
    assert kept == {"delivered": [], "kept": True}
    taker = await api.start(name, {"orderId": "o-kept"})
    # Published to a run that waits already.
    waiter = await api.start(name, {"orderId": "o-now"})
    await wait_until(lambda: action_waits(api, waiter), what="the correlated wait")

    async def delivered() -> bool:
        # Kept for no time: one that comes before the wait reached its index is dropped.
        body = {"key": "o-now", "ttlSeconds": 0}
        return bool((await ok(await http.post(f"/events/{event}", json=body)))["delivered"])

    await wait_until(delivered, what="the event to reach the waiting run")

    for flow_id in (taker, waiter):
        await wait_until(lambda f=flow_id: _has(api, f, "QUEUED", action=2), what="the wait")
        received = [e for e in await api.history(flow_id) if e["event"] == "EVENT_RECEIVED"]
        assert [(e["key"], e["by"]) for e in received] == [
            ("o-kept" if flow_id == taker else "o-now", ANONYMOUS)
        ]
        await ok(await http.post(f"/flow/{flow_id}/terminate"))


async def test_a_child_run_names_its_parent(api: Api, http: httpx.AsyncClient) -> None:
    name, child_name = unique("audited-parent"), unique("audited-child")
    await api.register(workflow(child_name, user(1, f"{child_name}-nobody-polls")))
    await api.register(workflow(name, sub_workflow(1, child_name)))
    parent = await api.start(name)

    async def child_started() -> bool:
        return bool((await api.flow(parent))["actions"].get("1", {}).get("child"))

    await wait_until(child_started, what="the child run to start")
    child = (await api.flow(parent))["actions"]["1"]["child"]
    await ok(await http.post(f"/flow/{parent}/terminate"))
    await api.wait_status(child, "TERMINATED")

    child_history = by_event(await api.history(child))
    assert child_history[0] == ("RUN_STARTED", run_as(parent))
    assert child_history[-1] == ("RUN_TERMINATED", f"flow:{parent}")
    assert by_event(await api.history(parent))[-1] == ("RUN_TERMINATED", ANONYMOUS)


async def test_history_entries_document_by(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    by = schema["components"]["schemas"]["HistoryEntry"]["properties"]["by"]
    assert "principal" in by["description"]


ANN = Key.new("ann", Role.OPERATOR)
BOB = Key.new("bob", Role.OPERATOR)


@pytest.fixture(scope="module")
def named_server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    """A server that checks API keys: ann's and bob's."""
    entries = [key.entry.model_dump(exclude_none=True) for key in (ANN, BOB)]
    with serving(settings.model_copy(update={"api_keys": json.dumps(entries)})) as thread:
        yield thread


async def test_the_history_names_the_requests_principal(named_server: ServerThread) -> None:
    """Each request's own principal (the name of its API key), not a name the route chose."""
    async with httpx.AsyncClient(base_url=named_server.url, timeout=30) as http:
        as_ann, as_bob = ANN.headers, BOB.headers
        http.headers.update(as_ann)
        api = Api(http)
        name, event = unique("audited-named"), unique("go")
        await api.register(waits_then_works(name, event))
        started = await ok(
            await http.post("/flow/execute", json={"name": name, "input": {}}, headers=as_ann)
        )
        flow_id = started["flowId"]
        await wait_until(lambda: action_waits(api, flow_id), what="the wait to wait")
        await ok(await http.post(f"/flow/{flow_id}/pause", headers=as_bob))
        await ok(await http.post(f"/flow/{flow_id}/resume", headers=as_ann))
        await ok(await http.post(f"/flow/{flow_id}/events/{event}", json={}, headers=as_bob))
        await ok(await http.post(f"/flow/{flow_id}/terminate", headers=as_ann))

        asked = [(e, by) for e, by in by_event(await api.history(flow_id)) if e in ASKED]
        assert asked == [
            ("RUN_STARTED", "ann"),
            ("RUN_PAUSED", "bob"),
            ("RUN_RESUMED", "ann"),
            ("EVENT_RECEIVED", "bob"),
            ("RUN_TERMINATED", "ann"),
        ]


README = Path(__file__).resolve().parent.parent / "README.md"
README_WORKFLOW = "orderWorkflow"


def readme_history() -> list[dict[str, Any]]:
    """The history of the README's "Audit" example (its ```json block)."""
    section = README.read_text().split("### Audit", 1)[1].split("\n## ", 1)[0]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    history: list[dict[str, Any]] = json.loads(block)["history"]
    return history


async def test_the_readme_example(api: Api, http: httpx.AsyncClient) -> None:
    """The README's example, run as it says: the same entries, but for times and names."""
    name = unique(README_WORKFLOW)
    await api.register(
        workflow(name, system(1, "wait", {"default": [2]}, event="paid"), user(2, "ship"))
    )
    flow_id = (
        await ok(await http.post("/flow/execute", json={"name": name, "input": {"orderId": "o-1"}}))
    )["flowId"]
    await wait_until(lambda: action_waits(api, flow_id), what="the wait to wait")
    await ok(await http.post(f"/flow/{flow_id}/pause"))
    await ok(await http.post(f"/flow/{flow_id}/resume"))
    await ok(await http.post(f"/flow/{flow_id}/events/paid", json={"amount": 12}))
    await wait_until(lambda: _has(api, flow_id, "QUEUED", action=2), what="the task to ship")
    await ok(await http.post(f"/flow/{flow_id}/terminate"))

    history = await api.history(flow_id)
    for entry in history:
        assert entry.pop("at").endswith("Z")
        if entry.get("name") == name:
            entry["name"] = README_WORKFLOW
    assert history == [
        {key: value for key, value in entry.items() if key != "at"} for entry in readme_history()
    ]
