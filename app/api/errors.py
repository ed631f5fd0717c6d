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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(UNPROCESSABLE, describe_validation(error))

    @app.exception_handler(DefinitionError)
    async def on_definition(_: Request, error: DefinitionError) -> JSONResponse:
        return error_response(UNPROCESSABLE, str(error))

    @app.exception_handler(EngineError)
    async def on_engine(_: Request, error: EngineError) -> JSONResponse:
        return error_response(error.status_code, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers an unreadable body (not UTF-8) with 400; bad input is 422 here.
        status = UNPROCESSABLE if error.status_code == BAD_REQUEST else error.status_code
        return error_response(status, str(error.detail))

    @app.exception_handler(orjson.JSONEncodeError)
    async def on_unstorable(_: Request, error: orjson.JSONEncodeError) -> JSONResponse:
        return error_response(UNPROCESSABLE, f"{UNSTORABLE_JSON}: {error}")

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def on_redis_down(_: Request, error: Exception) -> JSONResponse:
        return error_response(UNAVAILABLE, f"redis unavailable: {error}")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(INTERNAL, f"internal error: {type(error).__name__}")
