"""The dashboard (``/ui``) in a real browser: Debian's ``chromium`` driven by Playwright,
against real servers and a real worker. A run is found by a searchable variable, its DAG
shows each action's state, an event moves it on, a failed run is retried, another is
terminated; on a server with API keys the page's token decides what the buttons may do.
The screenshots the README shows are taken here: ``ORCHY_SCREENSHOTS=docs`` writes them to
``docs/screenshots``."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.security.principal import Role
from app.settings import Settings
from orchy import NonRetryableError, Worker
from tests.helpers.auth import role_keys
from tests.helpers.definitions import sub_workflow, system, user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique
from tests.helpers.worker_wire import fast_worker, running

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it",
)
PAGE_SECONDS = 15.0
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOP_PASSES = 3
# How a node of the DAG shows its count of executions: the sign, then the count.
EXECUTIONS_MARK = "\N{MULTIPLICATION SIGN}"


def order_workflow(name: str, queues: dict[str, str]) -> dict[str, Any]:
    """Places an order (its id becomes the searchable ``orderId``), packs it in a loop of
    three passes, waits for ``approved``, then ships it."""
    return workflow(
        name,
        {
            **user(1, queues["place"], {"default": [2]}, orderId="{$.input.orderId}"),
            "setVars": [{"var": "orderId", "op": "assign", "value": "{$.output.orderId}"}],
        },
        system(
            2,
            "while",
            {"body": [3], "default": [4]},
            condition=f"{{$.2.output.iteration}} < {LOOP_PASSES}",
        ),
        user(3, queues["pack"], {"default": [2]}, orderId="{$.vars.orderId}"),
        system(4, "wait", {"default": [5]}, event="approved"),
        user(5, queues["ship"], orderId="{$.vars.orderId}"),
        vars={"orderId": None},
        searchable=["$.vars.orderId"],
    )


class Carrier:
    """The shipping worker's outside world: while ``down`` is set, shipping fails."""

    def __init__(self) -> None:
        self.down = threading.Event()


