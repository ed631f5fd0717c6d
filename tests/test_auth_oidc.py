"""OAuth/OIDC access tokens against a real server and a real issuer: the test makes RSA keys,
serves the issuer's discovery document and JWKS over HTTP, and signs tokens. Valid tokens of
each role, and every way a token is refused: expired, another issuer, another audience, a bad
signature, an unknown key (until the issuer publishes it: key rotation), no role, alg none."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization

from app.api.security.oidc import ClaimNames, principal_of_claims
from app.api.security.principal import Principal, Role
from app.api.security.refusals import Forbidden
from app.settings import Settings
from tests.helpers.auth import Key, bearer
from tests.helpers.definitions import user, workflow
from tests.helpers.http import ServerThread, serving
from tests.helpers.oidc import AUDIENCE, Issuer, serving_issuer
from tests.helpers.waiting import unique, wait_until

REFRESH_MIN_SECONDS = 0.2
LEEWAY_SECONDS = 5.0
# What each role gets from GET /flow (a read) and POST /tasks/poll (work).
READS = {Role.ADMIN: 200, Role.OPERATOR: 200, Role.CLIENT: 200, Role.VIEWER: 200, Role.WORKER: 403}
POLLS = {Role.ADMIN: 200, Role.WORKER: 200, Role.OPERATOR: 403, Role.CLIENT: 403, Role.VIEWER: 403}


def oidc_settings(settings: Settings, issuer: Issuer, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "oidc_issuer": issuer.url,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_refresh_min_seconds": REFRESH_MIN_SECONDS,
            "oidc_leeway_seconds": LEEWAY_SECONDS,
            **extra,
        }
    )


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serving_issuer() as running:
        running.new_key()
        yield running


@pytest.fixture(scope="module")
def admin_key() -> Key:
    return Key.new("setup", Role.ADMIN)


@pytest.fixture(scope="module")
def oidc_server(
    settings: Settings, issuer: Issuer, admin_key: Key, redis_client: Any
) -> Iterator[ServerThread]:
    """Tokens of ``issuer``, and an API key beside them."""
    keys = json.dumps([admin_key.entry.model_dump(exclude_none=True)])
    with serving(oidc_settings(settings, issuer, api_keys=keys)) as thread:
        yield thread


@pytest_asyncio.fixture
async def http(oidc_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oidc_server.url, timeout=30) as client:
        yield client


def first_kid(issuer: Issuer) -> str:
    return issuer.published[0]


async def read_status(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/flow", headers=bearer(token))


POLL = {"workerId": "w", "actions": ["oidc-nothing"], "max": 1, "waitSeconds": 0}


async def test_a_valid_token_of_each_role_gets_what_the_role_allows(
    http: httpx.AsyncClient, issuer: Issuer
) -> None:
    for role in Role:
        token = issuer.token(first_kid(issuer), orchy_role=role.value, sub=f"user-{role}")
        read = await read_status(http, token)
        assert read.status_code == READS[role], (role, read.text)
        polled = await http.post("/tasks/poll", json=POLL, headers=bearer(token))
        assert polled.status_code == POLLS[role], (role, polled.text)
        if polled.status_code == 403:
            assert role.value in polled.json()["error"]


async def test_the_actions_claim_limits_a_worker_token(
    http: httpx.AsyncClient, issuer: Issuer, admin_key: Key
) -> None:
    name = unique("oidc-worker")
    mine, other = f"{name}-mine", f"{name}-other"
    definition = workflow(name, user(1, mine))
    registered = await http.post("/metadata/workflow", json=definition, headers=admin_key.headers)
    assert registered.status_code == 200
    started = await http.post(
        "/flow/execute", json={"name": name, "input": {}}, headers=admin_key.headers
    )
    assert started.status_code == 201
    token = issuer.token(first_kid(issuer), orchy_role="worker", orchy_actions=[mine])
    refused = await http.post(
        "/tasks/poll",
        json={"workerId": "w", "actions": [mine, other], "max": 1, "waitSeconds": 0},
        headers=bearer(token),
    )
    assert refused.status_code == 403 and other in refused.json()["error"]
    polled = await http.post(
        "/tasks/poll",
        json={"workerId": "w", "actions": [mine], "max": 1, "waitSeconds": 5},
        headers=bearer(token),
    )
    assert polled.status_code == 200
    [task] = polled.json()["tasks"]
    assert task["flowId"] == started.json()["flowId"]


async def test_refused_tokens_get_401_with_the_reason(
    http: httpx.AsyncClient, issuer: Issuer
) -> None:
    kid = first_kid(issuer)
    stranger = issuer.new_key(publish=False)
    long_ago = int(time.time()) - 3600
    cases = {
        "expired": (
            issuer.token(kid, orchy_role="admin", iat=long_ago, exp=long_ago + 60),
            "expired",
        ),
        "another issuer": (
            issuer.token(kid, orchy_role="admin", iss="https://elsewhere.example"),
            "issuer",
        ),
        "another audience": (issuer.token(kid, orchy_role="admin", aud="someone-else"), "aud"),
        "no audience": (issuer.token(kid, orchy_role="admin", aud=None), "aud"),
        "no expiry": (issuer.token(kid, orchy_role="admin", exp=None), "exp"),
        "signed by another key under a published kid": (
            issuer.token(kid, signer=stranger, orchy_role="admin"),
            "signature",
        ),
        "alg none": (unsigned(issuer.claims(orchy_role="admin"), kid), "algorithm"),
        "HS256 keyed with the issuer's public key": (
            hs256_with_public_key(issuer, kid, issuer.claims(orchy_role="admin")),
            "algorithm",
        ),
        "not a JWT": ("not.a.jwt", "JWT"),
    }
    for label, (token, reason) in cases.items():
        response = await read_status(http, token)
        assert response.status_code == 401, (label, response.text)
        assert reason in response.json()["error"], (label, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert token not in response.text


async def test_a_token_without_a_role_is_refused_with_a_message(
    http: httpx.AsyncClient, issuer: Issuer
) -> None:
    kid = first_kid(issuer)
    for claims, message in (
        ({}, "no orchy_role claim"),
        ({"orchy_role": "superuser"}, "names no role"),
        ({"orchy_role": ["admin", "viewer"]}, "several roles"),
    ):
        response = await read_status(http, issuer.token(kid, **claims))
        assert response.status_code == 403, response.text
        assert message in response.json()["error"]
    listed = issuer.token(kid, orchy_role=["offline_access", "viewer"])
    assert (await read_status(http, listed)).status_code == 200


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    http: httpx.AsyncClient, issuer: Issuer
) -> None:
    """A token signed with a key the issuer has not published yet is refused; once the issuer
    publishes it, the server fetches the keys again and takes the token, and the old key's
    tokens keep working as long as the issuer lists it."""
    old = first_kid(issuer)
    new = issuer.new_key(publish=False)
    token = issuer.token(new, orchy_role="viewer")
    refused = await read_status(http, token)
    assert refused.status_code == 401
    assert "does not publish" in refused.json()["error"]
    issuer.published.append(new)
    fetches = issuer.jwks_requests

    async def accepted() -> bool:
        return (await read_status(http, token)).status_code == 200

    await wait_until(accepted, what="the rotated key to be fetched")
    assert issuer.jwks_requests > fetches
    assert (await read_status(http, issuer.token(old, orchy_role="viewer"))).status_code == 200


async def test_tokens_with_made_up_key_ids_do_not_flood_the_issuer(
    http: httpx.AsyncClient, issuer: Issuer
) -> None:
    fetches = issuer.jwks_requests
    started = time.monotonic()
    for _ in range(30):
        made_up = issuer.token(uuid.uuid4().hex, signer=first_kid(issuer), orchy_role="admin")
        assert (await read_status(http, made_up)).status_code == 401
    elapsed = time.monotonic() - started
    most = 2 + elapsed / REFRESH_MIN_SECONDS
    assert issuer.jwks_requests - fetches <= most, (issuer.jwks_requests - fetches, elapsed)


async def test_the_jwks_fetch_does_not_block_other_requests(
    settings: Settings, redis_client: Any
) -> None:
    """The issuer holds its JWKS answer: meanwhile the server answers other requests; once it
    answers, the waiting request is taken. The keys are found through the discovery document."""
    with serving_issuer() as slow, serving(oidc_settings(settings, slow)) as server:
        kid = slow.new_key()
        slow.release.clear()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            waiting = asyncio.create_task(read_status(http, slow.token(kid, orchy_role="viewer")))

            async def held() -> bool:
                return slow.held == 1

            await wait_until(held, what="the server to ask for the keys")
            for _ in range(3):
                assert (await http.get("/health")).status_code == 200
            assert not waiting.done()
            slow.release.set()
            assert (await waiting).status_code == 200
        assert slow.discovery_requests == 1


async def test_an_issuer_that_cannot_be_reached_is_a_503_not_a_crash(
    settings: Settings, redis_client: Any
) -> None:
    with serving_issuer() as gone:
        kid = gone.new_key()
        token = gone.token(kid, orchy_role="admin")
        jwks_url = f"{gone.url}/keys"
    # The issuer's server is closed: nothing listens at its address any more.
    unreachable = oidc_settings(
        settings, gone, oidc_jwks_url=jwks_url, oidc_fetch_timeout_seconds=2.0
    )
    with serving(unreachable) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await read_status(http, token)
            assert response.status_code == 503
            assert "signing keys" in response.json()["error"]
            assert token not in response.text


def test_claims_give_the_principal_its_name_role_tenant_and_actions() -> None:
    names = ClaimNames(
        role="realm_access.role", tenant="https://orchy.example/tenant", actions="acts"
    )
    claims = {
        "sub": "svc-1",
        "realm_access": {"role": "worker"},
        "https://orchy.example/tenant": "acme",
        "acts": "resize, thumbnail",
    }
    assert principal_of_claims(claims, names) == Principal(
        name="svc-1", role=Role.WORKER, tenant="acme", actions=frozenset({"resize", "thumbnail"})
    )
    default = ClaimNames(role="orchy_role", tenant="orchy_tenant", actions="orchy_actions")
    plain = principal_of_claims({"client_id": "ci", "orchy_role": "client"}, default)
    assert plain == Principal(name="ci", role=Role.CLIENT)
    for bad in ({"orchy_tenant": "a/b"}, {"orchy_tenant": 7}, {"orchy_actions": [1]}):
        with pytest.raises(Forbidden):
            principal_of_claims({"sub": "x", "orchy_role": "client", **bad}, default)


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """A token with ``alg: none`` and no signature."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(header)}.{_b64(claims)}."


