"""Orchy for Python: the SDK (workflows as code; see the README)."""

from orchy.builder import (
    Branch,
    ForEach,
    If,
    Join,
    Step,
    Switch,
    While,
    Workflow,
    WorkflowDefinitionError,
)

__all__ = [
    "Branch",
    "ForEach",
    "If",
    "Join",
    "Step",
    "Switch",
    "While",
    "Workflow",
    "WorkflowDefinitionError",
]
