"""Task queues as workers see them: per action, how many tasks wait, are leased and wait for
a retry's back-off, how long the oldest one has waited, and the workers polling for it. A
queue with tasks and no worker is flagged ``noWorker``."""

from __future__ import annotations

import time

from fastapi import APIRouter

from app.api.deps import EngineDep
from app.api.models import QueueList, QueueView
from app.api.openapi_docs import responses
from app.api.security.permissions import Permission, needs
from app.api.views import MS_PER_SECOND, iso

router = APIRouter(prefix="/tasks", tags=["tasks"])

# (The OpenAPI document leaves out null values, so the example shows none.)

QUEUES_EXAMPLE = {
    "queues": [
        {
            "action": "query-db",
            "depth": 4,
            "lastPollAt": "2026-01-01T12:00:00.000Z",
            "leased": 3,
            "retrying": 1,
            "oldestQueuedAt": "2026-01-01T11:59:59.250Z",
            "oldestQueuedAgeSeconds": 0.75,
            "workers": 2,
            "noWorker": False,
        },
        {
            "action": "sendEmail",
            "depth": 12,
            "lastPollAt": "2026-01-01T11:58:30.000Z",
            "leased": 0,
            "retrying": 0,
            "oldestQueuedAt": "2026-01-01T11:59:00.000Z",
            "oldestQueuedAgeSeconds": 60.0,
            "workers": 0,
            "noWorker": True,
        },
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
    tasks waiting in its queue, leased and waiting for a retry; when the oldest waiting one
    was queued; when a worker last polled for it (null: never) and how many workers were
    seen polling for it within ORCHY_WORKER_SEEN_SECONDS."""
    now_ms = round(time.time() * MS_PER_SECOND)
    seen_ms = round(engine.settings.worker_seen_seconds * MS_PER_SECOND)
    queues = await engine.store.workload.queues(now_ms, seen_ms)
    return QueueList(
        queues=[
            QueueView(
                action=queue.name,
                depth=queue.depth,
                lastPollAt=iso(queue.last_poll_ms),
                leased=queue.leased,
                retrying=queue.retrying,
                oldestQueuedAt=iso(queue.oldest_queued_ms),
                oldestQueuedAgeSeconds=None
                if queue.oldest_queued_ms is None
                else max(now_ms - queue.oldest_queued_ms, 0) / MS_PER_SECOND,
                workers=queue.workers,
                noWorker=queue.depth > 0 and queue.workers == 0,
            )
            for queue in queues
        ]
    )
