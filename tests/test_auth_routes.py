"""The hidden-route test: every route of the OpenAPI schema, and the routes outside it
(``/docs``, its files, ``/openapi.json``), called on a real server with a key of every role
and with no token. Each answer must be what the table below says: the route's answer (2xx,
or a 4xx that is not about credentials) for the roles that may, 403 for the others, 401
without a token, except for the public routes. A route this table does not know fails the
test, so a new route cannot be left open (or shut) by accident.

The table is written here on purpose rather than read from ``app/api/security``: it is the
permission table of the README, checked against what the server does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from app.api.app import create_app
from app.api.security.authenticate import AuthenticationMiddleware, Authenticator
from app.api.security.principal import Principal, Role, principal_of
from app.api.security.route_table import RouteTable
from app.settings import Settings
from tests.helpers.auth import Key, role_keys
from tests.helpers.http import ServerThread, serving

ADMIN, OPERATOR, CLIENT, WORKER, VIEWER = (
    Role.ADMIN,
    Role.OPERATOR,
    Role.CLIENT,
    Role.WORKER,
    Role.VIEWER,
)
EVERY_ROLE = frozenset(Role)
READERS = frozenset({ADMIN, OPERATOR, CLIENT, VIEWER})
PUBLIC = "public"
# Public, answering with a redirect (to the dashboard).
REDIRECT = "redirect"

# (method, path) -> the roles that may call it, or PUBLIC.
EXPECTED: dict[tuple[str, str], frozenset[Role] | str] = {
    ("POST", "/tasks/poll"): frozenset({ADMIN, WORKER}),
    ("POST", "/tasks/{task_id}/complete"): frozenset({ADMIN, WORKER}),
    ("POST", "/tasks/{task_id}/fail"): frozenset({ADMIN, WORKER}),
    ("POST", "/tasks/results"): frozenset({ADMIN, WORKER}),
    ("POST", "/tasks/{task_id}/heartbeat"): frozenset({ADMIN, WORKER}),
    ("GET", "/tasks/queues"): READERS,
    ("GET", "/workers"): READERS,
    ("POST", "/flow/execute"): frozenset({ADMIN, OPERATOR, CLIENT}),
    ("POST", "/flow/execute/many"): frozenset({ADMIN, OPERATOR, CLIENT}),
    ("GET", "/flow"): READERS,
    ("GET", "/flow/{flow_id}"): READERS,
    ("GET", "/flow/{flow_id}/history"): READERS,
    ("GET", "/flow/{flow_id}/actions/{action_id}/executions"): READERS,
    ("POST", "/flow/{flow_id}/events/{event}"): frozenset({ADMIN, OPERATOR, CLIENT}),
    ("POST", "/events/{event}"): frozenset({ADMIN, OPERATOR, CLIENT}),
    ("POST", "/flow/{flow_id}/pause"): frozenset({ADMIN, OPERATOR}),
    ("POST", "/flow/{flow_id}/resume"): frozenset({ADMIN, OPERATOR}),
    ("POST", "/flow/{flow_id}/terminate"): frozenset({ADMIN, OPERATOR}),
    ("POST", "/flow/{flow_id}/retry"): frozenset({ADMIN, OPERATOR}),
    ("POST", "/flow/{flow_id}/rerun"): frozenset({ADMIN, OPERATOR, CLIENT}),
    ("POST", "/metadata/workflow"): frozenset({ADMIN, OPERATOR}),
    ("GET", "/metadata/workflow"): READERS,
    ("GET", "/metadata/workflow/{name}"): READERS,
    ("POST", "/metadata/action"): frozenset({ADMIN, OPERATOR, WORKER}),
    ("GET", "/metadata/action"): EVERY_ROLE,
    ("GET", "/metadata/action/{name}"): EVERY_ROLE,
    ("GET", "/health"): PUBLIC,
}
# Routes the schema does not list, with a concrete path.
OUTSIDE_THE_SCHEMA: dict[tuple[str, str], frozenset[Role] | str] = {
    ("GET", "/docs"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/metrics"): READERS,
    ("GET", "/docs/static/swagger-ui.css"): PUBLIC,
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/static/app.js"): PUBLIC,
    ("GET", "/"): REDIRECT,
    ("GET", "/dashboard"): REDIRECT,
}
NOTHING = "hidden-route-nothing"
FLOW_ID = "0" * 32
PATH_VALUES = {
    "task_id": f"{FLOW_ID}.1.1.{'0' * 32}",
    "flow_id": FLOW_ID,
    "event": "hidden-route-event",
    "action_id": "1",
    "name": NOTHING,
}
# Bodies that reach each route's own checks and change nothing that matters.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/tasks/poll"): {"workerId": "w", "actions": [NOTHING], "max": 1, "waitSeconds": 0},
    ("POST", "/tasks/{task_id}/complete"): {"output": {}},
    ("POST", "/tasks/{task_id}/fail"): {"error": "x"},
    ("POST", "/tasks/results"): {"results": []},
    ("POST", "/flow/execute"): {"name": NOTHING, "input": {}},
    ("POST", "/flow/execute/many"): {"name": NOTHING, "inputs": [{}]},
    ("POST", "/flow/{flow_id}/events/{event}"): {},
    ("POST", "/events/{event}"): {"key": "hidden-route", "ttlSeconds": 1},
    ("POST", "/metadata/workflow"): {},
    ("POST", "/metadata/action"): {"name": NOTHING},
}
SERVER_ERROR = 500


@pytest.fixture(scope="module")
def keys() -> dict[Role, Key]:
    return role_keys()


@pytest.fixture(scope="module")
def guarded(settings: Settings, keys: dict[Role, Key], redis_client: Any) -> Iterator[ServerThread]:
    entries = [key.entry.model_dump(exclude_none=True) for key in keys.values()]
    with serving(settings.model_copy(update={"api_keys": json.dumps(entries)})) as thread:
        yield thread


def schema_routes(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    }


def concrete(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace(f"{{{name}}}", value)
    assert "{" not in path, f"no value for a parameter of {path}: add it to PATH_VALUES"
    return path


async def call(http: httpx.AsyncClient, method: str, path: str, key: Key | None) -> httpx.Response:
    headers = key.headers if key is not None else {}
    body = BODIES.get((method, path))
    return await http.request(
        method,
        concrete(path),
        headers=headers,
        content=None if body is None else json.dumps(body),
    )


async def test_every_route_answers_each_role_as_the_table_says(
    guarded: ServerThread, keys: dict[Role, Key]
) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        schema = (await http.get("/openapi.json")).json()
        listed = schema_routes(schema)
        assert listed == set(EXPECTED), (
            f"routes without a rule in this test: {sorted(listed - set(EXPECTED))}; "
            f"rules for no route: {sorted(set(EXPECTED) - listed)}"
        )
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                assert "x-orchy-permission" in operation, (method, path)
        failures = []
        for (method, path), allowed in {**EXPECTED, **OUTSIDE_THE_SCHEMA}.items():
            for role in [None, *Role]:
                response = await call(http, method, path, None if role is None else keys[role])
                expected = _expected(allowed, role)
                if not _as_expected(response, expected):
                    failures.append(
                        f"{method} {path} as {role}: {response.status_code} "
                        f"{response.text[:200]} (expected {expected})"
                    )
        assert not failures, "\n".join(failures)


def _expected(allowed: frozenset[Role] | str, role: Role | None) -> str:
    if allowed == PUBLIC:
        return "2xx"
    if allowed == REDIRECT:
        return "3xx"
    if role is None:
        return "401"
    return "answered" if role in allowed else "403"


def _as_expected(response: httpx.Response, expected: str) -> bool:
    status = response.status_code
    if expected == "2xx":
        return 200 <= status < 300
    if expected == "3xx":
        return 300 <= status < 400
    if expected == "answered":
        return status not in (401, 403) and status < SERVER_ERROR
    if status != int(expected):
        return False
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False
    if not response.json().get("error"):
        return False
    return expected != "401" or response.headers.get("www-authenticate", "").startswith("Bearer")


async def test_methods_and_paths_no_route_has_need_a_token_and_then_are_not_found(
    guarded: ServerThread, keys: dict[Role, Key]
) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        for method, path in (
            ("DELETE", "/flow/{flow_id}"),
            ("PUT", "/metadata/workflow"),
            ("GET", "/tasks/poll"),
            ("GET", "/admin"),
            ("POST", "/health"),
        ):
            anonymous = await http.request(method, concrete(path))
            assert anonymous.status_code == 401, (method, path)
            answered = await http.request(method, concrete(path), headers=keys[ADMIN].headers)
            assert answered.status_code in (404, 405), (method, path, answered.status_code)


def test_an_application_with_a_route_that_declares_no_permission_is_refused() -> None:
    """What ``create_app`` does once its routes are in place: a route added without
    ``needs(...)`` stops the table of permissions from being built."""
    app = create_app(Settings())
    RouteTable.of(app)

    async def undeclared() -> dict[str, str]:
        return {}

    app.add_api_route("/undeclared", undeclared, methods=["GET"])
    with pytest.raises(TypeError, match="/undeclared declares no permission"):
        RouteTable.of(app)
    sub = APIRouter()
    sub.add_api_route("/nested", undeclared, methods=["POST"])
    other = create_app(Settings())
    other.include_router(sub, prefix="/included")
    with pytest.raises(TypeError, match="/included/nested declares no permission"):
        RouteTable.of(other)


async def test_a_public_route_of_a_checked_server_gets_a_caller_who_may_only_read(
    settings: Settings, keys: dict[Role, Key]
) -> None:
    """A public route passes without its token being read: what it is handed as the caller
    (were it to use one) is a reader of the server's namespace, never the admin that a
    server without authentication hands every request."""
    entries = [key.entry.model_dump(exclude_none=True) for key in keys.values()]
    checked = settings.model_copy(update={"api_keys": json.dumps(entries)})
    authenticator = Authenticator.of(checked)
    assert authenticator is not None
    seen: list[Principal] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        seen.append(principal_of(scope))

    middleware = AuthenticationMiddleware(route, authenticator, RouteTable.of(create_app(checked)))
    for path, headers in (("/health", []), ("/health", [(b"authorization", b"Bearer x")])):
        scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
        await middleware(scope, None, None)  # type: ignore[arg-type]
    admin = [(b"authorization", f"Bearer {keys[Role.ADMIN].key}".encode())]
    await middleware(
        {"type": "http", "method": "GET", "path": "/flow", "headers": admin}, None, None
    )  # type: ignore[arg-type]
    assert [(p.role, p.tenant) for p in seen] == [
        (Role.VIEWER, None),
        (Role.VIEWER, None),
        (Role.ADMIN, None),
    ]
