"""What a web page can do with the server through its visitor's browser (README: Browsers):
real servers over HTTP, sent the headers a browser sends. The same attack in a real browser
is in ``test_browsers_chromium.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.api.security.browsers import BadOrigin, BrowserGuard, allowed_origins, normal_origin
from app.api.security.loopback import is_loopback_bind, split_host
from app.settings import Settings
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique

ALLOWED = "https://app.example"
ALSO_ALLOWED = "http://localhost:3000"
FOREIGN = "https://evil.example"
LISTED_HOST = "orchy.internal"
READ_DEADLINE_SECONDS = 10.0
# What a page's ``fetch(url, {method: "POST", mode: "no-cors", body: "..."})`` sends with it.
CROSS_SITE_POST = {
    "Origin": FOREIGN,
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "empty",
    "Content-Type": "text/plain;charset=UTF-8",
}


@pytest.fixture(scope="module")
def guarded(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    """A server on loopback (the default address) with two allowed origins."""
    allowed = f"{ALLOWED}, {ALSO_ALLOWED}/"
    with serving(settings.model_copy(update={"allowed_origins": allowed})) as thread:
        yield thread


@pytest.fixture(scope="module")
def listed(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    """A server on loopback that also answers the name ``orchy.internal``."""
    with serving(settings.model_copy(update={"allowed_hosts": LISTED_HOST})) as thread:
        yield thread


@pytest.fixture(scope="module")
def public(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    """A server that believes it is bound to every interface (it checks no Host)."""
    with serving(settings.model_copy(update={"host": "0.0.0.0"})) as thread:
        yield thread


@pytest_asyncio.fixture
async def http(guarded: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture
async def api(http: httpx.AsyncClient) -> Api:
    return Api(http)


def refused_for_origin(response: httpx.Response, origin: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert origin in error and "ORCHY_ALLOWED_ORIGINS" in error, error
    assert not [name for name in response.headers if name.startswith("access-control-")]


async def a_running_run(api: Api) -> tuple[str, str]:
    """A registered workflow (name) and a run of it (id) that waits for a worker."""
    name = unique("victim")
    await api.register(workflow(name, user(1, unique("never-polled"))))
    return name, await api.start(name)


# -- the attack of the issue ----------------------------------------------------------------


async def test_a_page_of_another_site_can_neither_register_nor_terminate(
    api: Api, http: httpx.AsyncClient
) -> None:
    """A page's text/plain POSTs (no preflight) that the server would read as JSON."""
    _, flow_id = await a_running_run(api)
    planted = unique("planted")
    definition = workflow(planted, user(1, "exfiltrate"))

    register = await http.post(
        "/metadata/workflow",
        content=httpx.Request("POST", "/", json=definition).content,
        headers=CROSS_SITE_POST,
    )
    terminate = await http.post(
        f"/flow/{flow_id}/terminate", content=b"{}", headers=CROSS_SITE_POST
    )

    refused_for_origin(register, FOREIGN)
    refused_for_origin(terminate, FOREIGN)
    assert (await http.get(f"/metadata/workflow/{planted}")).status_code == 404
    assert (await api.flow(flow_id))["status"] == "RUNNING"


async def test_the_same_posts_from_an_allowed_origin_take_effect(
    api: Api, http: httpx.AsyncClient
) -> None:
    _, flow_id = await a_running_run(api)
    name = unique("from-the-dashboard")
    headers = {**CROSS_SITE_POST, "Origin": ALLOWED}

    register = await http.post(
        "/metadata/workflow",
        content=httpx.Request("POST", "/", json=workflow(name, user(1, "x"))).content,
        headers=headers,
    )
    terminate = await http.post(f"/flow/{flow_id}/terminate", headers=headers)

    assert register.status_code == 200, register.text
    assert register.headers["access-control-allow-origin"] == ALLOWED
    assert "Origin" in register.headers.get_list("vary")
    assert terminate.status_code == 200, terminate.text
    assert (await api.wait_status(flow_id, "TERMINATED"))["status"] == "TERMINATED"


