"""An issuer's signing keys (its JWKS), fetched over HTTP without blocking the event loop,
kept ``cache_seconds``, and fetched again early when a token names a key id not among them
(the issuer rotated its keys), at most once every ``refresh_min_seconds`` so that tokens with
made-up key ids cannot make the server hammer the issuer.

The JWKS is at ``jwks_url``, or where the issuer's discovery document
(``<issuer>/.well-known/openid-configuration``) says (``jwks_uri``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from jwt import PyJWK, PyJWTError

from app.api.security.refusals import KeysUnavailable

log = logging.getLogger("orchy.auth")

DISCOVERY_PATH = "/.well-known/openid-configuration"
# Asymmetric algorithms only: an HMAC "key" from a JWKS would be a shared secret, and
# accepting HS* beside RS* is the classic confusion attack.
ACCEPTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class JwksError(Exception):
    """The keys could not be fetched or read; the message says where and why."""


@dataclass
class Jwks:
    issuer: str
    jwks_url: str
    cache_seconds: float
    refresh_min_seconds: float
    timeout_seconds: float
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str | None, PyJWK] = field(default_factory=dict)
    _fetched_at: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key of id ``kid`` (None: the only key, when the issuer has one); None when
        the issuer has no such key. KeysUnavailable when no keys could ever be fetched."""
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.cache_seconds
        unknown = kid not in self._keys and (
            self._fetched_at is None or now - self._fetched_at >= self.refresh_min_seconds
        )
        if stale or unknown:
            await self._refresh(self._fetched_at)
        return self._keys.get(kid)

    async def _refresh(self, seen: float | None) -> None:
        async with self._lock:
            if self._fetched_at != seen:
                return  # another request fetched them meanwhile
            try:
                self._keys = await self._fetch()
            except JwksError as error:
                if self._fetched_at is None:
                    log.warning("OIDC: %s", error)
                    raise KeysUnavailable(
                        f"cannot fetch the issuer's signing keys: {error}"
                    ) from None
                log.warning("OIDC: %s; keeping the keys fetched before", error)
            self._fetched_at = self.clock()

    async def _fetch(self) -> dict[str | None, PyJWK]:
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
            url = self.jwks_url or await self._discover(http)
            document = await _get_json(http, url)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise JwksError(f"{url}: no 'keys' list")
        usable: dict[str | None, PyJWK] = {}
        for item in keys:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            try:
                key = PyJWK(item)
            except PyJWTError:
                continue  # a key of a type or curve this server cannot use
            if key.algorithm_name in ACCEPTED_ALGORITHMS:
                usable[key.key_id] = key
        if len(usable) == 1:
            [only] = usable.values()
            usable[None] = only  # a token without a key id may use the only key
        log.info("OIDC: %d signing keys from %s", len({id(key) for key in usable.values()}), url)
        return usable

    async def _discover(self, http: httpx.AsyncClient) -> str:
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = await _get_json(http, url)
        if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
            raise JwksError(f"{url}: no jwks_uri")
        if document.get("issuer") != self.issuer:
            raise JwksError(f"{url}: issuer {document.get('issuer')!r} is not {self.issuer!r}")
        self.jwks_url = document["jwks_uri"]
        return self.jwks_url


async def _get_json(http: httpx.AsyncClient, url: str) -> Any:
    try:
        response = await http.get(url)
    except httpx.HTTPError as error:
        raise JwksError(f"{url}: {error or type(error).__name__}") from None
    if response.status_code != httpx.codes.OK:
        raise JwksError(f"{url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise JwksError(f"{url}: not JSON") from None
