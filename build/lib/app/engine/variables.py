"""Workflow variables: values a run keeps under ``$.vars``, changed by the ``setVars`` of an
action when one of its executions completes.

A mutation is computed here, from the run as the engine read it, and the new value is
written by the transition that completes the execution. That transition is guarded by the
run's revision (see ``expected_rev`` in transition.lua): if another transition changed the
run meanwhile, nothing is written and the result is planned again from a fresh read, so two
parallel completions never lose an update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import orjson

from app.engine.params import references, resolve
from app.jsontypes import JSON, JSONObject, is_json_number
from app.store import PlannedOp

VARS = "vars"
OWN_OUTPUT = "output"  # ``{$.output...}`` in a mutation's value: the action's own output
MAX_EXACT_INTEGER = 2**53  # integers an ``add`` gives exactly, as every JSON reader does


class VarOp(StrEnum):
    ASSIGN = "assign"
    ADD = "add"
    APPEND = "append"
    REMOVE_KEY = "removeKey"


@dataclass(frozen=True)
class VarMutation:
    """One entry of an action's ``setVars``: ``value`` is JSON or a template."""

    var: str
    op: VarOp
    value: JSON


class MutationError(ValueError):
    """A mutation cannot apply to the variable's current value."""


def mutated(op: VarOp, current: JSON, value: JSON) -> JSON:
    """The variable's new value; raises :class:`MutationError` when ``op`` cannot apply."""
    if op is VarOp.ASSIGN:
        return value
    if op is VarOp.ADD:
        if not is_json_number(current):
            raise MutationError(f"add needs a number variable, it holds {_dumps(current)}")
        if not is_json_number(value):
            raise MutationError(f"add needs a number value, not {_dumps(value)}")
        total = current + value
        if isinstance(total, int) and abs(total) > MAX_EXACT_INTEGER:
            raise MutationError(f"add gives {total}, beyond the exact integers (2^53)")
        if isinstance(total, float) and not math.isfinite(total):
            raise MutationError("add gives a number beyond the range of JSON numbers")
        return total
    if op is VarOp.APPEND:
        if not isinstance(current, list):
            raise MutationError(f"append needs a list variable, it holds {_dumps(current)}")
        return [*current, value]
    if not isinstance(current, dict):
        raise MutationError(f"removeKey needs an object variable, it holds {_dumps(current)}")
    if not isinstance(value, str):
        raise MutationError(f"removeKey needs a string key, not {_dumps(value)}")
    return {key: item for key, item in current.items() if key != value}


def _dumps(value: JSON) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 100 else text[:100] + "..."


def apply_set_vars(
    mutations: tuple[VarMutation, ...],
    action_id: int,
    output: JSON,
    document: JSONObject,
    max_bytes: int,
) -> tuple[dict[str, JSON], list[PlannedOp]]:
    """The variables changed by ``mutations`` (in order) and the ops that write them.

    ``document`` is the run's data document (its ``vars`` are the values read); a value's
    ``{$.output...}`` is ``output``. Raises :class:`MutationError` naming the mutation that
    cannot apply, or whose result is larger than ``max_bytes``."""
    current: JSONObject = document.get(VARS) or {}
    changed: dict[str, JSON] = {}
    ops: list[PlannedOp] = []
    scope: JSONObject | None = None
    for index, mutation in enumerate(mutations):
        value = mutation.value
        if any(references(value)):
            if scope is None:
                scope = {**document, OWN_OUTPUT: output}
            value = resolve(value, scope).value
        where = f"setVars[{index}] ({mutation.op} {mutation.var})"
        before = changed[mutation.var] if mutation.var in changed else current.get(mutation.var)
        try:
            after = mutated(mutation.op, before, value)
        except MutationError as error:
            raise MutationError(f"{where}: {error}") from None
        text = orjson.dumps(after).decode()
        if len(text) > max_bytes:
            raise MutationError(
                f"{where}: the variable would be {len(text)} bytes; the limit is {max_bytes} "
                "bytes (ORCHY_MAX_OUTPUT_BYTES)"
            )
        changed[mutation.var] = after
        ops.append(PlannedOp("var", action_id, mutation.var, text, input=mutation.op.value))
    return changed, ops
