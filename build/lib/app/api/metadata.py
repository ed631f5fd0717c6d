"""Workflow and user action definitions."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Query, Request

from app.api.deps import EngineDep, SettingsDep
from app.api.models import (
    ActionDefinition,
    ActionDefinitionOut,
    WorkflowRegistered,
    WorkflowSummary,
)
from app.api.openapi_docs import request_example, responses
from app.api.security.guard import require_actions
from app.api.security.permissions import Permission, needs
from app.api.security.principal import principal_of
from app.api.workflow_schema import NOTIFICATION_EXAMPLE, StoredWorkflow, WorkflowBody
from app.engine.catalog import action_to_json
from app.engine.errors import Invalid, NotFound
from app.engine.retry import ActionSettings

T = TypeVar("T")

router = APIRouter(prefix="/metadata", tags=["metadata"])

ACTION_EXAMPLE = {
    "name": "query-db",
    "retryCount": 3,
    "retryAfterSeconds": 1.0,
    "retryPolicy": "FIXED",
    "timeoutSeconds": 30.0,
    "pollTimeoutSeconds": None,
}


@router.post(
    "/workflow",
    response_model=WorkflowRegistered,
    responses=responses({"name": "notificationWorkflow", "version": 1, "created": True}, 422),
    openapi_extra=needs(Permission.DEFINE, request_example(NOTIFICATION_EXAMPLE)),
)
async def register_workflow(
    engine: EngineDep, definition: Annotated[WorkflowBody, Body()]
) -> WorkflowRegistered:
    """Stores a definition: a changed one becomes version N+1, an identical one (key order
    aside) changes nothing and answers ``created: false``. An invalid one is refused with 422
    and a message naming the action and the problem (a missing or mistyped field, an id in
    ``next`` or ``joinOn`` that does not exist, an unreachable action, a cycle no condition
    can leave, an unknown system action, a JSONPath that does not parse, a script that does
    not compile)."""
    registration = await engine.catalog.register_workflow(definition)
    return WorkflowRegistered(
        name=registration.name, version=registration.version, created=registration.created
    )


@router.get(
    "/workflow",
    response_model=list[WorkflowSummary],
    responses=responses([{"name": "notificationWorkflow", "latestVersion": 2}]),
    openapi_extra=needs(Permission.READ),
)
async def list_workflows(engine: EngineDep) -> list[WorkflowSummary]:
    """Every registered workflow's name and latest version."""
    names = await engine.catalog.workflow_names()
    return [
        WorkflowSummary(name=name, latestVersion=await engine.catalog.latest_version(name))
        for name in names
    ]


# Answered as stored, not through the model: a definition is served back exactly as posted.
@router.get(
    "/workflow/{name}",
    response_model=None,
    responses={
        **responses({**NOTIFICATION_EXAMPLE, "version": 1}, 404, 422),
        200: {
            "model": StoredWorkflow,
            "content": {"application/json": {"example": {**NOTIFICATION_EXAMPLE, "version": 1}}},
        },
    },
    openapi_extra=needs(Permission.READ),
)
async def get_workflow(
    name: str, engine: EngineDep, version: int | None = Query(default=None, ge=1)
) -> dict[str, Any]:
    """The definition as it was posted, with its ``version``: the latest unless ``version``
    is given. 404 when the workflow, or that version of it, does not exist."""
    workflow = await engine.catalog.workflow(name, version)
    if workflow is None:
        which = "" if version is None else f" version {version}"
        raise NotFound(f"workflow {name!r}{which} not found")
    return {**workflow.source, "version": workflow.version}


@router.post(
    "/action",
    response_model=ActionDefinitionOut,
    responses=responses(ACTION_EXAMPLE, 422),
    openapi_extra=needs(
        Permission.DEFINE_ACTIONS,
        request_example({"name": "query-db", "retryCount": 3, "timeoutSeconds": 30}),
    ),
)
async def put_action(
    definition: ActionDefinition, engine: EngineDep, settings: SettingsDep, request: Request
) -> dict[str, Any]:
    """Stores a user action's retry and timeout settings, replacing any stored before;
    fields left out take the server's defaults (``ORCHY_DEFAULT_*``). Answers the settings
    as stored. A worker token limited to some actions may define only those (else 403)."""
    require_actions(request.scope, [definition.name], "name")
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


@router.get(
    "/action",
    response_model=list[ActionDefinitionOut],
    responses=responses([ACTION_EXAMPLE]),
    openapi_extra=needs(Permission.READ_ACTIONS),
)
async def list_actions(engine: EngineDep, request: Request) -> list[dict[str, Any]]:
    """Every stored action definition, by name (actions never defined are not listed); for
    a worker token limited to some actions, those of them only."""
    allowed = principal_of(request.scope).actions
    return [
        action_to_json(action)
        for action in await engine.catalog.actions()
        if allowed is None or action.name in allowed
    ]


@router.get(
    "/action/{name}",
    response_model=ActionDefinitionOut,
    responses=responses(ACTION_EXAMPLE, 422),
    openapi_extra=needs(Permission.READ_ACTIONS),
)
async def get_action(name: str, engine: EngineDep, request: Request) -> dict[str, Any]:
    """The settings the server applies to user action ``name``. Never 404: an action with
    no stored definition answers 200 with the server's defaults (``ORCHY_DEFAULT_RETRY_COUNT``,
    ``ORCHY_DEFAULT_RETRY_AFTER_SECONDS``, ``ORCHY_DEFAULT_RETRY_POLICY``,
    ``ORCHY_DEFAULT_TIMEOUT_SECONDS``), which are what its tasks get. A worker token limited
    to some actions reads only those (else 403)."""
    require_actions(request.scope, [name], "name")
    return action_to_json(await engine.catalog.action(name))
