"""Runs: start, read, list, events, lifecycle, history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from app.api.deps import EngineDep, SettingsDep
from app.api.models import (
    Accepted,
    ErrorResponse,
    ExecuteManyRequest,
    ExecuteManyResponse,
    ExecuteRequest,
    ExecuteResponse,
    FlowHistory,
    FlowList,
    FlowView,
)
from app.api.views import flow_summary, flow_view, history_entry
from app.engine.errors import Invalid
from app.engine.snapshot import RunSnapshot
from app.engine.status import RunStatus

router = APIRouter(prefix="/flow", tags=["flow"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}
CREATED = 201
# Deeper pages than this are not served: filter by name or status instead.
MAX_OFFSET = 100_000


@router.post("/execute", status_code=CREATED, response_model=ExecuteResponse, responses=ERRORS)
async def execute(request: ExecuteRequest, engine: EngineDep) -> ExecuteResponse:
    """Starts a run of the workflow's latest version (or ``version``)."""
    flow_id, created = await engine.start(
        request.name, request.input, request.version, request.idempotencyKey
    )
    return ExecuteResponse(flowId=flow_id, created=created)


@router.post(
    "/execute/many", status_code=CREATED, response_model=ExecuteManyResponse, responses=ERRORS
)
async def execute_many(
    request: ExecuteManyRequest, engine: EngineDep, settings: SettingsDep
) -> ExecuteManyResponse:
    """Starts one run per input in one request (at most ``ORCHY_MAX_STARTS_PER_REQUEST``)."""
    if len(request.inputs) > settings.max_starts_per_request:
        raise Invalid(f"inputs: at most {settings.max_starts_per_request} runs per request")
    started = await engine.start_many(request.name, request.inputs, request.version)
    return ExecuteManyResponse(flowIds=[flow_id for flow_id, _ in started])


@router.get("", response_model=FlowList, responses=ERRORS)
async def list_flows(
    engine: EngineDep,
    settings: SettingsDep,
    name: str | None = Query(default=None, min_length=1),
    status: RunStatus | None = None,
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
    limit: int = Query(default=50, ge=1, le=500),
) -> FlowList:
    """Runs, newest first. With ``status``, the newest ``list_scan_max`` runs are searched."""
    window = offset + limit if status is None else settings.list_scan_max
    candidates = await engine.store.newest_runs(name, window)
    found = []
    gone = []
    for flow_id, _ in candidates:
        fields = await engine.store.read_run(flow_id)
        if not fields:
            gone.append(flow_id)
            continue
        snapshot = RunSnapshot(flow_id, fields)
        if status is None or snapshot.status is status:
            found.append(snapshot)
    if gone:
        await engine.store.forget_runs(name, gone)
    page = found[offset : offset + limit]
    return FlowList(runs=[flow_summary(run) for run in page], offset=offset, limit=limit)


@router.get("/{flow_id}", response_model=FlowView, responses=ERRORS)
async def get_flow(flow_id: str, engine: EngineDep) -> FlowView:
    snapshot = await engine.snapshot(flow_id)
    workflow = await engine.catalog.workflow(snapshot.name, snapshot.version)
    return flow_view(snapshot, workflow)


@router.get("/{flow_id}/history", response_model=FlowHistory, responses=ERRORS)
async def get_history(flow_id: str, engine: EngineDep) -> FlowHistory:
    await engine.snapshot(flow_id)
    entries = await engine.store.read_history(flow_id)
    return FlowHistory(flowId=flow_id, history=[history_entry(entry) for entry in entries])


@router.post(
    "/{flow_id}/events/{event}",
    response_model=Accepted,
    responses=ERRORS,
)
async def send_event(
    flow_id: str,
    event: str,
    engine: EngineDep,
    data: Annotated[Any, Body()] = None,
) -> Accepted:
    """Delivers an event: to the run's oldest wait for it, or kept until a wait asks
    (``buffered``). A wait of a paused run takes it and goes on once the run is resumed
    (``held``)."""
    answer = await engine.send_event(flow_id, event, {} if data is None else data)
    if answer == "held":
        return Accepted(status="held")
    return Accepted(status="delivered" if answer == "delivered" else "buffered")


@router.post("/{flow_id}/pause", response_model=Accepted, responses=ERRORS)
async def pause(flow_id: str, engine: EngineDep) -> Accepted:
    await engine.pause(flow_id)
    return Accepted(status="ok")


@router.post("/{flow_id}/resume", response_model=Accepted, responses=ERRORS)
async def resume(flow_id: str, engine: EngineDep) -> Accepted:
    await engine.resume(flow_id)
    return Accepted(status="ok")


@router.post("/{flow_id}/terminate", response_model=Accepted, responses=ERRORS)
async def terminate(flow_id: str, engine: EngineDep) -> Accepted:
    await engine.terminate(flow_id)
    return Accepted(status="ok")


__all__ = ["router"]
