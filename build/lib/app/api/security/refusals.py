"""The answers of a refused request: 401 (no valid token) and 403 (a token that may not do
this), both JSON ``{"error": "..."}``; a message never quotes the token."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.responses import JSONResponse

from app.engine.errors import EngineError

# RFC 6750: a 401 of a bearer-token API says which scheme it takes.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchy"'}


class Unauthorized(EngineError):
    """No token, or one that is not valid (unknown, expired, badly signed...)."""

    status_code = 401


class Forbidden(EngineError):
    """A valid token whose role, tenant or action names do not allow the request."""

    status_code = 403


class KeysUnavailable(EngineError):
    """The issuer's signing keys cannot be fetched, and none are known yet."""

    status_code = 503


def refusal(error: EngineError) -> JSONResponse:
    headers = CHALLENGE if isinstance(error, Unauthorized) else None
    return JSONResponse({"error": error.message}, status_code=error.status_code, headers=headers)


def names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))
