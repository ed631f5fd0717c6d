"""Request dependencies: the engine of the caller's tenant and the server's settings.

Body size limits are not here: ``content_type.JSONBodyMiddleware`` applies them to every
route before a body is parsed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.security.principal import principal_of
from app.engine.engine import Engine
from app.engine.tenants import Tenants
from app.settings import Settings


# Dependencies are async on purpose: FastAPI runs a plain ``def`` dependency on a thread
# pool, a thread hop per request for reading an attribute.
async def get_engine(request: Request) -> Engine:
    """The engine of the request's principal's tenant (no tenant: ORCHY_NAMESPACE's),
    started on the tenant's first request."""
    tenants: Tenants = request.app.state.tenants
    tenant = principal_of(request.scope).tenant
    return tenants.running(tenant) or await tenants.engine_for(tenant)


async def get_settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def engine_and_settings(request: Request) -> tuple[Engine, Settings]:
    """For the worker routes, which skip dependency injection."""
    state = request.app.state
    return await get_engine(request), state.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_of)]
