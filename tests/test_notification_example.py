"""The notification example of ``workflows/``, file unchanged, run by the real worker
process (``orchy worker workflows/notification_worker.py``) against a real uvicorn server.
The workflow file in ``workflows/`` is the source of the example."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.settings import Settings
from tests.helpers.http import Api, ServerThread, api_of, serving
from tests.helpers.notification import INPUT, WORKFLOW, notification_worker_process
from tests.helpers.waiting import unique, wait_until

MALE_USER = 1234
RUN_SECONDS = 40.0
FEMALE_USER = 42


async def _run(api: Api, user_id: int) -> str:
    return await api.start("notificationWorkflow", {**INPUT, "userId": user_id})


@pytest.fixture
def own_server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    """A server of its own namespace: the example's queues (query-db, sendSms...) hold only
    this test's tasks, not those other tests leave in the session's shared queues."""
    with serving(settings.model_copy(update={"namespace": unique("notification")})) as server:
        yield server


async def test_notification_example_all_three_branches(own_server: ServerThread) -> None:
    async with api_of(own_server.url) as api:
        with notification_worker_process(own_server.url):
            await all_three_branches(api)


async def all_three_branches(api: Api) -> None:
    http = api.http
    response = await http.post("/metadata/workflow", content=WORKFLOW.read_bytes())
    assert response.status_code == 200, response.text
    male = await _run(api, MALE_USER)
    female_open = await _run(api, FEMALE_USER)
    female_timeout = await _run(api, FEMALE_USER)

    async def waiting_for_open(flow_id: str) -> bool:
        actions: dict[str, Any] = (await api.flow(flow_id))["actions"]
        return bool(actions.get("7", {}).get("status") == "WAITING")

    await wait_until(lambda: waiting_for_open(female_open), what="the FEMALE run to wait")
    sent = await http.post(f"/flow/{female_open}/events/open", json={"opened": True})
    assert sent.json() == {"status": "delivered"}

    male_flow, open_flow, timeout_flow = await asyncio.gather(
        api.wait_status(male, "COMPLETED", timeout=RUN_SECONDS),
        api.wait_status(female_open, "COMPLETED", timeout=RUN_SECONDS),
        api.wait_status(female_timeout, "COMPLETED", timeout=RUN_SECONDS),
    )

    assert male_flow["data"]["2"]["output"]["user"]["discount"] == 20
    assert male_flow["data"]["4"]["output"] == {"sent": True, "to": f"+1-555-{MALE_USER}"}
    assert set(male_flow["actions"]) == {"1", "2", "3", "4", "6", "8"}
    assert male_flow["actions"]["8"]["status"] == "COMPLETED"
    history = (await http.get(f"/flow/{male}/history")).json()["history"]
    sms_queued = [e for e in history if e["event"] == "QUEUED" and e.get("action") == 4]
    assert sms_queued, "sendSms was never queued"

    assert set(open_flow["actions"]) == {"1", "2", "3", "5", "7", "9"}
    assert open_flow["actions"]["7"]["output"] == {"opened": True}
    assert set(timeout_flow["actions"]) == {"1", "2", "3", "5", "7", "10"}
    assert timeout_flow["actions"]["7"]["output"] == {"timedOut": True}


@pytest.mark.parametrize(("age", "discount"), [(25, 20), (20, 20), (19, 10)])
async def test_sms_message_is_built_from_the_javascript_discount(
    api: Api, age: int, discount: int
) -> None:
    """Action 4's parameters as a worker receives them (the tests act as the worker here)."""
    definition = json.loads(WORKFLOW.read_text())
    definition["name"] = unique("notification-message")
    queues = {}
    for action in definition["actions"]:
        if action["type"] == "user":
            queues[action["name"]] = action["name"] = f"{definition['name']}-{action['name']}"
    await api.register(definition)
    flow_id = await api.start(definition["name"], INPUT)
    query = await api.poll_one(queues["query-db"])
    assert query["flowId"] == flow_id and query["input"] == {"userId": INPUT["userId"]}
    user = {"gender": "MALE", "age": age, "phone": "+1-555-0"}
    await api.complete(query["taskId"], {"user": user, "phone": "+1-555-0"})
    sms = await api.poll_one(queues["sendSms"])
    assert sms["input"] == {
        "phoneNumber": "+1-555-0",
        "message": f"Hi hi first sms get discount {discount} %",
    }
    await api.http.post(f"/flow/{flow_id}/terminate")
