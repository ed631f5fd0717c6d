"""The samples of LiteFlow's README and LittleHorse's overview in ``workflows/``, each run by
its worker file's Worker against a real ``orchy serve``, the way a user tests their own
workflows: the ``orchy_server`` fixture and ``running_worker`` of ``orchy.testing`` (README,
"Testing your workflows")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchy import load_worker
from orchy.testing import running_worker
from tests.helpers.http import Api
from tests.helpers.samples import (
    LITEFLOW_EVENTS,
    LITEFLOW_FOR_EACH,
    LITEFLOW_HELLO_WORLD,
    LITEFLOW_IF,
    LITEFLOW_PASSING_DATA,
    LITEFLOW_WHILE,
    LITTLEHORSE_CHECKOUT,
    OTHER_SEEDS,
    RUN_SECONDS,
    Sample,
    register_sample,
)
from tests.helpers.waiting import wait_until


@pytest.fixture
async def http(orchy_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the ``orchy_server`` fixture's server."""
    async with httpx.AsyncClient(base_url=orchy_server, timeout=30) as client:
        yield client


@pytest.fixture
def api(http: httpx.AsyncClient) -> Api:
    return Api(http)


async def completed_runs(
    api: Api, orchy_server: str, sample: Sample, inputs: list[Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Registers ``sample`` and runs it once an input with its worker in the background until
    every run is complete: each run's id and state, in the order of ``inputs``."""
    await register_sample(api.http, sample)
    with running_worker(load_worker(str(sample.worker)), orchy_server):
        flow_ids = [await api.start(sample.name, input_data) for input_data in inputs]
        flows = await asyncio.gather(
            *(api.wait_status(flow_id, "COMPLETED", RUN_SECONDS) for flow_id in flow_ids)
        )
    return list(zip(flow_ids, flows, strict=True))


async def test_every_sample_file_registers_as_it_is(http: httpx.AsyncClient) -> None:
    for sample in OTHER_SEEDS:
        await register_sample(http, sample)
        stored = (await http.get(f"/metadata/workflow/{sample.name}")).json()
        posted = json.loads(sample.workflow.read_text())
        assert posted["description"]
        assert stored == {**posted, "version": stored["version"]}


async def test_liteflow_hello_world_says_hello_then_goodbye(api: Api, orchy_server: str) -> None:
    [(flow_id, flow)] = await completed_runs(api, orchy_server, LITEFLOW_HELLO_WORLD, [None])
    assert flow["actions"]["1"]["output"] == {"said": "Hello world"}
    assert flow["actions"]["2"]["output"] == {"said": "Goodbye"}
    completed = [
        entry["action"] for entry in await api.history(flow_id) if entry["event"] == "COMPLETED"
    ]
    assert completed == [1, 2]


async def test_liteflow_passing_data_maps_inputs_and_an_output_to_workflow_data(
    api: Api, orchy_server: str
) -> None:
    inputs = [LITEFLOW_PASSING_DATA.input, {"value1": 40, "value2": -2}]
    runs = await completed_runs(api, orchy_server, LITEFLOW_PASSING_DATA, inputs)
    for input_data, (_, flow) in zip(inputs, runs, strict=True):
        total = input_data["value1"] + input_data["value2"]
        assert flow["vars"] == {**input_data, "value3": total}
        assert flow["actions"]["2"]["output"] == {"output": total}
        assert flow["actions"]["3"]["output"] == {"said": "Goodbye", "value3": total}


async def test_liteflow_if_runs_do_stuff_only_when_value1_is_over_3(
    api: Api, orchy_server: str
) -> None:
    inputs = [LITEFLOW_IF.input, {"value1": 3}]
    [(_, taken), (_, skipped)] = await completed_runs(api, orchy_server, LITEFLOW_IF, inputs)
    assert taken["actions"]["2"]["output"] == {"value": True}
    assert taken["actions"]["3"]["output"] == {"did": {"value1": 5}}
    assert skipped["actions"]["2"]["output"] == {"value": False}
    assert "3" not in skipped["actions"]
    for flow in (taken, skipped):
        assert flow["actions"]["4"]["status"] == "COMPLETED"


async def test_littlehorse_checkout_completes_or_marks_the_order_failed_and_tells_the_customer(
    api: Api, orchy_server: str
) -> None:
    good = LITTLEHORSE_CHECKOUT.input
    no_stock = {**good, "orderId": "o-1002", "items": [{"sku": "lamp", "quantity": 1}]}
    declined = {**good, "orderId": "o-1003", "card": "0000"}
    runs = await completed_runs(api, orchy_server, LITTLEHORSE_CHECKOUT, [good, no_stock, declined])
    [(_, completed), (_, out_of_stock), (_, card_declined)] = runs
    assert completed["actions"]["2"]["output"]["total"] == 2 * 12.5 + 1.5
    assert completed["actions"]["4"]["output"]["message"] == (
        "Your order o-1001 is complete: 26.5 charged."
    )
    assert set(completed["actions"]) == {"1", "2", "3", "4"}
    for flow, failed_step, why in (
        (out_of_stock, "2", "not enough lamp in stock"),
        (card_declined, "3", "card 0000 declined"),
    ):
        assert flow["actions"][failed_step]["status"] == "FAILED"
        assert "4" not in flow["actions"]
        order = flow["actions"]["5"]["output"]
        assert order["status"] == "FAILED" and why in order["reason"]
        message = flow["actions"]["6"]["output"]["message"]
        assert message.startswith(f"Your order {flow['input']['orderId']} failed: ")
        assert why in message
    assert "3" not in out_of_stock["actions"]


async def test_liteflow_while_runs_do_stuff_until_value1_is_3(
    api: Api, http: httpx.AsyncClient, orchy_server: str
) -> None:
    [(flow_id, flow)] = await completed_runs(api, orchy_server, LITEFLOW_WHILE, [None])
    assert flow["vars"] == {"value1": 3}
    assert flow["actions"]["2"]["output"] == {"iteration": 3, "exited": True}
    assert flow["actions"]["4"]["output"] == {"said": "Goodbye", "value1": 3}
    passes = [
        entry
        for entry in await api.history(flow_id)
        if entry["event"] == "COMPLETED" and entry["action"] == 3
    ]
    assert len(passes) == 3
    executions = (await http.get(f"/flow/{flow_id}/actions/3/executions")).json()
    inputs = [execution["input"] for execution in executions["executions"]]
    assert inputs == [{"my_value": value, "pass": value + 1} for value in range(3)]


async def test_liteflow_events_reach_every_run_waiting_for_the_name_and_key(
    api: Api, http: httpx.AsyncClient, orchy_server: str
) -> None:
    await register_sample(http, LITEFLOW_EVENTS)
    with running_worker(load_worker(str(LITEFLOW_EVENTS.worker)), orchy_server):
        flow_ids = [await api.start(LITEFLOW_EVENTS.name) for _ in range(2)]

        async def waiting() -> bool:
            flows = [await api.flow(flow_id) for flow_id in flow_ids]
            return all(flow["actions"].get("2", {}).get("status") == "WAITING" for flow in flows)

        await wait_until(waiting, RUN_SECONDS, what="both runs waiting for event1")
        published = await http.post("/events/event1", json={"key": "key1", "data": "hello"})
        assert published.status_code == 200, published.text
        flows = await asyncio.gather(
            *(api.wait_status(flow_id, "COMPLETED", RUN_SECONDS) for flow_id in flow_ids)
        )
    answer = published.json()
    delivered = {entry["flowId"] for entry in answer["delivered"]}
    # A run whose wait was not yet registered takes the event kept for it instead.
    assert delivered == set(flow_ids) or answer["kept"]
    for flow in flows:
        assert flow["vars"] == {"captured_value": "hello"}
        assert flow["actions"]["3"]["output"] == {"said": "Goodbye", "captured_value": "hello"}


async def test_liteflow_for_each_runs_do_stuff_once_per_item_in_parallel(
    api: Api, orchy_server: str
) -> None:
    [(flow_id, flow)] = await completed_runs(api, orchy_server, LITEFLOW_FOR_EACH, [None])
    items = ["abc", "def", "xyz"]
    did = [{"did": {"context_item": item, "index": index}} for index, item in enumerate(items)]
    assert flow["actions"]["2"]["output"] == did
    assert flow["actions"]["3"]["output"] == {"said": "Goodbye", "did": did}
    history = await api.history(flow_id)
    queued = [
        entry["seq"] for entry in history if entry["event"] == "QUEUED" and entry["action"] == 2
    ]
    first_item_end = next(
        index
        for index, entry in enumerate(history)
        if entry["event"] == "COMPLETED" and entry.get("seq") in queued
    )
    # In parallel: the three items were queued before the first of them ended.
    assert len(queued) == 3
    assert all(
        index < first_item_end
        for index, entry in enumerate(history)
        if entry["event"] == "QUEUED" and entry["action"] == 2
    )
