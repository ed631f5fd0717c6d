"""switch: branch on the string form of a value read from the run's data document."""

from __future__ import annotations

from app.actions.base import Done, Fail, Outcome, SystemAction
from app.definition import DEFAULT_BRANCH, ActionDef, DefinitionError
from app.engine.params import REFERENCE, PathError, compile_path, references, resolve, stringify
from app.jsontypes import JSONObject


class SwitchAction(SystemAction):
    name = "switch"

    def validate(self, action: ActionDef) -> None:
        if not isinstance(action.expression, str) or not action.expression.strip():
            raise DefinitionError(f"{action.label}: switch needs an expression")
        for ref in references(action.expression):
            try:
                compile_path(ref)
            except PathError as error:
                raise DefinitionError(f"{action.label}: expression: {error}") from None

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        expression = action.expression or ""
        value = resolve(expression, document).value if REFERENCE.search(expression) else expression
        key = stringify(value)
        received = {"expression": value}
        if key in action.next:
            return Done(output={"value": value}, branch=key, input=received)
        if DEFAULT_BRANCH in action.next:
            return Done(output={"value": value}, branch=DEFAULT_BRANCH, input=received)
        return Fail(
            f"switch {action.label}: no branch for value {key!r} and no default", input=received
        )
