"""Workflow and user action definitions."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Body, Query

from app.api.deps import EngineDep, SettingsDep
from app.api.models import (
    ActionDefinition,
    ActionDefinitionOut,
    ErrorResponse,
    WorkflowRegistered,
    WorkflowSummary,
)
from app.engine.catalog import action_to_json
from app.engine.errors import Invalid, NotFound
from app.engine.retry import ActionSettings

T = TypeVar("T")

router = APIRouter(prefix="/metadata", tags=["metadata"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}

WORKFLOW_EXAMPLE = {
    "name": "hello",
    "rootAction": 1,
    "actions": [{"id": 1, "type": "user", "name": "greet", "parameters": {"who": "{$.input.who}"}}],
}


@router.post("/workflow", response_model=WorkflowRegistered, responses=ERRORS)
async def register_workflow(
    engine: EngineDep,
    definition: dict[str, Any] = Body(openapi_examples={"hello": {"value": WORKFLOW_EXAMPLE}}),
) -> WorkflowRegistered:
    """Stores a definition: a changed one becomes version N+1, an identical one changes nothing."""
    registration = await engine.catalog.register_workflow(definition)
    return WorkflowRegistered(
        name=registration.name, version=registration.version, created=registration.created
    )


@router.get("/workflow", response_model=list[WorkflowSummary])
async def list_workflows(engine: EngineDep) -> list[WorkflowSummary]:
    names = await engine.catalog.workflow_names()
    return [
        WorkflowSummary(name=name, latestVersion=await engine.catalog.latest_version(name))
        for name in names
    ]


@router.get("/workflow/{name}", responses=ERRORS)
async def get_workflow(
    name: str, engine: EngineDep, version: int | None = Query(default=None, ge=1)
) -> dict[str, Any]:
    """The stored definition (the latest version unless ``version`` is given)."""
    workflow = await engine.catalog.workflow(name, version)
    if workflow is None:
        which = "" if version is None else f" version {version}"
        raise NotFound(f"workflow {name!r}{which} not found")
    return {**workflow.source, "version": workflow.version}


@router.post("/action", response_model=ActionDefinitionOut, responses=ERRORS)
async def put_action(
    definition: ActionDefinition, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    """Stores a user action's retry and timeout settings; unset fields take the defaults."""
    defaults = ActionSettings.defaults(definition.name, settings)
    action = ActionSettings(
        name=definition.name,
        retry_count=_or(definition.retryCount, defaults.retry_count),
        retry_after_seconds=_or(definition.retryAfterSeconds, defaults.retry_after_seconds),
        retry_policy=_or(definition.retryPolicy, defaults.retry_policy),
        timeout_seconds=_or(definition.timeoutSeconds, defaults.timeout_seconds),
        poll_timeout_seconds=_within_max(
            "pollTimeoutSeconds", definition.pollTimeoutSeconds, settings.max_duration_seconds
        ),
    )
    await engine.catalog.put_action(action)
    return action_to_json(action)


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _within_max(field: str, seconds: float | None, most: float) -> float | None:
    if seconds is not None and seconds > most:
        raise Invalid(f"{field}: at most {most:.0f} seconds (ORCHY_MAX_DURATION_SECONDS)")
    return seconds


@router.get("/action", response_model=list[ActionDefinitionOut])
async def list_actions(engine: EngineDep) -> list[dict[str, Any]]:
    return [action_to_json(action) for action in await engine.catalog.actions()]


@router.get("/action/{name}", response_model=ActionDefinitionOut, responses=ERRORS)
async def get_action(name: str, engine: EngineDep) -> dict[str, Any]:
    """The action's settings; an action never registered answers with the defaults."""
    return action_to_json(await engine.catalog.action(name))
