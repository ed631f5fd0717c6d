"""The workflow definition format as pydantic models, for the OpenAPI schema and its clients.

The models themselves live in :mod:`orchy.definition_models`, shared with the SDK's builder,
so that a workflow built in Python is checked against the very models that document the
server's body. ``app/engine/validate.py`` stays the judge of a definition: it checks what a
schema cannot (links, reachability, cycles, paths, scripts) and its messages name the action
and the problem. Every definition it accepts passes these models (the tests hold both to
that, and hold :data:`SYSTEM_STEPS` to the system actions in ``app/actions``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import PlainValidator

from orchy.definition_models import (
    NOTIFICATION_EXAMPLE,
    SYSTEM_STEPS,
    Action,
    ActionBase,
    ActionId,
    Condition,
    DelayStep,
    ForEachBody,
    ForEachStep,
    ForEachSubWorkflowBody,
    IfStep,
    JavaScriptStep,
    JoinStep,
    Next,
    NonBlank,
    Seconds,
    StoredWorkflow,
    SubWorkflowStep,
    SwitchCase,
    SwitchStep,
    TerminateParameters,
    TerminateStep,
    UserAction,
    VarMutationModel,
    WaitStep,
    WhileStep,
    WorkflowDefinition,
)

__all__ = [
    "NOTIFICATION_EXAMPLE",
    "SYSTEM_STEPS",
    "Action",
    "ActionBase",
    "ActionId",
    "Condition",
    "DelayStep",
    "ForEachBody",
    "ForEachStep",
    "ForEachSubWorkflowBody",
    "IfStep",
    "JavaScriptStep",
    "JoinStep",
    "Next",
    "NonBlank",
    "Seconds",
    "StoredWorkflow",
    "SubWorkflowStep",
    "SwitchCase",
    "SwitchStep",
    "TerminateParameters",
    "TerminateStep",
    "UserAction",
    "VarMutationModel",
    "WaitStep",
    "WhileStep",
    "WorkflowBody",
    "WorkflowDefinition",
]


def _as_posted(value: Any) -> Any:
    return value


# The body of POST /metadata/workflow: documented as a WorkflowDefinition, handed over as
# the decoded JSON, so that validate.py judges it and words every error.
WorkflowBody = Annotated[Any, PlainValidator(_as_posted, json_schema_input_type=WorkflowDefinition)]
