"""The in-memory form of a workflow definition (Orchy's JSON format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from app.engine.params import references
from app.engine.variables import VarMutation
from app.jsontypes import JSON, JSONObject

DEFAULT_BRANCH = "default"
ERROR_BRANCH = "error"


class ActionType(StrEnum):
    USER = "user"
    SYSTEM = "system"


@dataclass(frozen=True)
class SwitchCase:
    """One of a switch's ``cases``: ``branch`` is taken when the condition ``when`` holds."""

    when: str
    branch: str


class ItemFailure(StrEnum):
    """What a for-each does when one of its items fails (after its retries)."""

    FAIL = "fail"  # the for-each fails at once; no further item starts
    COLLECT = "collect"  # the item's entry in the output is {"error": ...}


@dataclass(frozen=True)
class ItemBody:
    """What a for-each runs for each item: a user action ``name`` with ``parameters`` that may
    read ``{$.item}`` and ``{$.index}``. (:class:`SubflowBody`, a sub-workflow per item, is
    its sibling.)"""

    name: str
    parameters: JSONObject


@dataclass(frozen=True)
class SubflowBody:
    """What a for-each runs for each item: a child run of ``workflow`` (``version``, or its
    latest when the child starts), whose input is ``input`` resolved with ``{$.item}`` and
    ``{$.index}``."""

    workflow: str
    version: int | None
    input: JSON


@dataclass(frozen=True)
class ForEachSpec:
    """A ``forEach`` system action's own fields, as app/actions/for_each.py parses them."""

    items: str | list[JSON]  # one reference, "{$.input.orders}", or a literal list
    concurrency: int | None  # None: ORCHY_FOR_EACH_CONCURRENCY
    on_item_failure: ItemFailure
    filter: str | None
    body: ItemBody | SubflowBody


class DefinitionError(ValueError):
    """A definition breaks a rule; the message names the action and the problem."""


def objects_in(raw: JSON, label: str, field_name: str, shape: str) -> list[tuple[str, JSONObject]]:
    """The entries of ``field_name``, a list of objects (``shape`` names their keys), each with
    where it stands for messages."""
    if not isinstance(raw, list):
        raise DefinitionError(f"{label}: {field_name} must be a list of {shape}, not {raw!r}")
    entries = []
    for index, entry in enumerate(raw):
        where = f"{label}: {field_name}[{index}]"
        if not isinstance(entry, dict):
            raise DefinitionError(f"{where} must be an object {shape}, not {entry!r}")
        entries.append((where, entry))
    return entries


@dataclass(frozen=True)
class ActionDef:
    id: int
    type: ActionType
    name: str
    parameters: JSONObject = field(default_factory=dict)
    next: dict[str, list[int]] = field(default_factory=dict)
    expression: str | None = None
    delay_seconds: float | None = None
    event: str | None = None
    timeout_seconds: float | None = None
    join_on: list[int] | None = None
    cases: tuple[SwitchCase, ...] | None = None
    condition: str | None = None
    set_vars: tuple[VarMutation, ...] = ()
    for_each: ForEachSpec | None = None
    check: str | None = None  # a while's: "before" or "after" each pass of its body
    # A while's: the joins in its loop, which fire again in each pass (see app/engine/cycles.py)
    loop_joins: tuple[int, ...] = ()
    correlation_key: str | None = None  # wait: the key of a correlated event (a template)
    # A subWorkflow's ``workflow`` and ``version``, as written (its module checks them).
    workflow: JSON = None
    workflow_version: JSON = None

    @property
    def label(self) -> str:
        return f"action {self.id} ({self.name})"

    @cached_property
    def references_data(self) -> bool:
        """True when some string in the parameters holds a ``{$...}`` reference."""
        return any(references(self.parameters))

    @property
    def conditions(self) -> list[tuple[str, str]]:
        """Where each condition of this action is (``cases[0].when``), and its text."""
        found = [(f"cases[{index}].when", case.when) for index, case in enumerate(self.cases or ())]
        if self.condition is not None:
            found.append(("condition", self.condition))
        return found

    def branch(self, key: str) -> list[int]:
        """Ids to start for branch ``key``, falling back to ``default``."""
        if key in self.next:
            return self.next[key]
        return self.next.get(DEFAULT_BRANCH, [])


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    root_action: int
    actions: dict[int, ActionDef]
    output: JSON = None
    version: int = 0
    vars: JSONObject = field(default_factory=dict)  # initial values
    # Paths GET /flow finds runs by ("input.email", "vars.orderId"; see engine/searchable.py)
    searchable: tuple[str, ...] = ()
    source: JSONObject = field(default_factory=dict)
