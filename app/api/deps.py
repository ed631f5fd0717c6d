"""Request dependencies: the running engine and the settings it was made with.

Body size limits are not here: ``content_type.JSONBodyMiddleware`` applies them to every
route before a body is parsed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.engine.engine import Engine
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


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_of)]
