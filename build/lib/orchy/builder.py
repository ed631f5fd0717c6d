"""Workflows as code: build Orchy's JSON definition in Python.

::

    from orchy import Workflow

    wf = Workflow("order")
    price = wf.user("price", parameters={"items": "{$.input.items}"})
    bill = wf.user("bill", parameters={"total": price.output_ref("total")})
    price >> bill
    price.on_error(wf.user("notify"))
    definition = wf.to_json()

Each method of :class:`Workflow` adds one action and returns its :class:`Step`; ids are
given in order (1, 2, ...) unless passed with ``id=``; the first action added is the root
unless :attr:`Workflow.root` is set. ``a >> b`` links ``b`` after ``a`` (the ``default``
branch) and returns ``b``, so chains read left to right; ``a >> [b, c]`` starts both in
parallel; ``[b, c] >> d`` links both to ``d``. Other branches: :meth:`Step.branch`,
:meth:`Step.on_error`, :attr:`If.on_true` / :attr:`If.on_false`, :meth:`Switch.case`,
:attr:`While.body`.

The JSON format stays the source of truth: :meth:`Workflow.from_json` reads any definition
(fields the builder has no method for are kept as they are) and
``Workflow.from_json(d).to_json() == d``.

:meth:`Workflow.validate` (called by :meth:`Workflow.to_json` unless ``validate=False``)
checks the definition with the server's own rules before it is sent:

- always (light install, ``orchy-client``): the pydantic models of the format that the
  server documents its body with (:mod:`orchy.definition_models`): fields, types, required
  fields, a switch's expression or cases, a terminate without ``next``; and here, that every
  id named in ``next``, ``joinOn`` and ``rootAction`` exists and that ids are unique;
- with the full install (the ``orchy`` distribution, where the server's ``app`` package is
  importable): also the server's complete rules, ``app.engine.validate.parse_workflow``,
  imported lazily (reachability, cycles a condition cannot leave, condition and JSONPath
  syntax, JavaScript that does not compile, variables). The server's limits
  (``ORCHY_MAX_*``) are checked by the server when the workflow is registered.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, overload

from pydantic import ValidationError

from orchy.definition_models import (
    DEFAULT_BRANCH,
    ERROR_BRANCH,
    SYSTEM,
    USER,
    WorkflowDefinition,
)

__all__ = [
    "Branch",
    "ForEach",
    "If",
    "Join",
    "Step",
    "Switch",
    "While",
    "Workflow",
    "WorkflowDefinitionError",
    "check",
]

_S = TypeVar("_S", bound="Step")
_CAMEL = re.compile(r"_([a-z0-9])")


class WorkflowDefinitionError(ValueError):
    """A built or read definition breaks a rule; the message names the field or the action
    and the problem (the server's own wording when the full install is there)."""


def _camel(name: str) -> str:
    """``retry_count`` -> ``retryCount``: Python keywords to the format's field names."""
    return _CAMEL.sub(lambda match: match.group(1).upper(), name)


def _fields(extra: Mapping[str, Any]) -> dict[str, Any]:
    return {_camel(key): value for key, value in extra.items()}


def _steps(targets: Step | Iterable[Step]) -> list[Step]:
    if isinstance(targets, Step):
        return [targets]
    steps = list(targets)
    for step in steps:
        if not isinstance(step, Step):
            raise TypeError(f"a workflow step is expected, not {type(step).__name__}")
    return steps


class Branch:
    """A branch of a step's ``next`` (``step.branch("MALE")``): ``branch >> target`` starts
    ``target`` (a step or a list of steps, in parallel) when the branch is taken."""

    def __init__(self, step: Step, key: str) -> None:
        self.step = step
        self.key = key

    @overload
    def __rshift__(self, targets: _S) -> _S: ...
    @overload
    def __rshift__(self, targets: Sequence[Step]) -> Sequence[Step]: ...
    def __rshift__(self, targets: Step | Sequence[Step]) -> Step | Sequence[Step]:
        """``branch >> target``: ``target`` when the branch is taken; returns ``target``."""
        self.step.then(targets, branch=self.key)
        return targets

    def __repr__(self) -> str:
        return f"Branch({self.step!r}, {self.key!r})"


class Step:
    """One action of a :class:`Workflow`, as its JSON object: ``id``, ``type``, ``name``,
    ``next`` and the fields of its kind (kept in :attr:`fields`, with the format's names)."""

    def __init__(
        self,
        workflow: Workflow,
        action_id: int,
        kind: str,
        name: str,
        fields: dict[str, Any],
        next_: dict[str, list[int]] | None = None,
    ) -> None:
        self.workflow = workflow
        self.id = action_id
        self.type = kind
        self.name = name
        self.fields = fields
        self.next = next_

    def then(self, targets: Step | Iterable[Step], *, branch: str = DEFAULT_BRANCH) -> Self:
        """Start ``targets`` (in parallel) when ``branch`` is taken; returns this step. A
        target already on that branch is not added twice."""
        steps = _steps(targets)
        for step in steps:
            if step.workflow is not self.workflow:
                raise ValueError(f"{step!r} belongs to another workflow")
        if self.next is None:
            self.next = {}
        ids = self.next.setdefault(branch, [])
        ids.extend(step.id for step in steps if step.id not in ids)
        return self

    def branch(self, key: str) -> Branch:
        """The branch ``key`` of ``next``, to link with ``>>``."""
        return Branch(self, key)

    def on_error(self, targets: Step | Iterable[Step]) -> Self:
        """Start ``targets`` when this action fails (the ``error`` branch); returns this
        step."""
        return self.then(targets, branch=ERROR_BRANCH)

    @overload
    def __rshift__(self, targets: _S) -> _S: ...
    @overload
    def __rshift__(self, targets: Sequence[Step]) -> Sequence[Step]: ...
    def __rshift__(self, targets: Step | Sequence[Step]) -> Step | Sequence[Step]:
        """``a >> b``: ``b`` after ``a`` (``default``); returns ``b`` for chains."""
        self.then(targets)
        return targets

    def __rrshift__(self, sources: Sequence[Step]) -> Step:
        """``[a, b] >> c``: ``c`` after each of ``a`` and ``b``; returns ``c``."""
        for source in _steps(sources):
            source.then(self)
        return self

    def output_ref(self, path: str = "") -> str:
        """The reference to this action's output (or a path in it), for parameters,
        conditions and templates: ``"{$.3.output}"``, ``"{$.3.output.user.gender}"``."""
        suffix = f".{path}" if path else ""
        return f"{{$.{self.id}.output{suffix}}}"

    def set_var(
        self, var: str, value: Any, op: Literal["assign", "add", "append", "removeKey"] = "assign"
    ) -> Self:
        """Change the workflow variable ``var`` when this action completes (``setVars``;
        declare it with :meth:`Workflow.var`); returns this step."""
        mutations: list[Any] = self.fields.setdefault("setVars", [])
        mutations.append({"var": var, "op": op, "value": value})
        return self

    def to_json(self) -> dict[str, Any]:
        """This action as Orchy's JSON (a new dict)."""
        action: dict[str, Any] = {"id": self.id, "type": self.type, "name": self.name}
        action.update(copy.deepcopy(self.fields))
        if self.next is not None:
            action["next"] = copy.deepcopy(self.next)
        return action

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id}, {self.type} {self.name!r})"


