"""subWorkflow: runs another workflow as a child run and waits for it to end.

``workflow`` names the workflow, ``version`` (optional, an integer >= 1) pins its version
(absent: the latest when the child starts), and ``parameters``, resolved like a user
action's, are the child's input. The child's output becomes this action's output; a child
that FAILS or is TERMINATED fails this action (its ``error`` branch applies).

The child lives in its own partition, so it is not started here: the execution waits, and
the engine hands the start, the end and a termination between the two runs through timers
(see app/engine/children.py).
"""

from __future__ import annotations

from app.actions.base import AwaitChild, Outcome, SystemAction
from app.definition import ActionDef, DefinitionError
from app.engine.params import resolve
from app.jsontypes import JSON, JSONObject


def is_version(value: JSON) -> bool:
    """A workflow version: an integer >= 1 (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def child_request(workflow: str, version: int | None, child_input: JSON) -> JSONObject:
    """What a sub-workflow execution records as its input: the child to start. The engine
    reads it back to start the child, whatever action owns the execution."""
    return {"workflow": workflow, "version": version, "input": child_input}


class SubWorkflowAction(SystemAction):
    name = "subWorkflow"

    def validate(self, action: ActionDef) -> None:
        workflow = action.workflow
        if not isinstance(workflow, str) or not workflow.strip():
            raise DefinitionError(
                f"{action.label}: subWorkflow needs workflow, the name of a workflow "
                f"(a non-blank string), not {workflow!r}"
            )
        version = action.workflow_version
        if version is not None and not is_version(version):
            raise DefinitionError(
                f"{action.label}: version must be an integer >= 1 (a version of workflow "
                f"{workflow!r}), not {version!r}"
            )

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        parameters = (
            resolve(action.parameters, document).value
            if action.references_data
            else action.parameters
        )
        workflow = str(action.workflow)
        version = action.workflow_version if is_version(action.workflow_version) else None
        assert version is None or isinstance(version, int)
        return AwaitChild(
            workflow=workflow,
            version=version,
            child_input=parameters,
            input=child_request(workflow, version, parameters),
        )
