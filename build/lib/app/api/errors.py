"""Every error leaves as JSON ``{"error": "..."}`` with its status code."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.definition import DefinitionError
from app.engine.errors import EngineError

log = logging.getLogger("orchy.api")

BAD_REQUEST = 400
UNPROCESSABLE = 422
UNSTORABLE_JSON = (
    "the JSON cannot be stored (integers must fit in 64 bits, nesting must stay under 255 levels)"
)
UNAVAILABLE = 503
INTERNAL = 500


def error_response(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def error_for(error: Exception) -> tuple[int, str]:
    """The status and message every route answers ``error`` with."""
    if isinstance(error, RequestValidationError):
        return UNPROCESSABLE, describe_validation(error)
    if isinstance(error, DefinitionError):
        return UNPROCESSABLE, str(error)
    if isinstance(error, EngineError):
        return error.status_code, error.message
    if isinstance(error, StarletteHTTPException):
        # FastAPI answers an unreadable body (not UTF-8) with 400; bad input is 422 here.
        status = UNPROCESSABLE if error.status_code == BAD_REQUEST else error.status_code
        return status, str(error.detail)
    if isinstance(error, orjson.JSONEncodeError):
        return UNPROCESSABLE, f"{UNSTORABLE_JSON}: {error}"
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        return UNAVAILABLE, f"redis unavailable: {error}"
    return INTERNAL, f"internal error: {type(error).__name__}"


HANDLED = (
    RequestValidationError,
    DefinitionError,
    EngineError,
    StarletteHTTPException,
    orjson.JSONEncodeError,
    RedisConnectionError,
    RedisTimeoutError,
    Exception,
)


def install_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, error: Exception) -> JSONResponse:
        status, message = error_for(error)
        if status == INTERNAL:
            log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(status, message)

    for kind in HANDLED:
        app.add_exception_handler(kind, answer)