def order_worker(
    settings: Settings, server: ServerThread, queues: dict[str, str], carrier: Carrier
) -> Worker:
    worker = Worker(server.url, settings=fast_worker(settings))

    @worker.action(queues["place"])
    def place(task: dict[str, Any]) -> dict[str, Any]:
        return {"orderId": task["orderId"]}

    @worker.action(queues["pack"])
    def pack(task: dict[str, Any]) -> dict[str, Any]:
        return {"packed": task["orderId"]}

    @worker.action(queues["ship"])
    def ship(task: dict[str, Any]) -> dict[str, Any]:
        if carrier.down.is_set():
            raise NonRetryableError("carrier unreachable")
        return {"shipped": task["orderId"]}

    return worker


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=PAGE_SECONDS * 1000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    tab = await context.new_page()
    tab.set_default_timeout(PAGE_SECONDS * 1000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"errors in the page's scripts: {errors}"


async def shoot(page: Any, name: str) -> None:
    """A screenshot of the page; written to docs/screenshots (the README's) only when
    ``ORCHY_SCREENSHOTS=docs``, so that a test run leaves the checkout as it was."""
    png: bytes = await page.screenshot(full_page=True)
    assert png.startswith(PNG_SIGNATURE)
    if os.environ.get("ORCHY_SCREENSHOTS") == "docs":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(png)


async def node_classes(page: Any, action_id: int) -> str:
    classes: str = await page.get_attribute(f'g.node[data-action-id="{action_id}"]', "class")
    return classes


async def status_is(page: Any, status: str) -> None:
    await page.wait_for_selector(f"#run-status .badge.state-{status.lower()}")


async def test_find_a_run_follow_it_send_an_event_retry_it_and_terminate_another(
    server: ServerThread, settings: Settings, api: Api, page: Any
) -> None:
    queues = {step: unique(step) for step in ("place", "pack", "ship")}
    name = unique("order")
    await api.register(order_workflow(name, queues))
    stuck, never_polled = unique("stuck"), unique("never-polled")
    await api.register(workflow(stuck, user(1, never_polled)))
    carrier = Carrier()
    order_id = unique("A")
    async with running(order_worker(settings, server, queues, carrier)):
        wanted = await api.start(name, {"orderId": order_id})

        # / leads to the dashboard's runs, refreshed live: a run started meanwhile appears.
        await page.goto(f"{server.url}/")
        assert page.url == f"{server.url}/ui"
        await page.wait_for_selector(f'tr.run-row[data-flow-id="{wanted}"]')
        other = await api.start(name, {"orderId": unique("B")})
        await page.wait_for_selector(f'tr.run-row[data-flow-id="{other}"]')

        # Found by the variable's value: only one; none of them has COMPLETED yet.
        await page.fill("#run-filters textarea[name=where]", f"$.vars.orderId={order_id}")
        await page.select_option("#run-filters select[name=status]", ["COMPLETED"])
        await page.click("#run-filters button[type=submit]")
        await page.wait_for_selector("text=No run matches.")
        await page.select_option("#run-filters select[name=status]", [])
        await page.click("#run-filters button[type=submit]")
        await page.wait_for_selector(f'tr.run-row[data-flow-id="{wanted}"]')
        await page.wait_for_function(
            "document.querySelectorAll('tr.run-row').length === 1", polling=100
        )
        assert await page.locator(f'tr.run-row[data-flow-id="{other}"]').count() == 0
        assert "where=" in page.url
        await shoot(page, "runs")

        # Its DAG: placed and packed three times, waiting for the event.
        await page.click(f'tr.run-row[data-flow-id="{wanted}"] a')
        await page.wait_for_selector('g.node[data-action-id="4"].state-waiting')
        assert "state-completed" in await node_classes(page, 1)
        assert "state-completed" in await node_classes(page, 3)
        packing = await page.text_content('g.node[data-action-id="3"]')
        assert f"{EXECUTIONS_MARK}{LOOP_PASSES}" in packing
        assert "state-none" in await node_classes(page, 5)
        waiting_fill = await page.eval_on_selector(
            'g.node[data-action-id="4"] rect', "rect => getComputedStyle(rect).fill"
        )
        assert waiting_fill == "rgb(254, 243, 199)"
        await page.click('g.node[data-action-id="3"]')
        await page.wait_for_function(
            f"document.querySelectorAll('#executions .execution').length === {LOOP_PASSES}",
            polling=100,
        )
        await shoot(page, "run-waiting")

        # The event moves it on; shipping fails while the carrier is down.
        carrier.down.set()
        await page.fill("#event-name", "approved")
        await page.fill("#event-data", json.dumps({"approver": "ann"}))
        await page.click("#event-form button[type=submit]")
        await status_is(page, "FAILED")
        await page.wait_for_selector('g.node[data-action-id="5"].state-failed')
        await page.click('g.node[data-action-id="5"]')
        await page.wait_for_selector("#executions .exec-error")
        assert "carrier unreachable" in await page.inner_text("#executions")
        await shoot(page, "run-failed")

        # Retried once the carrier is back, it completes.
        carrier.down.clear()
        await page.click("#do-retry")
        await status_is(page, "COMPLETED")
        await page.wait_for_selector('g.node[data-action-id="5"].state-completed')
        await page.wait_for_selector('#history li[data-event="RUN_RETRIED"]')
        assert "by anonymous" in await page.inner_text('#history li[data-event="RUN_RETRIED"]')
        assert (await api.flow(wanted))["status"] == "COMPLETED"
        await shoot(page, "run-completed")

        # Rerun from the page: the new run's page, naming the old one.
        await page.click("#do-rerun")
        await page.wait_for_selector(f'#rerun-of a[href="#/run/{wanted}"]')
        assert wanted not in page.url

        # A run whose task no worker takes: a retry refused (409) readably; paused, resumed
        # and terminated from its page.
        hanging = await api.start(stuck)
        await page.fill("#jump-id", hanging)
        await page.click("#jump button[type=submit]")
        await page.wait_for_selector('g.node[data-action-id="1"].state-queued')
        await page.click("#do-retry")
        await page.wait_for_selector("#outcome.refused")
        assert "retry refused: Not possible in the run's current state (409)" in (
            await page.inner_text("#outcome")
        )
        await page.click("#do-pause")
        await status_is(page, "PAUSED")
        await page.click("#do-resume")
        await status_is(page, "RUNNING")
        await page.click("#do-terminate")
        await status_is(page, "TERMINATED")
        assert (await api.flow(hanging))["status"] == "TERMINATED"

        # A parent run links to its child, the child to its parent.
        parent_name = unique("parent")
        await api.register(workflow(parent_name, sub_workflow(1, stuck)))
        parent = await api.start(parent_name)
        await page.goto(f"{server.url}/ui#/run/{parent}")
        await page.click("#children a")
        await page.wait_for_selector(f'#parent a[href="#/run/{parent}"]')
        child = page.url.rsplit("/", 1)[1]
        assert (await api.flow(child))["parent"]["flowId"] == parent

        await page.goto(f"{server.url}/ui#/queues")
        await page.wait_for_selector(f'tr.queue[data-action="{queues["ship"]}"]')
        # Tasks no worker polls for are flagged; the queues the worker polls are not, and the
        # worker is listed with its actions.
        await page.wait_for_selector(f'tr.queue.no-worker[data-action="{never_polled}"]')
        assert (
            await page.locator(f'tr.queue.no-worker[data-action="{queues["ship"]}"]').count() == 0
        )
        await page.wait_for_selector(f'table.workers td:has-text("{queues["ship"]}")')
        await shoot(page, "queues")
        await page.goto(f"{server.url}/ui#/definitions")
        await page.click(f'a[href="#/definition/{name}?version=1"]')
        await page.wait_for_selector('g.node[data-action-id="5"]')
        assert f'"name": "{name}"' in await page.inner_text("pre.json")
        assert await page.locator("svg.dag path.edge.back").count() == 1
        await shoot(page, "definition")


async def test_the_token_in_the_page_decides_what_its_buttons_may_do(
    settings: Settings, redis_client: Any, page: Any
) -> None:
    keys = role_keys()
    entries = [key.entry.model_dump(exclude_none=True) for key in keys.values()]
    guarded = settings.model_copy(update={"api_keys": json.dumps(entries)})
    with serving(guarded) as server:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, headers=keys[Role.OPERATOR].headers
        ) as http:
            api = Api(http)
            stuck = unique("stuck")
            await api.register(workflow(stuck, user(1, unique("never-polled"))))
            flow_id = await api.start(stuck)

            # Without a token the page shows the server's refusal.
            await page.goto(f"{server.url}/ui#/run/{flow_id}")
            await page.wait_for_selector("#error:not([hidden])")
            assert "(401)" in await page.inner_text("#error")

            # A viewer sees the run; its terminate is refused with the 403 message.
            await page.fill("#token", keys[Role.VIEWER].key)
            await page.click("#token-form button[type=submit]")
            await page.wait_for_selector('g.node[data-action-id="1"].state-queued')
            await page.click("#do-terminate")
            await page.wait_for_selector("#outcome.refused")
            refusal = await page.inner_text("#outcome")
            assert "terminate refused: Not allowed for this token's role (403)" in refusal
            assert (await api.flow(flow_id))["status"] == "RUNNING"
            await shoot(page, "viewer-refused")

            # The same tab given an operator's token terminates it; the history says who.
            await page.fill("#token", keys[Role.OPERATOR].key)
            await page.click("#token-form button[type=submit]")
            await page.wait_for_selector('g.node[data-action-id="1"].state-queued')
            # The token stays with the tab (sessionStorage) across a reload.
            await page.reload()
            assert await page.input_value("#token") == keys[Role.OPERATOR].key
            await page.wait_for_selector('g.node[data-action-id="1"].state-queued')
            await page.click("#do-terminate")
            await status_is(page, "TERMINATED")
            assert (await api.flow(flow_id))["status"] == "TERMINATED"
            await page.wait_for_selector('#history li[data-event="RUN_TERMINATED"]')
            assert "by test-operator" in await page.inner_text(
                '#history li[data-event="RUN_TERMINATED"]'
            )


