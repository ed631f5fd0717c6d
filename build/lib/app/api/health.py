"""Server and Redis health."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.models import Health
from app.api.security.permissions import Permission, needs

router = APIRouter(tags=["health"])
UNAVAILABLE = 503


@router.get(
    "/health",
    response_model=Health,
    responses={
        200: {"content": {"application/json": {"example": {"status": "ok", "redis": "ok"}}}},
        UNAVAILABLE: {
            "model": Health,
            "description": "Redis does not answer",
            "content": {
                "application/json": {
                    "example": {"status": "degraded", "redis": "error: Connection refused"}
                }
            },
        },
    },
    openapi_extra=needs(Permission.PUBLIC),
)
async def health(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    """200 when Redis answers a ping within ``ORCHY_HEALTH_TIMEOUT_SECONDS``, else 503 with
    the error met."""
    try:
        await asyncio.wait_for(engine.store.ping(), settings.health_timeout_seconds)
    except Exception as error:  # any failure to reach Redis is what this route reports
        degraded = Health(status="degraded", redis=f"error: {str(error) or type(error).__name__}")
        return JSONResponse(degraded.model_dump(), status_code=UNAVAILABLE)
    return JSONResponse(Health(status="ok", redis="ok").model_dump())
