"""No token or key ever appears in what the server writes or answers: ``orchy serve`` with its
access log on, API keys and OIDC tokens, used well and badly, a keys file holding a key by
mistake; then its whole output, the refusals and a run's view and history are searched for
every token the test sent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from app.api.security.principal import Role
from tests.helpers.auth import Key, KeysFile, bearer
from tests.helpers.definitions import user, workflow
from tests.helpers.oidc import AUDIENCE, serving_issuer
from tests.helpers.processes import Processes, marked_env
from tests.helpers.waiting import unique, wait_until

RELOAD_SECONDS = "0.05"


async def test_no_token_appears_in_logs_answers_or_views(
    tmp_path: Path, processes: Processes, redis_url: str
) -> None:
    admin, client = Key.new("admin-1", Role.ADMIN), Key.new("client-1", Role.CLIENT)
    keys = KeysFile(tmp_path / "keys.jsonl")
    keys.write(admin, client)
    with serving_issuer() as issuer:
        kid = issuer.new_key()
        env = marked_env(
            ORCHY_REDIS_URL=redis_url,
            ORCHY_API_KEYS_FILE=str(keys.path),
            ORCHY_API_KEYS_RELOAD_SECONDS=RELOAD_SECONDS,
            ORCHY_OIDC_ISSUER=issuer.url,
            ORCHY_OIDC_AUDIENCE=AUDIENCE,
            ORCHY_ACCESS_LOG="true",
        )
        server = processes.server(env, tmp_path / "server.log")
        await server.start()
        long_ago = int(time.time()) - 3600
        token = issuer.token(kid, orchy_role="operator", sub="oidc-operator")
        expired = issuer.token(kid, orchy_role="admin", iat=long_ago, exp=long_ago + 60)
        unknown = Key.new("never-given", Role.ADMIN)
        mistaken = Key.new("mistake", Role.ADMIN)
        sent = [admin.key, client.key, token, expired, unknown.key, mistaken.key]
        answers: list[str] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def answered(method: str, path: str, headers: dict[str, str], **rest: Any) -> int:
                response = await http.request(method, path, headers=headers, **rest)
                answers.append(response.text)
                answers.extend(response.headers.values())
                return response.status_code

            name = unique("secrets")
            definition = workflow(name, user(1, f"{name}-step"))
            assert (
                await answered("POST", "/metadata/workflow", admin.headers, json=definition) == 200
            )
            run = {"name": name, "input": {"note": "nothing secret"}}
            started = await http.post("/flow/execute", json=run, headers=client.headers)
            assert started.status_code == 201
            flow_id = started.json()["flowId"]
            assert await answered("GET", f"/flow/{flow_id}", bearer(token)) == 200
            assert await answered("GET", f"/flow/{flow_id}/history", bearer(token)) == 200
            assert await answered("POST", f"/flow/{flow_id}/pause", bearer(token)) == 200
            assert await answered("GET", "/flow", bearer(expired)) == 401
            assert await answered("GET", "/flow", unknown.headers) == 401
            assert await answered("GET", "/flow", {"Authorization": f"Basic {admin.key}"}) == 401
            assert await answered("GET", "/flow", {"Authorization": f"Token {token}"}) == 401
            assert await answered("POST", "/tasks/poll", client.headers, json={}) == 403

            # A keys file with a key itself in it (a mistake): refused, logged without it.
            keys.path.write_text(
                f'{admin.entry.line()}\n{{"name": "m", "role": "admin", "key": "{mistaken.key}"}}\n'
            )

            async def complained() -> bool:
                assert await answered("GET", "/flow", admin.headers) == 200
                return "holds a key itself" in server.log_tail(None)

            await wait_until(complained, what="the server to refuse the mistaken keys file")
        await server.terminate()
    log = server.log_tail(None)
    assert "GET /flow" in log, "the access log is on: every request has a line"
    assert "signing keys from" in log, "the issuer's keys were fetched and logged"
    for secret in sent:
        assert secret not in log
        for answer in answers:
            assert secret not in answer
