"""The README's "Testing your workflows" example as a test file: a workflow built in Python,
registered on the ``orchy_server`` fixture's server (the pytest plugin of
``orchy.testing``), run end to end by a worker in the background. The file also checks that
the README shows this very test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from orchy import Worker, Workflow
from orchy.testing import running_worker

README = Path(__file__).resolve().parent.parent / "README.md"

worker = Worker()


@worker.action("price")
def price(task: dict[str, Any]) -> dict[str, Any]:
    return {"total": sum(item["price"] for item in task["items"])}


@worker.action("bill")
def bill(task: dict[str, Any]) -> dict[str, Any]:
    return {"total": task["total"], "billed": True}


def test_an_order_is_priced_then_billed(orchy_server: str) -> None:
    wf = Workflow("order")
    price_step = wf.user("price", parameters={"items": "{$.input.items}"})
    price_step >> wf.user("bill", parameters={"total": price_step.output_ref("total")})
    wf.output = {"total": price_step.output_ref("total")}
    items = [{"sku": "pen", "price": 2}, {"sku": "ink", "price": 5}]
    with httpx.Client(base_url=orchy_server) as http, running_worker(worker, orchy_server):
        http.post("/metadata/workflow", json=wf.to_json()).raise_for_status()
        started = http.post("/flow/execute", json={"name": "order", "input": {"items": items}})
        flow_id = started.json()["flowId"]
        deadline = time.monotonic() + 30  # waiting on the run: orchy.Client's wait
        while (run := http.get(f"/flow/{flow_id}").json())["status"] not in (
            "COMPLETED",
            "FAILED",
            "TERMINATED",
        ):
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
    assert run["status"] == "COMPLETED" and run["output"] == {"total": 7}
    assert run["actions"]["2"]["output"] == {"total": 7, "billed": True}


def readme_block(section: str) -> str:
    """The first ```python block of the README's ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    body = text[start : text.index("\n## ", start + 1)]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_shows_this_test() -> None:
    block = readme_block("Testing your workflows")
    assert "from orchy import Worker, Workflow" in block
    for line in (
        'price_step = wf.user("price", parameters={"items": "{$.input.items}"})',
        "with httpx.Client(base_url=orchy_server) as http, running_worker(worker, orchy_server):",
        'http.post("/metadata/workflow", json=wf.to_json()).raise_for_status()',
        'assert run["status"] == "COMPLETED" and run["output"] == {"total": 7}',
    ):
        assert line in block


def test_the_readme_s_builder_example_builds_a_valid_definition() -> None:
    scope: dict[str, Any] = {}
    exec(readme_block("Workflows as code"), scope)
    definition = scope["definition"]
    assert [action["name"] for action in definition["actions"]] == [
        "price",
        "if",
        "wait",
        "bill",
        "notify",
    ]
    assert definition["output"] == {"total": "{$.1.output.total}"}
    assert Workflow.from_json(definition).to_json() == definition
