"""API keys against a real server: keys from a file that is read again while the server runs
(added keys work, removed ones get 401, a broken file keeps the keys read before), keys
inline in the settings, refusals as JSON, and worker keys limited to some action names."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.api.app import create_app
from app.api.security.api_keys import ApiKeysError, parse_entries
from app.api.security.principal import Role
from app.settings import Settings
from tests.helpers.auth import Key, KeysFile, bearer, role_keys
from tests.helpers.cli import COMMAND_SECONDS
from tests.helpers.definitions import user, workflow
from tests.helpers.http import ServerThread, free_port, serving
from tests.helpers.processes import MARK, ROOT, marked_env, marked_processes
from tests.helpers.waiting import unique, wait_until

RELOAD_SECONDS = 0.05
LIMITED_ACTIONS = ["auth-allowed-1", "auth-allowed-2"]


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> KeysFile:
    keys = KeysFile(tmp_path_factory.mktemp("keys") / "keys.jsonl")
    keys.write(*role_keys().values())
    return keys


@pytest.fixture(scope="module")
def keyed(settings: Settings, keys_file: KeysFile, redis_client: Any) -> Iterator[ServerThread]:
    keyed_settings = settings.model_copy(
        update={"api_keys_file": str(keys_file.path), "api_keys_reload_seconds": RELOAD_SECONDS}
    )
    with serving(keyed_settings) as thread:
        yield thread


@pytest_asyncio.fixture
async def http(keyed: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as client:
        yield client


def key_of(keys_file: KeysFile, role: Role) -> Key:
    return next(key for key in keys_file.keys if key.entry.role is role)


async def status_with(http: httpx.AsyncClient, key: Key) -> int:
    return (await http.get("/flow", headers=key.headers)).status_code


async def test_a_key_added_to_the_file_works_and_a_removed_one_gets_401(
    http: httpx.AsyncClient, keys_file: KeysFile
) -> None:
    before = list(keys_file.keys)
    viewer = key_of(keys_file, Role.VIEWER)
    added = Key.new("added", Role.VIEWER)
    assert await status_with(http, added) == 401
    try:
        keys_file.write(*before, added)

        async def added_works() -> bool:
            return await status_with(http, added) == 200

        await wait_until(added_works, what="the added key to be accepted")
        assert await status_with(http, viewer) == 200

        keys_file.write(*[key for key in before if key is not viewer], added)

        async def removed_refused() -> bool:
            return await status_with(http, viewer) == 401

        await wait_until(removed_refused, what="the removed key to be refused")
        assert await status_with(http, added) == 200
    finally:
        keys_file.write(*before)
        await wait_until(lambda: _accepted(http, viewer), what="the keys to be restored")


async def _accepted(http: httpx.AsyncClient, key: Key) -> bool:
    return await status_with(http, key) == 200


async def test_a_broken_keys_file_keeps_the_keys_read_before(
    http: httpx.AsyncClient, keys_file: KeysFile, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orchy.auth")
    before = list(keys_file.keys)
    viewer = key_of(keys_file, Role.VIEWER)
    breakages = {
        '{"name": "broken", "role": "viewer", "sha256": "nope"}\n': "sha256",
        "not json at all\n": "not valid JSON",
    }
    try:
        for text, complaint in breakages.items():
            keys_file.path.write_text(text)

            async def complained(complaint: str = complaint) -> bool:
                # The file is read again when a request comes: the viewer's keeps working.
                assert await status_with(http, viewer) == 200
                return any(complaint in record.getMessage() for record in caplog.records)

            await wait_until(complained, what=f"the server to read the broken file ({complaint})")
            caplog.clear()
        unrelated = Key.new("after-the-break", Role.VIEWER)
        keys_file.write(*before, unrelated)
        await wait_until(lambda: _accepted(http, unrelated), what="the fixed file to be read")
    finally:
        keys_file.write(*before)


async def test_refusals_are_json_with_a_message_and_a_bearer_challenge(
    http: httpx.AsyncClient, keys_file: KeysFile
) -> None:
    unknown = Key.new("unknown", Role.ADMIN)
    cases = {
        "no token": {},
        "unknown key": unknown.headers,
        "basic auth": {"Authorization": "Basic dXNlcjpwYXNz"},
        "bearer without a token": {"Authorization": "Bearer"},
        "a JWT-shaped token with no OIDC configured": bearer("a.b.c"),
    }
    for label, headers in cases.items():
        response = await http.post("/flow/execute", json={"name": "x"}, headers=headers)
        assert response.status_code == 401, label
        assert response.headers["www-authenticate"].startswith("Bearer"), label
        message = response.json()["error"]
        assert message, label
        assert unknown.key not in response.text
    viewer = key_of(keys_file, Role.VIEWER)
    refused = await http.post("/flow/execute", json={"name": "x"}, headers=viewer.headers)
    assert refused.status_code == 403
    assert "viewer" in refused.json()["error"]
    assert "start" in refused.json()["error"]
    assert viewer.key not in refused.text


async def test_public_routes_need_no_token_and_unknown_routes_need_one(
    http: httpx.AsyncClient, keys_file: KeysFile
) -> None:
    for path in ("/health", "/docs", "/openapi.json", "/docs/static/swagger-ui.css"):
        assert (await http.get(path)).status_code == 200, path
    assert (await http.get("/nowhere")).status_code == 401
    viewer = key_of(keys_file, Role.VIEWER)
    assert (await http.get("/nowhere", headers=viewer.headers)).status_code == 404


async def test_a_principal_of_every_role_reaches_what_its_role_allows(
    http: httpx.AsyncClient, keys_file: KeysFile
) -> None:
    """A workflow registered by an operator, started by a client, worked by a worker, read
    by a viewer: the whole life of a run with a key of each role."""
    operator, client, worker, viewer = (
        key_of(keys_file, role) for role in (Role.OPERATOR, Role.CLIENT, Role.WORKER, Role.VIEWER)
    )
    name = unique("auth-life")
    action = f"{name}-step"
    definition = workflow(name, user(1, action))
    registered = await http.post("/metadata/workflow", json=definition, headers=operator.headers)
    assert registered.status_code == 200, registered.text
    started = await http.post(
        "/flow/execute", json={"name": name, "input": {}}, headers=client.headers
    )
    assert started.status_code == 201, started.text
    flow_id = started.json()["flowId"]
    poll = {"workerId": "w", "actions": [action], "max": 1, "waitSeconds": 5}
    polled = await http.post("/tasks/poll", json=poll, headers=worker.headers)
    [task] = polled.json()["tasks"]
    completed = await http.post(
        f"/tasks/{task['taskId']}/complete", json={"output": {}}, headers=worker.headers
    )
    assert completed.status_code == 200, completed.text
    view = await http.get(f"/flow/{flow_id}", headers=viewer.headers)
    assert view.json()["status"] == "COMPLETED"


@pytest.fixture(scope="module")
def limited() -> Key:
    return Key.new("limited-worker", Role.WORKER, actions=LIMITED_ACTIONS)


@pytest.fixture(scope="module")
def inline_server(
    settings: Settings, limited: Key, redis_client: Any
) -> Iterator[tuple[ServerThread, dict[Role, Key]]]:
    """A server whose keys are inline in the settings (ORCHY_API_KEYS)."""
    keys = role_keys()
    entries = [key.entry.model_dump(exclude_none=True) for key in [*keys.values(), limited]]
    inline = settings.model_copy(update={"api_keys": json.dumps(entries)})
    with serving(inline) as thread:
        yield thread, keys


async def test_inline_keys_and_a_worker_limited_to_some_actions(
    inline_server: tuple[ServerThread, dict[Role, Key]], limited: Key
) -> None:
    server, keys = inline_server
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        admin = keys[Role.ADMIN]
        name = unique("auth-limited")
        allowed, other = LIMITED_ACTIONS[0], f"{name}-other"
        definition = workflow(name, user(1, allowed, {"default": [2]}), user(2, other))
        assert (
            await http.post("/metadata/workflow", json=definition, headers=admin.headers)
        ).status_code == 200
        for action in (allowed, other):
            defined = await http.post(
                "/metadata/action", json={"name": action}, headers=admin.headers
            )
            assert defined.status_code == 200

        # Polls: only its own names; the refusal names the others.
        poll = {"workerId": "w", "actions": [allowed, other], "max": 1, "waitSeconds": 0}
        refused = await http.post("/tasks/poll", json=poll, headers=limited.headers)
        assert refused.status_code == 403
        assert other in refused.json()["error"] and allowed not in _refused_names(refused)

        # Action definitions: reads and writes of its own names only; the list shows those.
        assert (
            await http.get(f"/metadata/action/{allowed}", headers=limited.headers)
        ).status_code == 200
        assert (
            await http.get(f"/metadata/action/{other}", headers=limited.headers)
        ).status_code == 403
        own = {"name": allowed, "retryCount": 1}
        assert (
            await http.post("/metadata/action", json=own, headers=limited.headers)
        ).status_code == 200
        foreign = await http.post(
            "/metadata/action", json={"name": other, "retryCount": 0}, headers=limited.headers
        )
        assert foreign.status_code == 403 and other in foreign.json()["error"]
        listed = await http.get("/metadata/action", headers=limited.headers)
        names = {action["name"] for action in listed.json()}
        assert allowed in names and other not in names
        everything = await http.get("/metadata/action", headers=admin.headers)
        assert other in {action["name"] for action in everything.json()}
        kept = await http.get(f"/metadata/action/{other}", headers=admin.headers)
        assert kept.json()["retryCount"] != 0  # the refused definition changed nothing

        # A run: its first task polled, completed with a `next` offer naming another action
        # (refused, nothing applied), then without (applied).
        started = await http.post(
            "/flow/execute", json={"name": name, "input": {}}, headers=admin.headers
        )
        assert started.status_code == 201
        poll = {"workerId": "w", "actions": [allowed], "max": 1, "waitSeconds": 5}
        [task] = (await http.post("/tasks/poll", json=poll, headers=limited.headers)).json()[
            "tasks"
        ]
        offer = {"workerId": "w", "actions": [other], "max": 1}
        refused = await http.post(
            f"/tasks/{task['taskId']}/complete",
            json={"output": {}, "next": offer},
            headers=limited.headers,
        )
        assert refused.status_code == 403 and "next.actions" in refused.json()["error"]
        batch = {"results": [{"taskId": task["taskId"], "output": {}}], "next": offer}
        refused = await http.post("/tasks/results", json=batch, headers=limited.headers)
        assert refused.status_code == 403
        # The refused answers applied nothing: the task is still the worker's to complete.
        done = await http.post(
            f"/tasks/{task['taskId']}/complete", json={"output": {}}, headers=limited.headers
        )
        assert done.status_code == 200, done.text


def _refused_names(response: httpx.Response) -> str:
    """The part of a refusal that lists the names refused (before "it may on")."""
    message: str = response.json()["error"]
    return message.split("(it may on")[0]


def test_entries_are_checked_and_a_key_itself_is_never_kept(tmp_path: Path) -> None:
    good = Key.new("ok", Role.CLIENT)
    assert [entry.name for entry in parse_entries(good.entry.line(), "file")] == ["ok"]
    secret = "orchy_plaintext-that-must-not-be-quoted"
    bad = {
        '{"name": "x", "role": "client", "key": "' + secret + '"}': "sha256",
        '{"name": "x", "role": "boss", "sha256": "' + "0" * 64 + '"}': "role",
        '{"name": "x", "role": "client", "sha256": "' + secret + '"}': "sha256",
        '{"name": "x", "role": "client", "tenant": "a/b", "sha256": "' + "0" * 64 + '"}': "tenant",
        '{"name": "x", "role": "client", "tennant": "a", "sha256": "' + "0" * 64 + '"}': "tennant",
        "[1, 2": "JSON",
    }
    for text, named in bad.items():
        with pytest.raises(ApiKeysError) as raised:
            parse_entries(text, "keys.jsonl")
        assert named in str(raised.value), text
        assert secret not in str(raised.value)
    twice = f"{good.entry.line()}\n{good.entry.line()}\n"
    path = tmp_path / "twice.jsonl"
    path.write_text(twice)
    with pytest.raises(ApiKeysError, match="same key"):
        create_app(Settings(api_keys_file=str(path)))
    with pytest.raises(ApiKeysError, match="cannot read"):
        create_app(Settings(api_keys_file=str(tmp_path / "missing.jsonl")))


def test_serve_with_settings_it_cannot_use_says_why_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    for extra, reason in (
        ({"ORCHY_API_KEYS_FILE": str(missing)}, f"{missing}: cannot read"),
        (
            {"ORCHY_OIDC_ISSUER": "https://issuer.example"},
            "ORCHY_OIDC_ISSUER needs ORCHY_OIDC_AUDIENCE",
        ),
    ):
        env = marked_env(ORCHY_DATA_DIR=str(tmp_path / "data"), **extra)
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
        )
        assert result.returncode == 1, result.stderr
        assert f"orchy serve: {reason}" in result.stderr
        assert "Traceback" not in result.stderr
        assert marked_processes(env[MARK]) == []
