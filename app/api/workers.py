"""``GET /workers``: the workers seen polling within ORCHY_WORKER_SEEN_SECONDS (a poll, or a
result offering to take the next tasks, counts), newest poll first, each with the actions it
polled for and the tasks leased to it now. A worker's record expires when it stops polling;
one that holds leased tasks is listed still (a worker busy to its concurrency does not poll),
with ``lastPollAt`` null once its record has expired."""

from __future__ import annotations

import time

from fastapi import APIRouter

from app.api.deps import EngineDep
from app.api.models import WorkerList, WorkerView
from app.api.openapi_docs import responses
from app.api.security.permissions import Permission, needs
from app.api.views import MS_PER_SECOND, iso

router = APIRouter(tags=["tasks"])

WORKERS_EXAMPLE = {
    "workers": [
        {
            "workerId": "host-1-4242-9f2c1a",
            "actions": ["query-db", "sendEmail"],
            "lastPollAt": "2026-01-01T12:00:00.000Z",
            "tasksInHand": 3,
        }
    ]
}


@router.get(
    "/workers",
    response_model=WorkerList,
    responses=responses(WORKERS_EXAMPLE),
    openapi_extra=needs(Permission.READ),
)
async def list_workers(engine: EngineDep) -> WorkerList:
    """The workers seen polling lately, newest poll first: their actions, last poll and the
    tasks leased to them now."""
    now_ms = round(time.time() * MS_PER_SECOND)
    seen_ms = round(engine.settings.worker_seen_seconds * MS_PER_SECOND)
    workers = await engine.store.workload.workers(now_ms, seen_ms)
    return WorkerList(
        workers=[
            WorkerView(
                workerId=worker.worker_id,
                actions=list(worker.actions),
                lastPollAt=iso(worker.last_poll_ms),
                tasksInHand=worker.tasks_in_hand,
            )
            for worker in workers
        ]
    )
