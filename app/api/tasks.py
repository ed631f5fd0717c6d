"""Workers: poll, results, heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from app.api.deps import EngineDep, SettingsDep, limit_output
from app.api.models import (
    Accepted,
    CompleteRequest,
    ErrorResponse,
    FailRequest,
    PollRequest,
    PollResponse,
    TaskOut,
)
from app.engine.errors import Invalid

router = APIRouter(prefix="/tasks", tags=["tasks"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


@router.post("/poll", response_model=PollResponse, responses=ERRORS)
async def poll(
    request: PollRequest, http_request: Request, engine: EngineDep, settings: SettingsDep
) -> PollResponse:
    """Leases up to ``max`` tasks of ``actions``, waiting up to ``waitSeconds`` for one."""
    if request.max > settings.poll_max_tasks:
        raise Invalid(f"max: at most {settings.poll_max_tasks} tasks per poll")
    gone = asyncio.Event()
    watcher = asyncio.create_task(_watch_disconnect(http_request, gone))
    try:
        tasks = await engine.poll(
            request.workerId, request.actions, request.max, request.waitSeconds, gone
        )
    finally:
        watcher.cancel()
    return PollResponse(
        tasks=[
            TaskOut(
                taskId=task.task_id,
                flowId=task.flow_id,
                actionId=task.action_id,
                name=task.name,
                attempt=task.attempt,
                input=task.input,
            )
            for task in tasks
        ]
    )


async def _watch_disconnect(request: Request, gone: asyncio.Event) -> None:
    """Sets ``gone`` when the client hangs up (the body has been read, so the next message
    the server gets for this request is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


@router.post(
    "/{task_id}/complete",
    response_model=Accepted,
    responses=ERRORS,
    dependencies=[Depends(limit_output)],
)
async def complete(task_id: str, request: CompleteRequest, engine: EngineDep) -> Accepted:
    """Applies the attempt's output; 409 when the attempt is stale or already answered."""
    answer = await engine.complete_task(task_id, request.output)
    return Accepted(status="held" if answer == "held" else "ok")


@router.post(
    "/{task_id}/fail",
    response_model=Accepted,
    responses=ERRORS,
    dependencies=[Depends(limit_output)],
)
async def fail(task_id: str, request: FailRequest, engine: EngineDep) -> Accepted:
    """Reports a failed attempt: retried per the action's policy unless not retryable."""
    answer = await engine.fail_task(task_id, request.error, request.retryable)
    return Accepted(status="held" if answer == "held" else "ok")


@router.post("/{task_id}/heartbeat", response_model=Accepted, responses=ERRORS)
async def heartbeat(task_id: str, engine: EngineDep) -> Accepted:
    """Extends the attempt's lease by the action's ``timeoutSeconds``."""
    await engine.heartbeat(task_id)
    return Accepted(status="ok")
