"""Request dependencies: the running engine, body size limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from app.engine.engine import Engine
from app.engine.errors import EngineError
from app.settings import Settings

PAYLOAD_TOO_LARGE = 413


class PayloadTooLarge(EngineError):
    status_code = PAYLOAD_TOO_LARGE


# Dependencies are async on purpose: FastAPI runs a plain ``def`` dependency on a thread
# pool, a thread hop per request for reading an attribute.
async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def engine_and_settings(request: Request) -> tuple[Engine, Settings]:
    """For the worker routes, which skip dependency injection."""
    state = request.app.state
    return state.engine, state.settings


# A body's limit in bytes, and what the error calls the body.
BodyLimit = Callable[[Settings], tuple[int, str]]


def output_limit(settings: Settings) -> tuple[int, str]:
    return settings.max_output_bytes, "the result"


def batch_limit(settings: Settings) -> tuple[int, str]:
    return settings.max_batch_bytes, "the batch of results"


def poll_limit(settings: Settings) -> tuple[int, str]:
    return settings.max_batch_bytes, "the poll"


def refuse_declared_size(declared: str | None, most: int, what: str) -> None:
    """413 before reading a body whose declared length (``Content-Length``) passes ``most``."""
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise PayloadTooLarge(f"{what} is {declared} bytes; the limit is {most} bytes")


async def limit_body(request: Request, most: int, what: str) -> None:
    refuse_declared_size(request.headers.get("content-length"), most, what)
    size = len(await request.body())
    if size > most:
        raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {most} bytes")


async def limit_event(
    request: Request, settings: Annotated[Settings, Depends(get_settings_of)]
) -> None:
    await limit_body(request, settings.max_event_bytes, "the event")


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_of)]
