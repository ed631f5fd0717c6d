"""The README's "Testing your workflows" example, as a user's test file would hold it: a
workflow built in Python, registered on the ``orchy_server`` fixture's server (the pytest
plugin of ``orchy.testing``), run end to end by a worker in the background."""

from __future__ import annotations

import time
from typing import Any

import httpx

from app.worker import Worker  # the README writes `from orchy import Worker` (issue 13)
from orchy import Workflow
from orchy.testing import running_worker

ENDED = {"COMPLETED", "FAILED", "TERMINATED"}


def order_workflow() -> Workflow:
    wf = Workflow("order", output={"total": "{$.2.output.total}"})
    price = wf.user("price", parameters={"items": "{$.input.items}"})
    bill = wf.user("bill", parameters={"total": price.output_ref("total")})
    price >> bill
    price.on_error(wf.user("notify", parameters={"why": "{$.1.error}"}))
    return wf


worker = Worker()


@worker.action("price")
def price(task: dict[str, Any]) -> dict[str, Any]:
    return {"total": sum(item["price"] for item in task["items"])}


@worker.action("bill")
def bill(task: dict[str, Any]) -> dict[str, Any]:
    return {"total": task["total"], "billed": True}


@worker.action("notify")
def notify(task: dict[str, Any]) -> dict[str, Any]:
    return {"sent": task["why"]}


def test_an_order_is_priced_then_billed(orchy_server: str) -> None:
    items = [{"sku": "pen", "price": 2}, {"sku": "ink", "price": 5}]
    with httpx.Client(base_url=orchy_server) as http, running_worker(worker, orchy_server):
        http.post("/metadata/workflow", json=order_workflow().to_json()).raise_for_status()
        started = http.post("/flow/execute", json={"name": "order", "input": {"items": items}})
        flow_id = started.json()["flowId"]
        deadline = time.monotonic() + 30  # to be `orchy.Client(...).wait(flow_id)`
        while (run := http.get(f"/flow/{flow_id}").json())["status"] not in ENDED:
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
    assert run["status"] == "COMPLETED"
    assert run["output"] == {"total": 7}
    assert run["actions"]["2"]["output"] == {"total": 7, "billed": True}
