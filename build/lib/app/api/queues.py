"""Task queues as workers see them: how many tasks wait for each action, and when a worker
last polled for it. A queue that grows while its last poll gets old has no worker."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep
from app.api.models import QueueList, QueueView
from app.api.openapi_docs import responses
from app.api.security.permissions import Permission, needs
from app.api.views import iso

router = APIRouter(prefix="/tasks", tags=["tasks"])


QUEUES_EXAMPLE = {
    "queues": [
        {"action": "query-db", "depth": 0, "lastPollAt": "2026-01-01T12:00:00.000Z"},
        {"action": "sendEmail", "depth": 12, "lastPollAt": "2026-01-01T11:58:30.000Z"},
    ]
}


@router.get(
    "/queues",
    response_model=QueueList,
    responses=responses(QUEUES_EXAMPLE),
    openapi_extra=needs(Permission.READ),
)
async def list_queues(engine: EngineDep) -> QueueList:
    """Every known user action (named by a registered workflow, defined, or polled for): the
    tasks waiting in its queue and when a worker last polled for it (null: never)."""
    queues = await engine.store.queues()
    return QueueList(
        queues=[
            QueueView(action=queue.name, depth=queue.depth, lastPollAt=iso(queue.last_poll_ms))
            for queue in queues
        ]
    )