class Switch(Step):
    """A ``switch``: on its ``expression``'s value (``switch.branch("MALE") >> step``), or on
    the first of its ``cases`` that holds (``switch.case("{$.input.n} > 9", "big") >>
    step``); ``switch >> step`` is the ``default``."""

    def case(self, when: str, branch: str) -> Branch:
        """Add a case: ``branch`` is taken when the condition ``when`` holds (cases are tried
        in the order they are added)."""
        cases: list[Any] = self.fields.setdefault("cases", [])
        cases.append({"when": when, "branch": branch})
        return self.branch(branch)


class If(Step):
    """An ``if``: :attr:`on_true` / :attr:`on_false` are its branches."""

    @property
    def on_true(self) -> Branch:
        """The branch taken when the condition holds."""
        return self.branch("true")

    @property
    def on_false(self) -> Branch:
        """The branch taken when it does not."""
        return self.branch("false")


class While(Step):
    """A ``while``: ``loop.body >> a >> b >> loop`` runs ``a`` then ``b`` on each pass (the
    body's last action leads back to the while); ``loop >> after`` follows the loop."""

    @property
    def body(self) -> Branch:
        """The ``body`` branch, taken on each pass."""
        return self.branch("body")

    def passes_ref(self) -> str:
        """The reference to the pass number (in the body) or the passes done (in the
        condition)."""
        return self.output_ref("iteration")


