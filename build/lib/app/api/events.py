"""Correlated events: ``POST /events/{event}`` reaches the runs waiting for that event and
key, with no run id (app/engine/correlation.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import EngineDep, SettingsDep
from app.api.models import DeliveredTo, PublishRequest, PublishResponse
from app.api.openapi_docs import request_example, responses
from app.api.security.permissions import Permission, needs
from app.api.security.principal import principal_of
from app.engine.errors import Invalid
from app.engine.planner import dumps

router = APIRouter(prefix="/events", tags=["events"])

FLOW_ID = "0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b"


@router.post(
    "/{event}",
    response_model=PublishResponse,
    responses=responses(
        {"delivered": [{"flowId": FLOW_ID, "actionId": 4}], "kept": False}, 413, 422
    ),
    openapi_extra=needs(
        Permission.SEND_EVENTS,
        request_example({"key": "o-1", "data": {"paid": True}, "ttlSeconds": 30}),
    ),
)
async def publish_event(
    event: str,
    request: PublishRequest,
    engine: EngineDep,
    settings: SettingsDep,
    http_request: Request,
) -> PublishResponse:
    """Delivers an event to every run whose wait for ``event`` names ``key`` as its
    ``correlationKey`` (each run once; with ``firstOnly``, only the oldest wait's run), and
    lists them. When none waits, the event is kept for ``ttlSeconds`` and taken by the runs
    that reach such a wait meanwhile (each once; with ``firstOnly``, the first only)."""
    ttl = request.ttlSeconds
    most = settings.event_ttl_max_seconds
    if ttl is not None and ttl > most:
        raise Invalid(f"ttlSeconds: at most {most:g} (ORCHY_EVENT_TTL_MAX_SECONDS), not {ttl:g}")
    data = {} if request.data is None else request.data
    published = await engine.correlation.publish(
        event,
        request.key,
        dumps(data),
        ttl,
        request.firstOnly,
        by=principal_of(http_request.scope).name,
    )
    return PublishResponse(
        delivered=[
            DeliveredTo(flowId=flow_id, actionId=action_id)
            for flow_id, action_id in published.delivered
        ],
        kept=published.kept,
    )


__all__ = ["router"]
