"""Orchy's workflow definition format as pydantic models, shared by the SDK and the server.

The server documents its ``POST /metadata/workflow`` body with these models (its OpenAPI
schema and ``/docs``), and :class:`orchy.builder.Workflow` checks what it builds with them
before anything is sent. They hold the *shape* of a definition, field by field; the server's
``app/engine/validate.py`` stays the judge of the rest (links, reachability, cycles,
references, scripts, limits), and every definition it accepts passes these models.

Pure pydantic: nothing here imports the server, so the light install (``orchy-client``)
has them too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictInt,
    Tag,
    model_validator,
)

USER = "user"
"""``type`` of a user action (run by a worker)."""
SYSTEM = "system"
"""``type`` of a system action (run by the server)."""
DEFAULT_BRANCH = "default"
"""The branch of ``next`` taken when no other applies."""
ERROR_BRANCH = "error"
"""The branch of ``next`` taken when the action fails."""

ActionId = Annotated[StrictInt, Field(description="an integer, unique in the workflow")]
# An int or a float (never a bool, never a string), finite.
Seconds = Annotated[float, Strict(), Field(allow_inf_nan=False)]
# A searchable path (app/engine/searchable.py checks the same form).
SEARCHABLE_PATH = r"^\$\.((input(\.[A-Za-z0-9_-]+)+)|(vars\.[A-Za-z0-9_-]+))$"
NonBlank = Annotated[str, Field(pattern=r"\S", description="a non-blank string")]
Next = Annotated[
    dict[str, list[ActionId]] | None,
    Field(
        description="branch key -> ids started next, in parallel; absent: a leaf. "
        "A branch not listed falls back to `default`; `error` is taken when the action fails",
        examples=[{"default": [2]}],
    ),
]


class VarMutationModel(BaseModel):
    """One change of a workflow variable (declared in the workflow's ``vars``)."""

    model_config = ConfigDict(extra="allow", title="VarMutation")

    var: NonBlank
    op: Literal["assign", "add", "append", "removeKey"]
    value: Any = Field(
        description='JSON, or a reference such as "{$.output.total}" (this action\'s output) '
        'or "{$.vars.count}"',
        examples=[1],
    )


class ActionBase(BaseModel):
    """The fields every action has: ``id``, ``name``, ``next`` and ``setVars``."""

    # Fields of other kinds are kept and ignored, as validate.py does.
    model_config = ConfigDict(extra="allow")

    id: ActionId
    name: NonBlank
    next: Next = None
    setVars: list[VarMutationModel] | None = Field(
        default=None,
        description="applied in order when an execution of the action completes; a mutation "
        "that cannot apply fails the execution",
    )


class UserAction(ActionBase):
    """Run by a worker polling for ``name``, with ``parameters`` resolved as its input."""

    type: Literal["user"]
    parameters: dict[str, Any] | None = Field(
        default=None,
        description='templates: "{$.input.x}" takes the value found, other text is filled in',
        examples=[{"userId": "{$.input.userId}"}],
    )


Condition = Annotated[
    str,
    Field(
        pattern=r"\S",
        description="a condition: JSON literals, references such as {$.input.x}, ( ), [ ], "
        "== != < <= > >= in, && || !, + - * / %; it must give true or false",
        examples=['{$.input.status} == "PAID" && {$.input.amount} < 100'],
    ),
]


class SwitchCase(BaseModel):
    """One of a switch's ``cases``: ``branch`` is taken when ``when`` holds."""

    model_config = ConfigDict(extra="allow")

    when: Condition
    branch: str = Field(min_length=1, description="a key of `next`, taken when `when` holds")


class SwitchStep(ActionBase):
    """With ``expression``: takes the branch named by the string form of its value (or
    ``default``). With ``cases`` instead: takes the branch of the first case whose
    condition holds (or ``default``); every case's branch must be a key of ``next``."""

    type: Literal["system"]
    name: Literal["switch"]
    expression: NonBlank | None = Field(default=None, examples=["{$.1.output.user.gender}"])
    cases: list[SwitchCase] | None = Field(
        default=None,
        min_length=1,
        examples=[[{"when": "{$.input.amount} > 100", "branch": "big"}]],
    )

    @model_validator(mode="after")
    def _expression_or_cases(self) -> SwitchStep:
        if (self.expression is None) == (self.cases is None):
            raise ValueError("a switch has either an expression or cases")
        return self


class IfStep(ActionBase):
    """Takes the ``true`` or the ``false`` branch as ``condition`` holds (a branch missing
    from ``next`` falls back to ``default``, else the run goes no further there)."""

    type: Literal["system"]
    name: Literal["if"]
    condition: Condition


class WhileStep(ActionBase):
    """Runs the ``body`` branch while ``condition`` holds, then takes ``default``; the body's
    last action leads back to the while. ``{$.<id>.output.iteration}`` is the pass number in
    the body, the passes done in the condition."""

    type: Literal["system"]
    name: Literal["while"]
    condition: Condition
    check: Literal["before", "after"] | None = Field(
        default=None, description='"before" (default) each pass, or "after" (a do-while)'
    )


class ForEachBody(BaseModel):
    """The user action a for-each runs once per item."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["user"]
    name: NonBlank
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="templates, resolved per item with {$.item} and {$.index} (its position)",
        examples=[{"order": "{$.item}", "position": "{$.index}"}],
    )


class ForEachSubWorkflowBody(BaseModel):
    """The sub-workflow a for-each runs as a child run per item."""

    model_config = ConfigDict(extra="forbid")

    workflow: NonBlank = Field(examples=["ship-order"])
    version: StrictInt | None = Field(
        default=None, ge=1, description="absent: the workflow's latest version when each starts"
    )
    input: Any = Field(
        default=None,
        description="each child's input; templates resolved per item with {$.item} and {$.index}",
        examples=[{"order": "{$.item}", "position": "{$.index}"}],
    )


class ForEachStep(ActionBase):
    """Runs ``body`` once per item of ``items``, at most ``concurrency`` at a time; its
    output is the list of the items' outputs, in the items' order."""

    type: Literal["system"]
    name: Literal["forEach"]
    items: str | list[Any] = Field(
        description='one reference, such as "{$.input.orders}", or a literal list',
        examples=["{$.input.orders}"],
    )
    concurrency: StrictInt | None = Field(
        default=None, ge=1, description="items open at once (default ORCHY_FOR_EACH_CONCURRENCY)"
    )
    onItemFailure: Literal["fail", "collect"] | None = Field(
        default=None,
        description='"fail" (default): the first failed item fails the for-each; "collect": '
        'its entry in the output is {"error": ...}',
    )
    filter: Condition | None = None
    body: ForEachBody | ForEachSubWorkflowBody


class DelayStep(ActionBase):
    """Continues after ``delaySeconds`` (a durable timer)."""

    type: Literal["system"]
    name: Literal["delay"]
    delaySeconds: Seconds = Field(ge=0)


class WaitStep(ActionBase):
    """Waits for ``POST /flow/{id}/events/{event}``; after ``timeoutSeconds`` (if given) it
    continues with ``{"timedOut": true}`` on the ``default`` branch."""

    type: Literal["system"]
    name: Literal["wait"]
    event: NonBlank
    timeoutSeconds: Seconds | None = Field(default=None, gt=0)
    # With a key, also reached by POST /events/{event} naming that key (README: Correlated
    # events); a reference or a literal, resolved when the wait is reached.
    correlationKey: str | None = None


class JavaScriptStep(ActionBase):
    """Runs ``expression`` (a script) on the run's data document, bound to ``$``."""

    type: Literal["system"]
    name: Literal["javascript"]
    expression: NonBlank


class JoinStep(ActionBase):
    """Continues once, when every action in ``joinOn`` has finished."""

    type: Literal["system"]
    name: Literal["join"]
    joinOn: list[ActionId] = Field(min_length=1)


class TerminateParameters(BaseModel):
    """A terminate's ``parameters``: the run's final ``status``, ``reason`` and ``output``."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["COMPLETED", "FAILED"]
    reason: str | None = Field(
        default=None, description="text, may hold {$...} references", examples=["rejected"]
    )
    output: Any = Field(default=None, description="COMPLETED only: the run's output")


class TerminateStep(ActionBase):
    """Ends the run at once with ``parameters.status`` and ``reason``: whatever is still
    open in it is closed, as ``POST /flow/{id}/terminate`` closes it."""

    type: Literal["system"]
    name: Literal["terminate"]
    parameters: TerminateParameters
    next: dict[str, list[ActionId]] | None = Field(
        default=None, max_length=0, description="none: terminate ends the run"
    )


class SubWorkflowStep(ActionBase):
    """Starts a run of ``workflow`` with ``parameters`` (resolved) as its input and waits for
    it: its output becomes this action's; a child that fails or is terminated fails this
    action (``error`` branch). Ending this run terminates the child."""

    type: Literal["system"]
    name: Literal["subWorkflow"]
    workflow: NonBlank = Field(examples=["payment"])
    version: StrictInt | None = Field(
        default=None, ge=1, description="absent: the workflow's latest version when it starts"
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="the child run's input; templates as in a user action's parameters",
        examples=[{"orderId": "{$.input.orderId}"}],
    )


SYSTEM_STEPS: dict[str, type[ActionBase]] = {
    "switch": SwitchStep,
    "delay": DelayStep,
    "wait": WaitStep,
    "javascript": JavaScriptStep,
    "join": JoinStep,
    "terminate": TerminateStep,
    "if": IfStep,
    "while": WhileStep,
    "subWorkflow": SubWorkflowStep,
    "forEach": ForEachStep,
}


def _action_kind(action: Any) -> str | None:
    """``user``, or the system action's name: the tag that picks the model."""
    if isinstance(action, dict):
        kind, name = action.get("type"), action.get("name")
    else:
        kind, name = getattr(action, "type", None), getattr(action, "name", None)
    if kind == USER:
        return USER
    return name if kind == SYSTEM and isinstance(name, str) else None


Action = Annotated[
    Annotated[UserAction, Tag(USER)]
    | Annotated[SwitchStep, Tag("switch")]
    | Annotated[DelayStep, Tag("delay")]
    | Annotated[WaitStep, Tag("wait")]
    | Annotated[JavaScriptStep, Tag("javascript")]
    | Annotated[JoinStep, Tag("join")]
    | Annotated[TerminateStep, Tag("terminate")]
    | Annotated[IfStep, Tag("if")]
    | Annotated[WhileStep, Tag("while")]
    | Annotated[SubWorkflowStep, Tag("subWorkflow")]
    | Annotated[ForEachStep, Tag("forEach")],
    Discriminator(_action_kind),
]

NOTIFICATION_EXAMPLE: dict[str, Any] = {
    "name": "notificationWorkflow",
    "rootAction": 1,
    "actions": [
        {
            "id": 1,
            "type": "user",
            "name": "query-db",
            "parameters": {"userId": "{$.input.userId}"},
            "next": {"default": [2]},
        },
        {
            "id": 2,
            "type": "system",
            "name": "switch",
            "expression": "{$.1.output.user.gender}",
            "next": {"MALE": [3], "FEMALE": [4]},
        },
        {"id": 3, "type": "system", "name": "delay", "delaySeconds": 10, "next": {"default": [5]}},
        {
            "id": 4,
            "type": "system",
            "name": "wait",
            "event": "open",
            "timeoutSeconds": 20,
            "next": {"default": [5]},
        },
        {"id": 5, "type": "user", "name": "sendSms", "parameters": {"to": "{$.1.output.phone}"}},
    ],
}


class WorkflowDefinition(BaseModel):
    """A workflow: a graph of actions from ``rootAction``, in Orchy's JSON format; its only
    cycles are loops that a condition can leave."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [NOTIFICATION_EXAMPLE]})

    name: NonBlank
    rootAction: ActionId
    actions: list[Action] = Field(min_length=1)
    output: Any = Field(
        default=None, description="a template for the run's output, resolved when it completes"
    )
    vars: dict[str, Any] | None = Field(
        default=None,
        description="workflow variables: name -> initial value, read as {$.vars.<name>}",
        examples=[{"count": 0, "items": []}],
    )
    searchable: list[Annotated[str, Field(pattern=SEARCHABLE_PATH)]] | None = Field(
        default=None,
        description="paths GET /flow finds runs by: '$.input.<key>[.<key>...]' (the run's "
        "input) or '$.vars.<name>' (a declared variable, indexed again whenever it is set)",
        examples=[["$.input.email", "$.vars.orderId"]],
    )


class StoredWorkflow(WorkflowDefinition):
    """A registered definition as it was posted, with its version."""

    version: int
