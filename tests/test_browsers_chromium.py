"""The cross-site attack of the README's "Browsers" in a real browser: Debian's ``chromium``
driven by Playwright loads a page from another origin (a second local HTTP server) whose
script POSTs ``text/plain`` bodies to the Orchy server, as a page on any site could."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, ServerThread, free_port, serving
from tests.helpers.waiting import unique

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it",
)
PAGE_SECONDS = 20.0

# The attacker's page: two no-cors text/plain POSTs (no preflight) and a form posted as
# text/plain into a hidden frame; ``window.attack`` settles once all three have been sent.
ATTACK_PAGE = """<!doctype html>
<html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink"></form>
<script>
const query = new URLSearchParams(location.search);
const target = query.get("target");
const definition = {name: query.get("name"), rootAction: 1,
                    actions: [{id: 1, type: "user", name: "exfiltrate", parameters: {}}]};
const post = (path, body) => fetch(target + path, {
  method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body,
}).then(() => "sent", (error) => String(error));
const formPosted = new Promise((resolve) => {
  const frame = document.querySelector("iframe");
  frame.addEventListener("load", () => resolve("sent"), {once: true});
  const form = document.getElementById("form");
  form.action = target + "/flow/" + query.get("formFlow") + "/terminate";
  form.submit();
});
window.attack = Promise.all([
  post("/metadata/workflow", JSON.stringify(definition)),
  post("/flow/" + query.get("fetchFlow") + "/terminate", "{}"),
  formPosted,
]);
</script>
</body></html>
"""


class PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ATTACK_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is the assertions'."""


@dataclass
class AttackerSite:
    """The attacker's site: http://localhost:<port>, another site than http://127.0.0.1."""

    port: int

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"


@pytest.fixture(scope="module")
def attacker_site() -> Iterator[AttackerSite]:
    port = free_port()
    site = ThreadingHTTPServer(("127.0.0.1", port), PageHandler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield AttackerSite(port)
    finally:
        site.shutdown()
        site.server_close()
        thread.join()


@dataclass
class Victim:
    """A workflow name the page tries to plant, and two runs it tries to terminate."""

    name: str
    fetch_flow: str
    form_flow: str


async def victim_on(api: Api) -> Victim:
    waiting = unique("victim")
    await api.register(workflow(waiting, user(1, unique("never-polled"))))
    return Victim(unique("planted"), await api.start(waiting), await api.start(waiting))


async def visit(site: AttackerSite, server: ServerThread, victim: Victim) -> list[str]:
    """Loads the attacker's page in chromium, aimed at ``server``; what each attempt did."""
    from playwright.async_api import async_playwright

    query = httpx.QueryParams(
        target=server.url,
        name=victim.name,
        fetchFlow=victim.fetch_flow,
        formFlow=victim.form_flow,
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], timeout=PAGE_SECONDS * 1000
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(PAGE_SECONDS * 1000)
            await page.goto(f"{site.origin}/attack.html?{query}")
            attempts: list[str] = await page.evaluate("window.attack")
        finally:
            await browser.close()
    return attempts


async def test_a_page_of_another_site_has_no_effect_through_a_real_browser(
    attacker_site: AttackerSite, server: ServerThread, api: Api
) -> None:
    victim = await victim_on(api)

    attempts = await visit(attacker_site, server, victim)

    assert attempts == ["sent", "sent", "sent"]
    assert (await api.http.get(f"/metadata/workflow/{victim.name}")).status_code == 404
    assert (await api.flow(victim.fetch_flow))["status"] == "RUNNING"
    assert (await api.flow(victim.form_flow))["status"] == "RUNNING"


async def test_the_same_page_takes_effect_once_its_origin_is_allowed(
    attacker_site: AttackerSite, settings: Settings, redis_client: Any
) -> None:
    """The control: the browser's requests do reach a server, and would act."""
    allowing = settings.model_copy(update={"allowed_origins": attacker_site.origin})
    with serving(allowing) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            api = Api(http)
            victim = await victim_on(api)

            assert await visit(attacker_site, server, victim) == ["sent", "sent", "sent"]

            assert (await http.get(f"/metadata/workflow/{victim.name}")).status_code == 200
            await api.wait_status(victim.fetch_flow, "TERMINATED")
            await api.wait_status(victim.form_flow, "TERMINATED")


async def test_a_page_the_server_serves_itself_may_call_it(server: ServerThread, api: Api) -> None:
    """The server's own origin (its /docs today, a dashboard tomorrow) is allowed, by either
    of its loopback names."""
    from playwright.async_api import async_playwright

    names = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], timeout=PAGE_SECONDS * 1000
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(PAGE_SECONDS * 1000)
            for base in (server.url, f"http://localhost:{server.port}"):
                name = unique("from-docs")
                await page.goto(f"{base}/docs")
                status = await page.evaluate(
                    """(definition) => fetch("/metadata/workflow", {
                         method: "POST", headers: {"Content-Type": "application/json"},
                         body: JSON.stringify(definition),
                       }).then((response) => response.status)""",
                    workflow(name, user(1, "x")),
                )
                assert status == 200
                names.append(name)
        finally:
            await browser.close()
    for name in names:
        assert (await api.http.get(f"/metadata/workflow/{name}")).status_code == 200
