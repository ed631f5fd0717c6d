"""while: runs its ``body`` branch again and again while a condition holds, then takes
``default``. The body's last action leads back to the while, which counts the passes.

Its output is ``{"iteration": n, "exited": false}`` when it starts pass ``n`` of the body,
``{"iteration": <passes done>, "exited": true}`` when it leaves. On arrival it reads its own
previous output (``$.<id>.output``): a loop still running goes on counting, anything else
(first arrival, a loop left before: an inner loop met again in the next pass of an outer
one) starts again from pass 1. The condition sees ``{$.<id>.output.iteration}`` as the number
of passes done; with ``"check": "after"`` the first pass runs without asking (do-while).
"""

from __future__ import annotations

from app.actions.base import Done, Fail, Outcome, SystemAction
from app.actions.switch import check_condition
from app.definition import DEFAULT_BRANCH, ERROR_BRANCH, ActionDef, DefinitionError
from app.engine.conditions import ConditionError, ConditionSyntaxError, compile_condition
from app.jsontypes import JSON, JSONObject

BODY_BRANCH = "body"
CHECK_BEFORE = "before"
CHECK_AFTER = "after"
_CHECKS = (CHECK_BEFORE, CHECK_AFTER)
_BRANCHES = (BODY_BRANCH, DEFAULT_BRANCH, ERROR_BRANCH)


def passes_done(action: ActionDef, document: JSONObject) -> int:
    """How many passes of the body the loop has done, as its previous output says: 0 when
    there is none, or when it said the loop was left."""
    entry = document.get(str(action.id))
    previous = entry.get("output") if isinstance(entry, dict) else None
    if not isinstance(previous, dict) or previous.get("exited") is not False:
        return 0
    iteration = previous.get("iteration")
    if isinstance(iteration, int) and not isinstance(iteration, bool) and iteration > 0:
        return iteration
    return 0


class WhileAction(SystemAction):
    name = "while"

    def validate(self, action: ActionDef) -> None:
        if not isinstance(action.condition, str):
            raise DefinitionError(f"{action.label}: while needs a condition")
        check_condition(f"{action.label}: condition", action.condition)
        if action.check is not None and action.check not in _CHECKS:
            raise DefinitionError(
                f"{action.label}: check must be one of {', '.join(map(repr, _CHECKS))}, "
                f"not {action.check!r}"
            )
        for branch in action.next:
            if branch not in _BRANCHES:
                raise DefinitionError(
                    f"{action.label}: next.{branch} is not a branch of while "
                    f"({', '.join(_BRANCHES)})"
                )
        if not action.next.get(BODY_BRANCH):
            raise DefinitionError(
                f"{action.label}: while needs next.body, the ids of the actions of its body"
            )

    def branches(self, action: ActionDef) -> list[list[int]]:
        return [action.branch(BODY_BRANCH), action.branch(DEFAULT_BRANCH)]

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        condition = action.condition or ""
        done = passes_done(action, document)
        received: JSON = {"condition": condition, "iteration": done}
        if action.check == CHECK_AFTER and done == 0:
            holds = True  # a do-while's first pass
        else:
            # The condition reads {$.<id>.output.iteration} as the passes done so far.
            counted: JSONObject = {"output": {"iteration": done, "exited": False}}
            try:
                holds = compile_condition(condition).test({**document, str(action.id): counted})
            except (ConditionError, ConditionSyntaxError) as error:
                reason = f"while {action.label}: condition {condition!r}: {error}"
                return Fail(reason, input=received)
        if holds:
            return Done({"iteration": done + 1, "exited": False}, BODY_BRANCH, input=received)
        return Done({"iteration": done, "exited": True}, DEFAULT_BRANCH, input=received)
