"""Every execution of one action in a run, a page at a time."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import EngineDep, SettingsDep
from app.api.models import ExecutionList
from app.api.openapi_docs import responses
from app.api.security.permissions import Permission, needs
from app.api.views import execution_view
from app.engine.errors import Invalid
from app.engine.executions import action_executions

router = APIRouter(prefix="/flow", tags=["flow"])
DEFAULT_LIMIT = 50

EXAMPLE = {
    "executions": [
        {
            "seq": 2,
            "status": "COMPLETED",
            "attempts": 1,
            "input": {"order": "o-1"},
            "output": {"charged": 10},
            "error": None,
            "startedAt": "2026-01-05T10:00:00.120Z",
            "endedAt": "2026-01-05T10:00:00.480Z",
        },
        {
            "seq": 5,
            "status": "RUNNING",
            "attempts": 2,
            "input": {"order": "o-2"},
            "output": None,
            "error": "card declined",
            "startedAt": "2026-01-05T10:00:00.510Z",
            "endedAt": None,
        },
    ],
    # GET ...?limit=2 of an action that ran three times (the schema's example leaves nulls
    # out, so this one has a next page).
    "total": 3,
    "nextOffset": 2,
}


@router.get(
    "/{flow_id}/actions/{action_id}/executions",
    response_model=ExecutionList,
    responses=responses(EXAMPLE, 404, 422),
    openapi_extra=needs(Permission.READ),
)
async def list_executions(
    flow_id: str,
    action_id: int,
    engine: EngineDep,
    settings: SettingsDep,
    offset: int = Query(default=0, ge=0),
    limit: int | None = Query(
        default=None,
        ge=1,
        description=f"executions per page: {DEFAULT_LIMIT} when left out, at most "
        "ORCHY_EXECUTIONS_PAGE_MAX (500 unless set)",
    ),
) -> ExecutionList:
    """Each execution of the action in the run (each time it ran: a branch reached twice,
    a loop's passes), in the order they were created, with its own status, attempts,
    input, output, error and times; ``nextOffset`` is where the next page starts, null
    after the last. 404 when no such run exists, or its workflow has no such action."""
    most = settings.executions_page_max
    if limit is not None and limit > most:
        raise Invalid(
            f"query.limit: at most {most} executions per page (ORCHY_EXECUTIONS_PAGE_MAX)"
        )
    limit = min(DEFAULT_LIMIT, most) if limit is None else limit
    page = await action_executions(engine.store, engine.catalog, flow_id, action_id, offset, limit)
    return ExecutionList(
        executions=[execution_view(execution) for execution in page.executions],
        total=page.total,
        nextOffset=page.next_offset,
    )


__all__ = ["router"]