RUNS_FOR_PAGES = 30  # more than the dashboard's page of 25


async def page_ids(page: Any) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all(
        "tr.run-row", "rows => rows.map(row => row.dataset.flowId)"
    )
    return ids


async def test_the_runs_page_filters_by_time_and_pages_by_cursor(
    server: ServerThread, api: Api, page: Any
) -> None:
    name = unique("paged")
    await api.register(workflow(name, user(1, unique("paged-task"))))
    response = await api.http.post(
        "/flow/execute/many", json={"name": name, "inputs": [{}] * RUNS_FOR_PAGES}
    )
    assert response.status_code == 201, response.text
    started = set(response.json()["flowIds"])

    # The workflow chosen in the form: a first page of 25, the next page the other 5, and
    # back; live refresh off so that the pages stay as they are.
    await page.goto(f"{server.url}/ui#/runs")
    await page.select_option('#run-filters select[name="name"]', name)
    await page.click('#run-filters button[type="submit"]')
    await page.uncheck("#live")
    await page.wait_for_function("document.querySelectorAll('tr.run-row').length === 25")
    first = await page_ids(page)
    await page.click("#next-page")
    await page.wait_for_function("document.querySelectorAll('tr.run-row').length === 5")
    second = await page_ids(page)
    assert set(first) | set(second) == started and not set(first) & set(second)
    assert await page.is_disabled("#next-page")
    await page.click("#previous-page")
    await page.wait_for_function("document.querySelectorAll('tr.run-row').length === 25")
    assert await page_ids(page) == first

    # Started before a time long past: none; started after it: all of them again.
    await page.fill('#run-filters input[name="startedBefore"]', "2020-01-01T00:00")
    await page.click('#run-filters button[type="submit"]')
    await page.wait_for_selector("text=No run matches.")
    await page.fill('#run-filters input[name="startedBefore"]', "")
    await page.fill('#run-filters input[name="startedAfter"]', "2020-01-01T00:00")
    await page.click('#run-filters button[type="submit"]')
    await page.wait_for_function("document.querySelectorAll('tr.run-row').length === 25")
    assert set(await page_ids(page)) <= started
