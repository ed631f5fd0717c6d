"""Runs: start, read, list, events, lifecycle, history."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from app.api.deps import EngineDep, SettingsDep
from app.api.hangup import watch_disconnect
from app.api.models import (
    Accepted,
    ExecuteManyRequest,
    ExecuteManyResponse,
    ExecuteRequest,
    ExecuteResponse,
    FlowHistory,
    FlowList,
    FlowView,
    RerunRequest,
    RerunResponse,
    RetryRequest,
    RetryResponse,
)
from app.api.openapi_docs import request_example, responses
from app.api.run_search import build_query, decode_cursor, encode_cursor
from app.api.security.permissions import Permission, needs
from app.api.security.principal import principal_of
from app.api.views import flow_summary, flow_view, history_entry
from app.engine import repair
from app.engine.errors import Invalid
from app.engine.run_wait import wait_for_end
from app.engine.snapshot import RunSnapshot

router = APIRouter(prefix="/flow", tags=["flow"])
CREATED = 201
# Deeper pages than this are not served: filter by name or status instead.
MAX_OFFSET = 100_000

FLOW_ID = "0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b"
EXECUTE_EXAMPLE = {
    "name": "notificationWorkflow",
    "input": {"userId": 42, "email": {"first": {"subject": "Hi", "message": "Welcome"}}},
    "idempotencyKey": "signup-42",
}
SUMMARY_EXAMPLE = {
    "id": FLOW_ID,
    "name": "notificationWorkflow",
    "version": 1,
    "status": "COMPLETED",
    "createdAt": "2026-01-05T10:00:00.000Z",
    "updatedAt": "2026-01-05T10:00:01.250Z",
}
DATA_EXAMPLE = {
    "input": {"userId": 42},
    "1": {"output": {"email": "user42@example.com"}},
    "2": {"output": {"value": "FEMALE"}},
    "flow": {"id": FLOW_ID, "name": "notificationWorkflow", "version": 1},
}
FLOW_EXAMPLE = {
    **SUMMARY_EXAMPLE,
    "reason": "",
    "input": {"userId": 42},
    "data": DATA_EXAMPLE,
    # Without an output template, a COMPLETED run's output is its data document.
    "output": DATA_EXAMPLE,
    "actions": {
        "1": {
            "status": "COMPLETED",
            "attempts": 1,
            "output": {"email": "user42@example.com"},
            "executions": 1,
        },
        "2": {
            "status": "COMPLETED",
            "attempts": 1,
            "output": {"value": "FEMALE"},
            "executions": 1,
        },
    },
    "finishedAt": "2026-01-05T10:00:01.250Z",
}
OK = {"status": "ok"}
HISTORY_EXAMPLE = {
    "flowId": FLOW_ID,
    "history": [
        {
            "at": "2026-01-05T10:00:00.000Z",
            "event": "RUN_STARTED",
            "name": "notificationWorkflow",
            "version": 1,
            "by": "anonymous",
        },
        {
            "at": "2026-01-05T10:00:00.000Z",
            "event": "QUEUED",
            "action": 1,
            "seq": 1,
            "name": "query-db",
        },
    ],
}


@router.post(
    "/execute",
    status_code=CREATED,
    response_model=ExecuteResponse,
    responses=responses({"flowId": FLOW_ID, "created": True}, 404, 413, 422, status=CREATED),
    openapi_extra=needs(Permission.START, request_example(EXECUTE_EXAMPLE)),
)
async def execute(
    request: ExecuteRequest, engine: EngineDep, http_request: Request
) -> ExecuteResponse:
    """Starts a run of the workflow's latest version (or ``version``) with ``input`` as
    ``$.input``. With ``idempotencyKey``, a second start with the same key and workflow
    starts nothing and answers the first run's id with ``created: false``. 404 when the
    workflow (or version) does not exist."""
    flow_id, created = await engine.start(
        request.name,
        request.input,
        request.version,
        request.idempotencyKey,
        by=principal_of(http_request.scope).name,
    )
    return ExecuteResponse(flowId=flow_id, created=created)


@router.post(
    "/execute/many",
    status_code=CREATED,
    response_model=ExecuteManyResponse,
    responses=responses({"flowIds": [FLOW_ID]}, 404, 413, 422, status=CREATED),
    openapi_extra=needs(
        Permission.START,
        request_example(
            {"name": "notificationWorkflow", "inputs": [{"userId": 42}, {"userId": 7}]}
        ),
    ),
)
async def execute_many(
    request: ExecuteManyRequest, engine: EngineDep, settings: SettingsDep, http_request: Request
) -> ExecuteManyResponse:
    """Starts one run per input in one request (at most ``ORCHY_MAX_STARTS_PER_REQUEST``)."""
    if len(request.inputs) > settings.max_starts_per_request:
        raise Invalid(f"inputs: at most {settings.max_starts_per_request} runs per request")
    started = await engine.start_many(
        request.name, request.inputs, request.version, by=principal_of(http_request.scope).name
    )
    return ExecuteManyResponse(flowIds=[flow_id for flow_id, _ in started])


@router.get(
    "",
    response_model=FlowList,
    responses=responses(
        {"runs": [SUMMARY_EXAMPLE], "offset": 0, "limit": 50, "nextCursor": "MTc2NzYwNzIw"}, 422
    ),
    openapi_extra=needs(Permission.READ),
)
async def list_flows(
    engine: EngineDep,
    settings: SettingsDep,
    response: Response,
    name: str | None = Query(default=None, min_length=1),
    version: int | None = Query(default=None, ge=1),
    status: list[str] | None = Query(default=None),
    started_after: str | None = Query(default=None, alias="startedAfter"),
    started_before: str | None = Query(default=None, alias="startedBefore"),
    ended_after: str | None = Query(default=None, alias="endedAfter"),
    ended_before: str | None = Query(default=None, alias="endedBefore"),
    where: list[str] | None = Query(default=None),
    cursor: str | None = None,
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
    limit: int = Query(default=50, ge=1, le=500),
) -> FlowList:
    """Runs, newest first, filtered by workflow ``name`` (and ``version``), ``status`` (one
    or several), start and end time (``startedAfter``, ``startedBefore``, ``endedAfter``,
    ``endedBefore``: ISO 8601 or ms) and ``where=<path>=<value>`` for the paths a definition
    declares ``searchable``. Follow ``nextCursor`` (as ``cursor``) for the next page; it is
    null at the end. A page examines at most ``ORCHY_LIST_SCAN_MAX`` runs: with filters
    that match few of them it may hold fewer than ``limit`` runs and still a cursor.
    ``offset`` skips matches (kept for older clients; a cursor is cheaper)."""
    began = time.perf_counter()
    query = build_query(
        name=name,
        version=version,
        status=status,
        started_after=started_after,
        started_before=started_before,
        ended_after=ended_after,
        ended_before=ended_before,
        where=where,
        max_value_bytes=settings.search_max_value_bytes,
    )
    page = await engine.store.search.find(
        query, limit, decode_cursor(cursor), skip=offset, scan_max=settings.list_scan_max + offset
    )
    runs = [flow_summary(RunSnapshot(fields["id"], fields)) for fields in page.runs]
    elapsed_ms = (time.perf_counter() - began) * 1000
    response.headers["Server-Timing"] = f"search;dur={elapsed_ms:.2f}"
    return FlowList(runs=runs, offset=offset, limit=limit, nextCursor=encode_cursor(page.next))


@router.get(
    "/{flow_id}",
    response_model=FlowView,
    responses=responses(FLOW_EXAMPLE, 404, 422),
    openapi_extra=needs(Permission.READ),
)
async def get_flow(
    flow_id: str,
    engine: EngineDep,
    http_request: Request,
    wait_seconds: float = Query(default=0.0, ge=0, allow_inf_nan=False, alias="waitSeconds"),
) -> FlowView:
    """The run: its status, its data document (``input``, each action's output by id,
    ``flow``), each action's status, attempts, output and error (those of its latest
    execution) and how many executions it has had, and its ``output`` once COMPLETED.
    404 when no such run exists (or it has expired).

    With ``waitSeconds``, waits for the run to end: answers as soon as it is COMPLETED,
    FAILED or TERMINATED, or when ``waitSeconds`` (at most ``ORCHY_MAX_RUN_WAIT_SECONDS``)
    are over, with the run as it is then (its ``status`` still RUNNING or PAUSED)."""
    if wait_seconds > 0:
        gone = asyncio.Event()
        # A wait nobody will read ends with its client's hang-up.
        watcher = asyncio.create_task(watch_disconnect(http_request.receive, gone))
        try:
            snapshot = await wait_for_end(engine, flow_id, wait_seconds, gone)
        finally:
            watcher.cancel()
    else:
        snapshot = await engine.snapshot(flow_id)
    workflow = await engine.catalog.workflow(snapshot.name, snapshot.version)
    return flow_view(snapshot, workflow, engine.settings.view_max_children)


@router.get(
    "/{flow_id}/history",
    response_model=FlowHistory,
    responses=responses(HISTORY_EXAMPLE, 404, 422),
    openapi_extra=needs(Permission.READ),
)
async def get_history(flow_id: str, engine: EngineDep) -> FlowHistory:
    """Every transition of the run, in order, with its time and the action it concerns;
    what a caller asked for (start, pause, resume, terminate, an event) names it as ``by``."""
    await engine.snapshot(flow_id)
    entries = await engine.store.read_history(flow_id)
    return FlowHistory(flowId=flow_id, history=[history_entry(entry) for entry in entries])


@router.post(
    "/{flow_id}/events/{event}",
    response_model=Accepted,
    responses=responses({"status": "delivered"}, 404, 409, 413, 422),
    openapi_extra=needs(Permission.SEND_EVENTS, request_example({"opened": True})),
)
async def send_event(
    flow_id: str,
    event: str,
    engine: EngineDep,
    http_request: Request,
    data: Annotated[Any, Body()] = None,
) -> Accepted:
    """Delivers an event, its body (any JSON; none is ``{}``) becoming the output of the
    wait it ends: ``delivered`` to the run's oldest wait for it, ``buffered`` until a wait
    asks, or ``held`` when a wait of a paused run takes it (it goes on once the run is
    resumed). 409 when the run has ended."""
    by = principal_of(http_request.scope).name
    answer = await engine.send_event(flow_id, event, {} if data is None else data, by=by)
    if answer == "held":
        return Accepted(status="held")
    return Accepted(status="delivered" if answer == "delivered" else "buffered")


@router.post(
    "/{flow_id}/pause",
    response_model=Accepted,
    responses=responses(OK, 404, 409, 422),
    openapi_extra=needs(Permission.LIFECYCLE),
)
async def pause(flow_id: str, engine: EngineDep, http_request: Request) -> Accepted:
    """Pauses a RUNNING run: results and timers that arrive are held (results answered
    ``held``) and nothing new is scheduled until resume; tasks already queued are still
    delivered. 409 unless the run is RUNNING."""
    await engine.pause(flow_id, by=principal_of(http_request.scope).name)
    return Accepted(status="ok")


@router.post(
    "/{flow_id}/resume",
    response_model=Accepted,
    responses=responses(OK, 404, 409, 422),
    openapi_extra=needs(Permission.LIFECYCLE),
)
async def resume(flow_id: str, engine: EngineDep, http_request: Request) -> Accepted:
    """Resumes a PAUSED run, applying what was held meanwhile. 409 unless it is PAUSED."""
    await engine.resume(flow_id, by=principal_of(http_request.scope).name)
    return Accepted(status="ok")


@router.post(
    "/{flow_id}/terminate",
    response_model=Accepted,
    responses=responses(OK, 404, 409, 422),
    openapi_extra=needs(Permission.LIFECYCLE),
)
async def terminate(flow_id: str, engine: EngineDep, http_request: Request) -> Accepted:
    """Ends the run as TERMINATED: its queued tasks are never delivered, its timers do
    nothing, results for it get 409, open actions are marked FAILED. 409 when the run has
    already ended."""
    await engine.terminate(flow_id, by=principal_of(http_request.scope).name)
    return Accepted(status="ok")


@router.post(
    "/{flow_id}/retry",
    response_model=RetryResponse,
    responses=responses({"status": "ok", "actions": [3]}, 404, 409, 422),
    openapi_extra=needs(Permission.LIFECYCLE, request_example({"input": {"userId": 42}})),
)
async def retry(
    flow_id: str,
    engine: EngineDep,
    http_request: Request,
    request: Annotated[RetryRequest | None, Body()] = None,
) -> RetryResponse:
    """Lets a FAILED or TERMINATED run go on from the actions that failed (or were open
    when it was terminated), each at a fresh first attempt; everything that completed is
    kept. ``input`` replaces the input of the one user task started again, ``inputs`` those
    of several, by action id. Answers the ids of the actions started again. 409 when the
    run is RUNNING, PAUSED or COMPLETED, is a sub-workflow's child (retry its parent), or
    has nothing to retry."""
    body = request or RetryRequest()
    retried = await repair.retry(
        engine, flow_id, principal_of(http_request.scope).name, body.input, body.inputs
    )
    return RetryResponse(actions=retried.actions)


@router.post(
    "/{flow_id}/rerun",
    status_code=CREATED,
    response_model=RerunResponse,
    responses=responses({"flowId": FLOW_ID}, 404, 413, 422, status=CREATED),
    openapi_extra=needs(Permission.START, request_example({"input": {"userId": 7}})),
)
async def rerun(
    flow_id: str,
    engine: EngineDep,
    http_request: Request,
    request: Annotated[RerunRequest | None, Body()] = None,
) -> RerunResponse:
    """Starts a new run of the same workflow version with the run's input (or ``input``),
    whatever the run's status; both runs' histories name the other."""
    body = request or RerunRequest()
    new_id = await repair.rerun(engine, flow_id, principal_of(http_request.scope).name, body.input)
    return RerunResponse(flowId=new_id)


__all__ = ["router"]
