"""delay: a durable timer; the engine keeps the ``Sleep`` in Redis so it survives restarts."""

from __future__ import annotations

import math

from app.actions.base import Outcome, Sleep, SystemAction
from app.definition import ActionDef, DefinitionError
from app.jsontypes import JSON, JSONObject, is_json_number


def is_number(value: JSON) -> bool:
    """A finite JSON number (``true`` is not a number, whatever Python thinks)."""
    return is_json_number(value) and math.isfinite(value)


class DelayAction(SystemAction):
    name = "delay"
    reads_document = False

    def validate(self, action: ActionDef) -> None:
        if action.delay_seconds is None:
            raise DefinitionError(f"{action.label}: delay needs delaySeconds")
        if not is_number(action.delay_seconds) or action.delay_seconds < 0:
            raise DefinitionError(
                f"{action.label}: delaySeconds must be a number >= 0, not {action.delay_seconds!r}"
            )

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        seconds = float(action.delay_seconds or 0)
        return Sleep(seconds=seconds, input={"delaySeconds": action.delay_seconds})
