"""Request dependencies: the running engine and the settings it was made with.

Body size limits are not here: ``content_type.JSONBodyMiddleware`` applies them to every
route before a body is parsed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from app.engine.engine import Engine
from app.engine.errors import TooLarge
from app.settings import Settings


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
        raise TooLarge(f"{what} is {declared} bytes; the limit is {most} bytes")


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_of)]
