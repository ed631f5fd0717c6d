"""Server and Redis health."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import EngineDep, SettingsDep

router = APIRouter(tags=["health"])
UNAVAILABLE = 503


@router.get("/health", responses={503: {"description": "Redis does not answer"}})
async def health(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    try:
        await asyncio.wait_for(engine.store.ping(), settings.health_timeout_seconds)
    except Exception as error:  # any failure to reach Redis is what this route reports
        return JSONResponse(
            {"status": "degraded", "redis": f"error: {str(error) or type(error).__name__}"},
            status_code=UNAVAILABLE,
        )
    return JSONResponse({"status": "ok", "redis": "ok"})