def hs256_with_public_key(issuer: Issuer, kid: str, claims: dict[str, Any]) -> str:
    """The key-confusion attack: HMAC "signed" with the issuer's public key as the secret."""
    public = issuer.keys[kid].public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


async def test_the_claims_read_are_those_the_settings_name(
    settings: Settings, issuer: Issuer, redis_client: Any
) -> None:
    """Role and action names from nested and namespaced claims (ORCHY_OIDC_*_CLAIM)."""
    custom = oidc_settings(
        settings,
        issuer,
        oidc_role_claim="realm_access.roles",
        oidc_actions_claim="https://orchy.example/actions",
    )
    with serving(custom) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            kid = first_kid(issuer)
            worker = issuer.token(
                kid,
                realm_access={"roles": ["offline_access", "worker"]},
                **{"https://orchy.example/actions": "resize thumbnail"},
            )
            poll = {"workerId": "w", "actions": ["resize"], "max": 1, "waitSeconds": 0}
            assert (
                await http.post("/tasks/poll", json=poll, headers=bearer(worker))
            ).status_code == 200
            poll["actions"] = ["transcode"]
            refused = await http.post("/tasks/poll", json=poll, headers=bearer(worker))
            assert refused.status_code == 403 and "transcode" in refused.json()["error"]
            plain = issuer.token(kid, orchy_role="admin")  # the default claim is not read now
            assert (await read_status(http, plain)).status_code == 403
