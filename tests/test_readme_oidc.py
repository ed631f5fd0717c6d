"""The README's OIDC example run as written: its settings and its ``orchy serve --host
0.0.0.0`` (a non-loopback address, which starts because OIDC is configured), with the
issuer's address replaced by an issuer this test serves (discovery document and JWKS over
HTTP, real RSA keys); its curl, with a token of that issuer, reads the runs."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.security.principal import Role
from tests.helpers.auth import bearer
from tests.helpers.cli import ROOT
from tests.helpers.oidc import Issuer, serving_issuer
from tests.helpers.processes import Processes, ServerProcess, clean_env

README = ROOT / "README.md"
README_ISSUER = "https://login.example.com/realms/orchy"
SERVE = "orchy serve --host 0.0.0.0"
CURL = 'curl -H "Authorization: Bearer $ACCESS_TOKEN" http://orchy.internal:8080/flow'


def oidc_block() -> list[str]:
    """The lines of the README's OIDC shell example."""
    section = README.read_text().split("**OAuth/OIDC access tokens.**", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.rstrip(" \\") for line in block.strip().splitlines()]


def readme_settings() -> dict[str, str]:
    """The ``ORCHY_*`` assignments before the README's ``orchy serve``."""
    lines = oidc_block()
    assert SERVE in lines and CURL in lines, lines
    settings = {}
    for line in lines[: lines.index(SERVE)]:
        name, value = line.split("=", 1)
        settings[name] = shlex.split(value)[0]
    return settings


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serving_issuer() as running:
        running.new_key()
        yield running


async def test_the_readme_oidc_example_serves_tokens_of_its_issuer(
    issuer: Issuer, tmp_path: Path, processes: Processes, redis_url: str, redis_client: Any
) -> None:
    settings = readme_settings()
    assert settings["ORCHY_OIDC_ISSUER"] == README_ISSUER
    settings["ORCHY_OIDC_ISSUER"] = issuer.url
    host = SERVE.split("--host ", 1)[1]
    server = ServerProcess(
        clean_env(REDIS_URL=redis_url, **settings),
        tmp_path / "server.log",
        arguments=["--host", host],
    )
    processes.servers.append(server)
    await server.start()
    kid = issuer.published[0]
    token = issuer.token(
        kid,
        aud=settings["ORCHY_OIDC_AUDIENCE"],
        **{settings["ORCHY_OIDC_ROLE_CLAIM"]: Role.VIEWER.value},
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        read = await http.get("/flow", headers=bearer(token))
        assert read.status_code == 200, read.text
        assert "runs" in read.json()
        assert (await http.get("/flow")).status_code == 401
        started = await http.post(
            "/flow/execute", json={"name": "x", "input": {}}, headers=bearer(token)
        )
        assert started.status_code == 403, started.text  # a viewer reads only
