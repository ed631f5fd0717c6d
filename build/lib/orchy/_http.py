"""The client's wire, without I/O of its own: a request is described by a ``Call``, sent by
one of two transports (``SyncTransport`` over ``httpx.Client``, ``AsyncTransport`` over
``httpx.AsyncClient``) that share the decisions: what an answer means (``decode``), whether
a failure may be tried again and after how long (``Retrying``)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from orchy.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OrchyError,
    TLSError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from orchy.settings import ClientSettings

T = TypeVar("T")

UNAVAILABLE = 503
ERRORS: dict[int, type[OrchyError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: Invalid,
    UNAVAILABLE: Unavailable,
}
# Failures where the server may never have seen the request, or could not reach Redis.
RETRYABLE_ERRORS = (httpx.TransportError,)


def _identity(body: Any) -> Any:
    return body


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: ``parse`` turns the answer's JSON into what the caller gets.
    ``idempotent``: sending it twice does what sending it once does, so a 503 or a
    connection error may be followed by another try. ``wait_seconds``: how long the server
    may hold the request on purpose (added to the read timeout)."""

    method: str
    path: str
    parse: Callable[[Any], T] = field(default=_identity)
    json: Any = None
    params: dict[str, Any] | None = None
    idempotent: bool = False
    wait_seconds: float = 0.0


def decode(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer of a 2xx; else the typed error carrying the server's message."""
    if response.is_success:
        return call.parse(response.json() if response.content else None)
    raise error_of(response)


def error_of(response: httpx.Response) -> OrchyError:
    """The typed exception of a non-2xx answer, with the server's ``error`` message."""
    try:
        body = response.json()
        message = str(body.get("error", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        message = response.text or response.reason_phrase
    kind = ERRORS.get(response.status_code, OrchyError)
    return kind(message, response.status_code)


@dataclass
class Retrying:
    """The back-off of one call: whether a failure is tried again, and after how long."""

    settings: ClientSettings
    call: Call[Any]
    tries: int = 0

    def delay(self, failure: BaseException | httpx.Response) -> float | None:
        """The pause before the next try, or None to give up on ``failure`` (an exception
        raised by the transport, or the answer received)."""
        if isinstance(failure, httpx.Response):
            if failure.status_code != UNAVAILABLE:
                return None
        elif not isinstance(failure, RETRYABLE_ERRORS) or tls_failure(failure) is not None:
            return None
        if not self.call.idempotent or self.tries >= self.settings.client_retries:
            return None
        pause: float = self.settings.client_backoff_seconds * 2**self.tries
        self.tries += 1
        return min(pause, self.settings.client_max_backoff_seconds)


CLIENT_CERT_HINT = "give one as ORCHY_CLIENT_CERT and ORCHY_CLIENT_KEY, or client_cert="
TLS_HINT = f"the server's CA goes in ORCHY_CA_BUNDLE or ca_bundle=; {CLIENT_CERT_HINT}"


def tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``error`` (a certificate the client does not trust, or one the
    server refused): trying again cannot help."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def unavailable(error: httpx.TransportError, settings: ClientSettings) -> OrchyError:
    """The error of a call that got no answer: ``TLSError`` when TLS refused the connection."""
    refused = tls_failure(error)
    if refused is not None:
        return TLSError(f"TLS with the server failed: {refused} ({TLS_HINT})")
    message = f"no answer from the server: {type(error).__name__}: {error}"
    if (
        isinstance(error, httpx.RemoteProtocolError)
        and settings.url.startswith("https:")
        and not settings.client_cert
    ):
        # A server that requires a client certificate ends the connection without a word.
        message += f" (a server that requires a client certificate does this: {CLIENT_CERT_HINT})"
    return Unavailable(message)


def http_options(settings: ClientSettings) -> dict[str, Any]:
    """The ``httpx`` client's options: its base URL and the TLS context of the settings."""
    context = settings.credentials.ssl_context()
    return {"base_url": settings.url, "verify": context if context is not None else True}


def _timeout(settings: ClientSettings, call: Call[Any]) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout_seconds + call.wait_seconds)


class SyncTransport:
    """Sends calls over an ``httpx.Client``, retrying as ``Retrying`` allows."""

    def __init__(self, settings: ClientSettings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.headers = settings.credentials.headers()
        self.http = http or httpx.Client(**http_options(settings))

    def send(self, call: Call[T]) -> T:
        """The parsed answer of ``call``, or its typed error."""
        retrying = Retrying(self.settings, call)
        while True:
            try:
                response = self.http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    headers=self.headers,
                    timeout=_timeout(self.settings, call),
                )
            except RETRYABLE_ERRORS as error:
                pause = retrying.delay(error)
                if pause is None:
                    raise unavailable(error, self.settings) from error
            else:
                pause = retrying.delay(response)
                if pause is None:
                    return decode(call, response)
            time.sleep(pause)

    def close(self) -> None:
        """Closes the connections."""
        self.http.close()


class AsyncTransport:
    """Sends calls over an ``httpx.AsyncClient``, retrying as ``Retrying`` allows."""

    def __init__(self, settings: ClientSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.headers = settings.credentials.headers()
        self.http = http or httpx.AsyncClient(**http_options(settings))

    async def send(self, call: Call[T]) -> T:
        """The parsed answer of ``call``, or its typed error."""
        retrying = Retrying(self.settings, call)
        while True:
            try:
                response = await self.http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    headers=self.headers,
                    timeout=_timeout(self.settings, call),
                )
            except RETRYABLE_ERRORS as error:
                pause = retrying.delay(error)
                if pause is None:
                    raise unavailable(error, self.settings) from error
            else:
                pause = retrying.delay(response)
                if pause is None:
                    return decode(call, response)
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        """Closes the connections."""
        await self.http.aclose()
