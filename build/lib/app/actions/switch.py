"""switch: branch on the string form of a value read from the run's data document, or on
the first of its ``cases`` whose condition holds."""

from __future__ import annotations

from app.actions.base import Done, Fail, Outcome, SystemAction
from app.definition import DEFAULT_BRANCH, ERROR_BRANCH, ActionDef, DefinitionError
from app.engine.conditions import (
    ConditionError,
    ConditionSyntaxError,
    compile_condition,
)
from app.engine.params import REFERENCE, PathError, compile_path, references, resolve, stringify
from app.jsontypes import JSON, JSONObject


def check_condition(where: str, text: str) -> None:
    """Compile ``text`` as registration does: a :class:`DefinitionError` naming ``where``
    and the position when it does not parse."""
    if not text.strip():
        raise DefinitionError(f"{where} must be a non-blank condition")
    try:
        compile_condition(text)
    except ConditionSyntaxError as error:
        raise DefinitionError(f"{where}: {error}") from None


class SwitchAction(SystemAction):
    name = "switch"

    def validate(self, action: ActionDef) -> None:
        if action.cases is not None:
            self._validate_cases(action)
            return
        if not isinstance(action.expression, str) or not action.expression.strip():
            raise DefinitionError(f"{action.label}: switch needs an expression or cases")
        for ref in references(action.expression):
            try:
                compile_path(ref)
            except PathError as error:
                raise DefinitionError(f"{action.label}: expression: {error}") from None

    def _validate_cases(self, action: ActionDef) -> None:
        cases = action.cases or ()
        if action.expression is not None:
            raise DefinitionError(f"{action.label}: a switch has an expression or cases, not both")
        if not cases:
            raise DefinitionError(f"{action.label}: cases must hold at least one case")
        for index, case in enumerate(cases):
            where = f"{action.label}: cases[{index}]"
            check_condition(f"{where}.when", case.when)
            if case.branch not in action.next:
                raise DefinitionError(
                    f"{where}: branch {case.branch!r} is not a branch of next "
                    f"({', '.join(map(repr, action.next)) or 'none'})"
                )
        taken = {case.branch for case in cases} | {DEFAULT_BRANCH, ERROR_BRANCH}
        for branch in action.next:
            if branch not in taken:
                raise DefinitionError(
                    f"{action.label}: next.{branch} is not the branch of any case "
                    "(nor default, nor error)"
                )

    def branches(self, action: ActionDef) -> list[list[int]]:
        return [targets for branch, targets in action.next.items() if branch != ERROR_BRANCH]

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        if action.cases is not None:
            return self._run_cases(action, document)
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

    def _run_cases(self, action: ActionDef, document: JSONObject) -> Outcome:
        """The first case that holds wins; the input records each condition tested and what
        it gave, the output the case that matched (``null`` when none did)."""
        tested: list[JSON] = []
        received: JSONObject = {"cases": tested}
        for index, case in enumerate(action.cases or ()):
            try:
                holds = compile_condition(case.when).test(document)
            except (ConditionError, ConditionSyntaxError) as error:
                return Fail(
                    f"switch {action.label}: cases[{index}].when {case.when!r}: {error}",
                    input=received,
                )
            tested.append({"when": case.when, "value": holds})
            if holds:
                output = {"case": index, "branch": case.branch}
                return Done(output=output, branch=case.branch, input=received)
        if DEFAULT_BRANCH in action.next:
            output = {"case": None, "branch": DEFAULT_BRANCH}
            return Done(output=output, branch=DEFAULT_BRANCH, input=received)
        return Fail(f"switch {action.label}: no case holds and there is no default", input=received)