class Join(Step):
    """A ``join``: continues once, when every action of ``joinOn`` has finished."""


class ForEach(Step):
    """A ``forEach``: runs its body once per item; its output is the list of the items'
    outputs, in order."""


_KINDS: dict[str, type[Step]] = {
    "switch": Switch,
    "if": If,
    "while": While,
    "join": Join,
    "forEach": ForEach,
}


def _full_rules() -> Callable[[object], object] | None:
    """The server's ``parse_workflow`` when the full install is there, else None. The server
    is the ``app`` package installed beside this ``orchy`` (a user's own ``app`` package is
    never imported)."""
    try:
        spec = importlib.util.find_spec("app")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    if Path(spec.origin).resolve().parent.parent != Path(__file__).resolve().parent.parent:
        return None
    try:
        module = importlib.import_module("app.engine.validate")
    except ImportError:
        return None
    parse: Callable[[object], object] | None = getattr(module, "parse_workflow", None)
    return parse


class Workflow:
    """A workflow definition under construction (see the module's documentation).

    ``output`` is the template of the run's output; ``vars`` the workflow variables with
    their initial values; other top-level fields of the format may be passed as keywords.
    """

    def __init__(
        self,
        name: str,
        *,
        output: Any = None,
        vars: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.name = name
        self.steps: list[Step] = []
        self.root: Step | None = None
        """The root action; None: the first action added."""
        self.fields: dict[str, Any] = _fields(extra)
        if output is not None:
            self.fields["output"] = output
        if vars is not None:
            self.fields["vars"] = dict(vars)

    @property
    def output(self) -> Any:
        """The template of the run's output (``None``: none); may be set once the steps it
        reads exist: ``wf.output = {"total": bill.output_ref("total")}``."""
        return self.fields.get("output")

    @output.setter
    def output(self, template: Any) -> None:
        if template is None:
            self.fields.pop("output", None)
        else:
            self.fields["output"] = template

    # -- ids and steps ------------------------------------------------------------------

    def _next_id(self) -> int:
        return max((step.id for step in self.steps), default=0) + 1

    def _add(
        self, cls: type[_S], kind: str, name: str, fields: dict[str, Any], action_id: int | None
    ) -> _S:
        if action_id is None:
            action_id = self._next_id()
        elif isinstance(action_id, bool) or not isinstance(action_id, int):
            raise TypeError(f"id must be an int, not {action_id!r}")
        if any(step.id == action_id for step in self.steps):
            raise WorkflowDefinitionError(f"id {action_id} is used by more than one action")
        step = cls(self, action_id, kind, name, {k: v for k, v in fields.items() if v is not None})
        self.steps.append(step)
        return step

    def step(self, action_id: int) -> Step:
        """The step with id ``action_id`` (KeyError if there is none)."""
        for step in self.steps:
            if step.id == action_id:
                return step
        raise KeyError(action_id)

    def var(self, name: str, initial: Any) -> str:
        """Declare the workflow variable ``name``; returns its reference ``{$.vars.name}``."""
        variables: dict[str, Any] = self.fields.setdefault("vars", {})
        variables[name] = initial
        return f"{{$.vars.{name}}}"

    # -- user actions -------------------------------------------------------------------

    def user(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        id: int | None = None,
        **extra: Any,
    ) -> Step:
        """A user action: a worker serving ``name`` runs it with ``parameters`` (templates,
        resolved) as its input. Other fields of the action as keywords, in Python's spelling
        (``retry_count=3`` is ``retryCount``)."""
        fields = {"parameters": None if parameters is None else dict(parameters)}
        return self._add(Step, USER, name, fields | _fields(extra), id)

    # -- system actions -----------------------------------------------------------------

    def switch(
        self,
        expression: str | None = None,
        *,
        id: int | None = None,
        **extra: Any,
    ) -> Switch:
        """A ``switch`` on ``expression``'s value; without it, add conditions with
        :meth:`Switch.case`."""
        return self._add(Switch, SYSTEM, "switch", {"expression": expression} | _fields(extra), id)

    def if_(self, condition: str, *, id: int | None = None, **extra: Any) -> If:
        """An ``if`` on ``condition``: branches :attr:`If.on_true` and :attr:`If.on_false`."""
        return self._add(If, SYSTEM, "if", {"condition": condition} | _fields(extra), id)

    def while_(
        self,
        condition: str,
        *,
        check: Literal["before", "after"] | None = None,
        id: int | None = None,
        **extra: Any,
    ) -> While:
        """A ``while``: its :attr:`While.body` runs while ``condition`` holds (checked
        ``before`` each pass, or ``after`` for a do-while)."""
        fields = {"condition": condition, "check": check} | _fields(extra)
        return self._add(While, SYSTEM, "while", fields, id)

    def for_each(
        self,
        items: str | Sequence[Any],
        body: str | Workflow | Mapping[str, Any],
        parameters: Mapping[str, Any] | None = None,
        *,
        concurrency: int | None = None,
        on_item_failure: Literal["fail", "collect"] | None = None,
        filter: str | None = None,
        id: int | None = None,
        **extra: Any,
    ) -> ForEach:
        """A ``forEach`` over ``items`` (a reference such as ``"{$.input.orders}"``, or a
        list), running ``body`` once per item: a user action's name (``parameters`` are its
        input), a :class:`Workflow` run as a child per item (``parameters`` are the child's
        ``input``), or the body's JSON object as it is. ``parameters`` may read ``{$.item}``
        and ``{$.index}``."""
        body_json: dict[str, Any]
        if isinstance(body, str):
            body_json = {"type": USER, "name": body}
            if parameters is not None:
                body_json["parameters"] = dict(parameters)
        elif isinstance(body, Workflow):
            body_json = {"workflow": body.name}
            if parameters is not None:
                body_json["input"] = dict(parameters)
        else:
            body_json = dict(body)
        fields = {
            "items": items if isinstance(items, str) else list(items),
            "concurrency": concurrency,
            "onItemFailure": on_item_failure,
            "filter": filter,
            "body": body_json,
        } | _fields(extra)
        return self._add(ForEach, SYSTEM, "forEach", fields, id)

    def sub_workflow(
        self,
        workflow: str | Workflow,
        parameters: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        id: int | None = None,
        **extra: Any,
    ) -> Step:
        """A ``subWorkflow``: runs ``workflow`` (a name, or a :class:`Workflow`) as a child
        with ``parameters`` as its input, and takes its output."""
        fields = {
            "workflow": workflow.name if isinstance(workflow, Workflow) else workflow,
            "version": version,
            "parameters": None if parameters is None else dict(parameters),
        } | _fields(extra)
        return self._add(Step, SYSTEM, "subWorkflow", fields, id)

    def delay(self, seconds: float, *, id: int | None = None, **extra: Any) -> Step:
        """A ``delay`` of ``seconds`` (a durable timer)."""
        return self._add(Step, SYSTEM, "delay", {"delaySeconds": seconds} | _fields(extra), id)

    def wait(
        self,
        event: str,
        *,
        timeout_seconds: float | None = None,
        correlation_key: str | None = None,
        id: int | None = None,
        **extra: Any,
    ) -> Step:
        """A ``wait`` for the event ``event`` (sent to the run, or by name and
        ``correlation_key``); after ``timeout_seconds`` it goes on with
        ``{"timedOut": true}``."""
        fields = {
            "event": event,
            "timeoutSeconds": timeout_seconds,
            "correlationKey": correlation_key,
        } | _fields(extra)
        return self._add(Step, SYSTEM, "wait", fields, id)

    def javascript(self, expression: str, *, id: int | None = None, **extra: Any) -> Step:
        """A ``javascript`` action: runs the script ``expression`` on the run's data (``$``)."""
        fields = {"expression": expression} | _fields(extra)
        return self._add(Step, SYSTEM, "javascript", fields, id)

    def join(self, *steps: Step, id: int | None = None, **extra: Any) -> Join:
        """A ``join`` of ``steps``: each of them leads to it (``default``, unless it already
        does on some branch) and it goes on once all have finished."""
        join = self._add(
            Join, SYSTEM, "join", {"joinOn": [step.id for step in steps]} | _fields(extra), id
        )
        for step in steps:
            linked = step.next is not None and any(join.id in ids for ids in step.next.values())
            if not linked:
                step.then(join)
        return join

    def terminate(
        self,
        status: Literal["COMPLETED", "FAILED"],
        reason: str | None = None,
        *,
        output: Any = None,
        id: int | None = None,
        **extra: Any,
    ) -> Step:
        """A ``terminate``: ends the run at once with ``status`` (and ``reason``; ``output``
        for ``COMPLETED``)."""
        parameters: dict[str, Any] = {"status": status}
        if reason is not None:
            parameters["reason"] = reason
        if output is not None:
            parameters["output"] = output
        fields = {"parameters": parameters} | _fields(extra)
        return self._add(Step, SYSTEM, "terminate", fields, id)

    def system(self, name: str, *, id: int | None = None, **fields: Any) -> Step:
        """Any system action ``name`` with ``fields`` as they are in the format (for one the
        builder has no method for yet)."""
        return self._add(_KINDS.get(name, Step), SYSTEM, name, dict(fields), id)

    # -- JSON ---------------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        """The definition as Orchy's JSON, without validating it."""
        if not self.steps:
            raise WorkflowDefinitionError(f"workflow {self.name!r} has no action")
        root = self.root if self.root is not None else self.steps[0]
        definition: dict[str, Any] = {
            "name": self.name,
            "rootAction": root.id,
            "actions": [step.to_json() for step in self.steps],
        }
        definition.update(copy.deepcopy(self.fields))
        return definition

    def to_json(self, *, validate: bool = True) -> dict[str, Any]:
        """The definition as Orchy's JSON, validated first (see :meth:`validate`)."""
        definition = self.build()
        if validate:
            check(definition)
        return definition

    def validate(self) -> None:
        """Check the definition with the server's rules (all of them with the full install;
        see the module's documentation); :class:`WorkflowDefinitionError` if one fails."""
        check(self.build())

    @classmethod
    def from_json(cls, definition: Mapping[str, Any]) -> Workflow:
        """A builder holding ``definition`` (decoded JSON) as it is: ``to_json()`` gives it
        back, and steps may be added or relinked. The definition is checked for its shape
        (the models) only."""
        _check_shape(definition)
        raw = copy.deepcopy(dict(definition))
        workflow = cls(raw.pop("name"))
        root_id = raw.pop("rootAction")
        for action in raw.pop("actions"):
            fields = dict(action)
            action_id, kind, name = fields.pop("id"), fields.pop("type"), fields.pop("name")
            next_ = fields.pop("next", None)
            step_cls = _KINDS.get(name, Step) if kind == SYSTEM else Step
            step = step_cls(workflow, action_id, kind, name, fields, next_)
            workflow.steps.append(step)
        workflow.fields = raw
        if not any(step.id == root_id for step in workflow.steps):
            raise WorkflowDefinitionError(f"rootAction {root_id} is not the id of an action")
        workflow.root = workflow.step(root_id)
        return workflow

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, {len(self.steps)} actions)"


