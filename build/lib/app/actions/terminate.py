"""terminate: ends the run at once, COMPLETED or FAILED, with a reason (as Conductor's
TERMINATE task does). ``parameters``: ``status`` (``"COMPLETED"`` or ``"FAILED"``, written
as is), ``reason`` (text, may hold ``{$...}`` references) and, for COMPLETED only,
``output`` (any JSON, resolved like other parameters), which becomes the run's output."""

from __future__ import annotations

from app.actions.base import End, Outcome, SystemAction
from app.definition import ActionDef, DefinitionError
from app.engine.params import resolve, stringify
from app.jsontypes import JSONObject

STATUSES = ("COMPLETED", "FAILED")
PARAMETERS = ("status", "reason", "output")


class TerminateAction(SystemAction):
    name = "terminate"

    def validate(self, action: ActionDef) -> None:
        if action.next:
            raise DefinitionError(f"{action.label}: terminate ends the run, so it has no next")
        parameters = action.parameters
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise DefinitionError(
                f"{action.label}: terminate takes parameters status, reason and output, "
                f"not {', '.join(unknown)}"
            )
        status = parameters.get("status")
        if status not in STATUSES:
            raise DefinitionError(
                f"{action.label}: terminate's parameters.status must be 'COMPLETED' or "
                f"'FAILED', not {status!r}"
            )
        reason = parameters.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise DefinitionError(
                f"{action.label}: terminate's parameters.reason must be a string, not {reason!r}"
            )
        if "output" in parameters and status != "COMPLETED":
            raise DefinitionError(
                f"{action.label}: terminate's parameters.output is for status COMPLETED only"
            )

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        parameters = (
            resolve(action.parameters, document).value
            if action.references_data
            else (action.parameters)
        )
        assert isinstance(parameters, dict)  # an object resolves to an object
        status = str(action.parameters.get("status"))
        reason = parameters.get("reason")
        if "reason" not in parameters:
            reason = f"ended by {action.label}"
        return End(
            status=status,
            reason="" if reason is None else stringify(reason),
            output=parameters.get("output"),
            gives_output="output" in parameters,
            input=parameters,
        )