async def test_a_refused_request_is_answered_before_its_body_is_read(
    guarded: ServerThread, api: Api
) -> None:
    """The body never comes: a server that read it would wait for it (and answer nothing)."""
    name = unique("never-sent")
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
    try:
        writer.write(
            f"POST /metadata/workflow HTTP/1.1\r\nHost: 127.0.0.1:{guarded.port}\r\n"
            f"Origin: {FOREIGN}\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n"
            f'{{"name": "{name}", '.encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_DEADLINE_SECONDS)
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 403 ")
    assert (await api.http.get(f"/metadata/workflow/{name}")).status_code == 404


# -- curl -d @file ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
async def test_a_body_of_any_declared_type_is_read_as_json_when_no_page_sent_it(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    """``curl -d @file`` declares form encoding; other clients declare text or nothing."""
    name = unique("curl")
    body = httpx.Request("POST", "/", json=workflow(name, user(1, "x"))).content
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = await http.post("/metadata/workflow", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["name"] == name
    assert not [name for name in response.headers if name.startswith("access-control-")]


async def test_a_text_plain_body_from_an_allowed_origin_is_read_as_json(
    http: httpx.AsyncClient,
) -> None:
    name = unique("allowed-text")
    body = httpx.Request("POST", "/", json=workflow(name, user(1, "x"))).content
    headers = {"Origin": ALSO_ALLOWED, "Content-Type": "text/plain"}

    response = await http.post("/metadata/workflow", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALSO_ALLOWED


# -- CORS ------------------------------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin_names_the_methods_and_headers(
    http: httpx.AsyncClient,
) -> None:
    headers = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = await http.options("/flow/execute", headers=headers)

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert set(response.headers["access-control-allow-methods"].split(", ")) >= {"GET", "POST"}
    allowed_headers = response.headers["access-control-allow-headers"].lower().split(", ")
    assert set(allowed_headers) == {"authorization", "content-type"}
    assert int(response.headers["access-control-max-age"]) == Settings().cors_max_age_seconds


async def test_a_preflight_from_another_origin_is_refused(http: httpx.AsyncClient) -> None:
    headers = {"Origin": FOREIGN, "Access-Control-Request-Method": "POST"}
    refused_for_origin(await http.options("/flow/execute", headers=headers), FOREIGN)


@pytest.mark.parametrize(
    "origin",
    [
        FOREIGN,
        "null",  # a sandboxed page, a file
        "https://app.example.evil.example",
        "http://app.example",  # the allowed host, another scheme
        "https://app.example:8443",  # the allowed host, another port
        "http://localhost:3001",
    ],
)
async def test_a_read_from_an_origin_not_listed_is_refused(
    http: httpx.AsyncClient, origin: str
) -> None:
    refused_for_origin(await http.get("/flow", headers={"Origin": origin}), origin)


async def test_the_servers_own_origin_is_allowed(guarded: ServerThread) -> None:
    """A page the server itself serves (a dashboard) may call it."""
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        for own in (guarded.url, f"http://localhost:{guarded.port}"):
            host = own.removeprefix("http://")
            response = await http.get("/flow", headers={"Origin": own, "Host": host})
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == own


async def test_an_image_or_script_of_another_site_is_refused_a_link_is_followed(
    http: httpx.AsyncClient,
) -> None:
    """Browsers send no Origin on a cross-site GET; its Sec-Fetch-* headers tell what it is."""
    image = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    link = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }

    refused = await http.get("/flow", headers=image)
    followed = await http.get("/health", headers=link)

    assert refused.status_code == 403
    assert "Sec-Fetch-Site" in refused.json()["error"]
    assert followed.status_code == 200


# -- DNS rebinding ---------------------------------------------------------------------------


async def test_a_loopback_server_refuses_a_name_pointed_at_it(
    guarded: ServerThread, api: Api
) -> None:
    """After rebinding, the attacker's page is same-origin with the server: a same-origin
    POST carries its own name as Origin and Host; a same-origin GET carries no Origin."""
    rebound = f"evil.example:{guarded.port}"
    name = unique("rebound")
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        post = await http.post(
            "/metadata/workflow",
            json=workflow(name, user(1, "x")),
            headers={
                "Host": rebound,
                "Origin": f"http://{rebound}",
                "Sec-Fetch-Site": "same-origin",
            },
        )
        read = await http.get("/flow", headers={"Host": rebound, "Sec-Fetch-Site": "same-origin"})

    for response in (post, read):
        assert response.status_code == 403
        error = response.json()["error"]
        assert rebound in error and "ORCHY_ALLOWED_HOSTS" in error, error
    assert (await api.http.get(f"/metadata/workflow/{name}")).status_code == 404


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST", "127.0.0.2"])
async def test_a_loopback_server_answers_its_loopback_names_at_any_port(
    guarded: ServerThread, host: str
) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        for shown in (host, f"{host}:{guarded.port}", f"{host}:80"):
            response = await http.get("/health", headers={"Host": shown})
            assert response.status_code == 200, (shown, response.text)


async def test_a_listed_host_is_answered_and_is_the_servers_own_origin(
    listed: ServerThread,
) -> None:
    own = f"{LISTED_HOST}:{listed.port}"
    async with httpx.AsyncClient(base_url=listed.url) as http:
        response = await http.get("/flow", headers={"Host": own, "Origin": f"http://{own}"})
        other = await http.get("/health", headers={"Host": f"other.internal:{listed.port}"})

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == f"http://{own}"
    assert other.status_code == 403


async def test_a_server_on_every_interface_answers_any_host_but_trusts_no_rebound_origin(
    public: ServerThread,
) -> None:
    """Its Host may be any name; a page on a name cannot pass for the server's own origin
    (its name might be rebound); an IP address can."""
    async with httpx.AsyncClient(base_url=public.url) as http:
        by_name = await http.get("/health", headers={"Host": "orchy.example"})
        named_page = await http.get(
            "/flow", headers={"Host": "orchy.example", "Origin": "http://orchy.example"}
        )
        address_page = await http.get("/flow", headers={"Origin": public.url})

    assert by_name.status_code == 200
    refused_for_origin(named_page, "http://orchy.example")
    assert address_page.status_code == 200, address_page.text


# -- the setting -----------------------------------------------------------------------------


def test_allowed_origins_are_compared_as_browsers_write_them() -> None:
    assert allowed_origins(" HTTPS://App.Example:443/ ,http://localhost:3000,,") == {
        "https://app.example",
        "http://localhost:3000",
    }
    assert normal_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert normal_origin("http://example.com:80") == "http://example.com"


@pytest.mark.parametrize(
    "entry", ["app.example", "https://app.example/path", "https://user@app.example", "https://x:y"]
)
def test_an_allowed_origin_that_is_not_scheme_host_port_is_refused(entry: str) -> None:
    with pytest.raises(BadOrigin, match="ORCHY_ALLOWED_ORIGINS"):
        allowed_origins(f"https://ok.example,{entry}")


def test_hosts_and_bind_addresses() -> None:
    assert split_host("[::1]:8080") == ("::1", "8080")
    assert split_host("Example.COM") == ("example.com", "")
    assert split_host("example.com:80") == ("example.com", "80")
    assert [is_loopback_bind(host) for host in ("127.0.0.1", "localhost", "::1", "127.0.1.1")] == [
        True
    ] * 4
    assert [is_loopback_bind(host) for host in ("0.0.0.0", "::", "192.0.2.1", "example.com")] == [
        False
    ] * 4


def test_a_star_in_allowed_hosts_turns_the_host_check_off(settings: Settings) -> None:
    def checks_host(**update: str) -> bool:
        guard = BrowserGuard(app=None, settings=settings.model_copy(update=update))  # type: ignore[arg-type]
        return guard.check_host

    assert checks_host(host="127.0.0.1")
    assert not checks_host(host="127.0.0.1", allowed_hosts="*")
    assert not checks_host(host="0.0.0.0")
    assert checks_host(host="0.0.0.0", allowed_hosts="orchy.example")