def _check_shape(definition: Mapping[str, Any]) -> None:
    try:
        WorkflowDefinition.model_validate(definition)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "definition"
        raise WorkflowDefinitionError(
            f"{where}: {first['msg']} ({error.error_count()} error(s))"
        ) from None


def _check_links(definition: Mapping[str, Any]) -> None:
    ids: set[int] = set()
    for action in definition["actions"]:
        if action["id"] in ids:
            raise WorkflowDefinitionError(f"id {action['id']} is used by more than one action")
        ids.add(action["id"])
    for action in definition["actions"]:
        named = [i for branch in (action.get("next") or {}).values() for i in branch]
        named += action.get("joinOn") or []
        for target in named:
            if target not in ids:
                raise WorkflowDefinitionError(
                    f"action {action['id']} ({action['name']}): id {target} is not the id of "
                    "an action"
                )


def check(definition: Mapping[str, Any]) -> None:
    """Check a definition (decoded JSON) with the server's rules: the format's models and
    links always, the server's full rules when its package is installed (see the module's
    documentation); :class:`WorkflowDefinitionError` names the problem."""
    _check_shape(definition)
    _check_links(definition)
    parse = _full_rules()
    if parse is None:
        return
    try:
        parse(copy.deepcopy(dict(definition)))
    except ValueError as error:  # the server's DefinitionError is a ValueError
        raise WorkflowDefinitionError(str(error)) from None
