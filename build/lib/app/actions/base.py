"""The interface every system action implements: a new system action is one new module.

An action is reached, and answers with an :data:`Outcome`: finished now (``Done``), failed
(``Fail``), or one of the waiting outcomes that the engine knows how to keep durable
(``Sleep`` on a timer, ``AwaitEvent`` for a posted event, ``AwaitJoin`` for other actions,
``AwaitChild`` for a sub-workflow's run),
or ``End``, which ends the whole run.
Each outcome also carries ``input``, what this execution received (its parameters, resolved),
which the run keeps for its view; it is a record, not part of the decision, so outcomes
compare without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from app.definition import DEFAULT_BRANCH, ActionDef
from app.jsontypes import JSON, JSONObject


@dataclass(frozen=True)
class Done:
    output: JSON
    branch: str = DEFAULT_BRANCH
    input: JSON = field(default=None, compare=False)


@dataclass(frozen=True)
class Fail:
    error: str
    input: JSON = field(default=None, compare=False)


@dataclass(frozen=True)
class Sleep:
    seconds: float
    input: JSON = field(default=None, compare=False)


@dataclass(frozen=True)
class AwaitEvent:
    event: str
    timeout_seconds: float | None
    input: JSON = field(default=None, compare=False)
    # A correlated wait's key, resolved: also reached by POST /events/{event} with this key.
    correlation_key: str | None = None


@dataclass(frozen=True)
class AwaitJoin:
    join_on: list[int]
    input: JSON = field(default=None, compare=False)


@dataclass(frozen=True)
class End:
    """The run ends now with ``status`` (COMPLETED or FAILED) and ``reason``; with
    ``gives_output``, ``output`` becomes the run's output."""

    status: str
    reason: str
    output: JSON = None
    gives_output: bool = False
    input: JSON = field(default=None, compare=False)


@dataclass(frozen=True)
class AwaitChild:
    """A run of ``workflow`` (``version``, or its latest when None) is started with
    ``child_input``; the execution waits until that run ends."""

    workflow: str
    version: int | None
    child_input: JSON
    input: JSON = field(default=None, compare=False)


@dataclass(frozen=True)
class StartItems:
    """A for-each starts its items: ``lines`` "<index> <payload JSON>" for the ``queue`` of
    its body, ``header`` "<concurrency> <fail|collect>" (see start_for_each in common.lua).
    With a sub-workflow body, ``workflow`` names the children's workflow (``queue`` is then
    "") and each line's payload is a child's request (``sub_workflow.child_request``)."""

    queue: str
    header: str
    lines: list[str]
    warnings: list[str] = field(default_factory=list)
    input: JSON = field(default=None, compare=False)
    workflow: str | None = None


Outcome = Done | Fail | Sleep | AwaitEvent | AwaitJoin | End | AwaitChild | StartItems


class SystemAction(ABC):
    """One system action (``switch``, ``delay``...), stateless and shared by all runs."""

    name: ClassVar[str]
    # True when ``run`` may take long (a script): the engine calls it off the event loop.
    blocking: ClassVar[bool] = False
    # False when ``run`` never reads the document: it then gets an empty one, and the engine
    # does not build the run's (which parses every output the run has kept).
    reads_document: ClassVar[bool] = True

    def reads_document_of(self, action: ActionDef) -> bool:
        """Whether ``run`` reads the document for this action (``reads_document``, unless
        the action says otherwise for some of its configurations)."""
        return self.reads_document

    @abstractmethod
    def validate(self, action: ActionDef) -> None:
        """Raise :class:`app.definition.DefinitionError` naming ``action.label`` when invalid."""

    @abstractmethod
    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        """Decide what happens when ``action`` is reached, reading the run's data document."""

    def branches(self, action: ActionDef) -> list[list[int]]:
        """The ids of each branch a condition may decide to take (not ``error``): a cycle
        through a condition one of whose branches leaves it can end. Other actions have none."""
        return []
