"""if: take the ``true`` or the ``false`` branch, as a condition on the run's data holds."""

from __future__ import annotations

from app.actions.base import Done, Fail, Outcome, SystemAction
from app.actions.switch import check_condition
from app.definition import DEFAULT_BRANCH, ERROR_BRANCH, ActionDef, DefinitionError
from app.engine.conditions import ConditionError, ConditionSyntaxError, compile_condition
from app.jsontypes import JSONObject

TRUE_BRANCH = "true"
FALSE_BRANCH = "false"
_BRANCHES = (TRUE_BRANCH, FALSE_BRANCH, DEFAULT_BRANCH, ERROR_BRANCH)


class IfAction(SystemAction):
    name = "if"

    def validate(self, action: ActionDef) -> None:
        if not isinstance(action.condition, str):
            raise DefinitionError(f"{action.label}: if needs a condition")
        check_condition(f"{action.label}: condition", action.condition)
        for branch in action.next:
            if branch not in _BRANCHES:
                raise DefinitionError(
                    f"{action.label}: next.{branch} is not a branch of if ({', '.join(_BRANCHES)})"
                )

    def branches(self, action: ActionDef) -> list[list[int]]:
        return [action.branch(TRUE_BRANCH), action.branch(FALSE_BRANCH)]

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        """A branch missing from ``next`` falls back to ``default``, or ends there."""
        condition = action.condition or ""
        received = {"condition": condition}
        try:
            holds = compile_condition(condition).test(document)
        except (ConditionError, ConditionSyntaxError) as error:
            return Fail(f"if {action.label}: condition {condition!r}: {error}", input=received)
        branch = TRUE_BRANCH if holds else FALSE_BRANCH
        return Done(output={"value": holds}, branch=branch, input=received)
