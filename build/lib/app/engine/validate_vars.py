"""The rules of workflow variables (``vars``) and of actions' ``setVars``."""

from __future__ import annotations

from typing import Any

import orjson

from app.actions.terminate import TerminateAction
from app.definition import ActionDef, ActionType, DefinitionError, objects_in
from app.engine.params import PathError, compile_path, references
from app.engine.variables import VarMutation, VarOp
from app.jsontypes import JSON, JSONObject, is_json_number

_OPS = ", ".join(repr(op.value) for op in VarOp)


def parse_vars(raw: JSON, max_bytes: int | None) -> JSONObject:
    """The workflow's ``vars``: variable name -> initial value (any JSON)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DefinitionError(f"vars must be an object of name -> initial value, not {raw!r}")
    for name, value in raw.items():
        if not name.strip():
            raise DefinitionError("vars: a variable name must be a non-empty string")
        size = len(orjson.dumps(value))
        if max_bytes is not None and size > max_bytes:
            raise DefinitionError(
                f"vars.{name}: the initial value is {size} bytes; at most {max_bytes} "
                "(ORCHY_MAX_OUTPUT_BYTES)"
            )
    return raw


def parse_set_vars(raw: JSON, label: str) -> tuple[VarMutation, ...]:
    """An action's ``setVars``, checked for shape (names are checked by ``check_set_vars``)."""
    if raw is None:
        return ()
    mutations = []
    for where, entry in objects_in(raw, label, "setVars", "{var, op, value}"):
        var, op = entry.get("var"), entry.get("op")
        if not isinstance(var, str) or not var.strip():
            raise DefinitionError(f"{where}.var must be a variable name, not {var!r}")
        if op not in set(VarOp):
            raise DefinitionError(f"{where}.op must be one of {_OPS}, not {op!r}")
        if "value" not in entry:
            raise DefinitionError(f"{where}.value is missing (JSON, or a {{$...}} reference)")
        value: Any = entry["value"]
        _check_value(where, VarOp(op), value)
        mutations.append(VarMutation(var, VarOp(op), value))
    return tuple(mutations)


def _check_value(where: str, op: VarOp, value: JSON) -> None:
    for ref in references(value):
        try:
            compile_path(ref)
        except PathError as error:
            raise DefinitionError(f"{where}.value: {error}") from None
    if any(references(value)):
        return  # its type is known only when it is resolved
    if op is VarOp.ADD and not is_json_number(value):
        raise DefinitionError(f"{where}.value must be a number for add, not {value!r}")
    if op is VarOp.REMOVE_KEY and not isinstance(value, str):
        raise DefinitionError(f"{where}.value must be a key (a string) for removeKey")


def check_set_vars(action: ActionDef, variables: JSONObject) -> None:
    """Every variable named is declared in ``vars``; terminate has no ``setVars``."""
    if not action.set_vars:
        return
    if action.type is ActionType.SYSTEM and action.name == TerminateAction.name:
        raise DefinitionError(f"{action.label}: terminate ends the run; it takes no setVars")
    for index, mutation in enumerate(action.set_vars):
        if mutation.var not in variables:
            declared = ", ".join(sorted(variables)) or "none"
            raise DefinitionError(
                f"{action.label}: setVars[{index}].var {mutation.var!r} is not declared in "
                f"the workflow's vars (declared: {declared})"
            )
