"""Pydantic models of the HTTP boundary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from app.engine.retry import RetryPolicy
from app.engine.status import ActionStatus, RunStatus

# Numbers and booleans of a body are taken as the schema documents them: pydantic's lax mode
# would read "3" or true as 3, "1.5" as 1.5 and 0 or "yes" as a boolean. (An int is a float.)
Integer = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Boolean = Annotated[bool, Strict()]


def _absent(value: Any) -> bool:
    """A field left out of an answer when it has no value (one that only some runs or
    actions have, so that the others keep their shape)."""
    return value is None


class ErrorResponse(BaseModel):
    error: str


class WorkflowRegistered(BaseModel):
    name: str
    version: int
    created: bool = Field(description="False when an identical definition was already stored")


class WorkflowSummary(BaseModel):
    name: str
    latestVersion: int


class ActionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    retryCount: Integer | None = Field(default=None, ge=0)
    retryAfterSeconds: Number | None = Field(default=None, ge=0, allow_inf_nan=False)
    retryPolicy: RetryPolicy | None = None
    timeoutSeconds: Number | None = Field(default=None, gt=0, allow_inf_nan=False)
    pollTimeoutSeconds: Number | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="a queued attempt no worker polls within this long fails and is retried "
        "by the policy; left out: it waits for ever",
    )


class ActionDefinitionOut(BaseModel):
    name: str
    retryCount: int
    retryAfterSeconds: float
    retryPolicy: RetryPolicy
    timeoutSeconds: float
    pollTimeoutSeconds: float | None = None


class ExecuteRequest(BaseModel):
    name: str = Field(min_length=1)
    input: Any = Field(default_factory=dict)
    version: Integer | None = Field(default=None, ge=1)
    idempotencyKey: str | None = Field(default=None, min_length=1)


class RetryRequest(BaseModel):
    input: Any = Field(
        default=None, description="the new input of the one user task the retry starts again"
    )
    inputs: dict[str, Any] | None = Field(
        default=None, description="new inputs of retried user tasks, by action id"
    )


class RetryResponse(BaseModel):
    status: Literal["ok"] = "ok"
    actions: list[int] = Field(description="the ids of the actions started again")


class RerunRequest(BaseModel):
    input: Any = Field(default=None, description="the new run's input (default: the run's)")


class RerunResponse(BaseModel):
    flowId: str


class ExecuteManyRequest(BaseModel):
    name: str = Field(min_length=1)
    inputs: list[Any] = Field(min_length=1, description="one run per input")
    version: Integer | None = Field(default=None, ge=1)


class ExecuteManyResponse(BaseModel):
    flowIds: list[str]


class ExecuteResponse(BaseModel):
    flowId: str
    created: bool = Field(description="False when the idempotency key named an existing run")


class ActionView(BaseModel):
    status: ActionStatus
    attempts: int
    input: Any = Field(
        default=None,
        description="what the latest execution received: a user action's parameters, "
        "resolved; a system action's settings, resolved (see the README)",
    )
    output: Any = None
    error: str | None = None
    executions: int = Field(
        description="how many times the action has run in this run (its executions); "
        "the other fields are its latest execution's",
    )
    child: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="a subWorkflow: the id of the child run its latest execution started "
        "(absent for other actions)",
    )


class ExecutionView(BaseModel):
    """One execution of an action: one time it ran in the run."""

    seq: int = Field(description="the execution's number in the run, from 1")
    status: ActionStatus
    attempts: int = Field(description="attempts of a user action's task (1 for system actions)")
    input: Any = Field(default=None, description="what the execution received, resolved")
    output: Any = Field(default=None, description="its output, once it ended with one")
    error: str | None = None
    startedAt: str | None = Field(default=None, description="when the execution was created")
    endedAt: str | None = Field(default=None, description="when it ended, if it has")


class ExecutionList(BaseModel):
    executions: list[ExecutionView] = Field(description="in seq order")
    total: int = Field(description="executions of the action in the run")
    nextOffset: int | None = Field(description="the offset of the next page; null at the end")


class RunLink(BaseModel):
    """A run started by a subWorkflow action, or the run whose action started this one."""

    flowId: str
    actionId: int


class FlowView(BaseModel):
    id: str
    name: str
    version: int
    status: RunStatus
    reason: str
    input: Any
    data: dict[str, Any]
    vars: dict[str, Any] = Field(
        default_factory=dict, description="the workflow variables' current values"
    )
    output: Any = None
    actions: dict[str, ActionView]
    createdAt: str
    updatedAt: str
    finishedAt: str | None = None
    parent: RunLink | None = Field(
        default=None,
        exclude_if=_absent,
        description="for a run started by a subWorkflow action: that action (absent for "
        "other runs)",
    )
    children: list[RunLink] = Field(
        default_factory=list,
        description="the runs this run's subWorkflow actions (and sub-workflow for-each "
        "items) started, the first ORCHY_VIEW_MAX_CHILDREN (100) of them",
    )
    childrenCount: int = Field(
        default=0, description="how many runs it started, listed in children or not"
    )
    rerunOf: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="for a rerun (POST /flow/{id}/rerun): the run it reruns (absent for "
        "other runs)",
    )


class FlowSummary(BaseModel):
    id: str
    name: str
    version: int
    status: RunStatus
    createdAt: str
    updatedAt: str


class FlowList(BaseModel):
    runs: list[FlowSummary]
    offset: int
    limit: int
    # Give it as ``cursor`` for the next page; null when there is none.
    nextCursor: str | None = None


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    at: str
    event: str
    by: str | None = Field(
        default=None,
        exclude_if=_absent,
        description='who asked for it: the principal\'s name ("anonymous" on a server '
        'without authentication), or "flow:<id>" for a sub-workflow\'s child started or '
        "ended by its parent run; absent from entries of the engine's own work",
    )


class FlowHistory(BaseModel):
    flowId: str
    history: list[HistoryEntry]


class Accepted(BaseModel):
    status: Literal["ok", "held", "delivered", "buffered"]


class PollRequest(BaseModel):
    workerId: str = Field(min_length=1)
    actions: list[str] = Field(min_length=1)
    max: Integer = Field(default=1, ge=1)
    waitSeconds: Number = Field(default=0.0, ge=0, allow_inf_nan=False)


class TaskOut(BaseModel):
    taskId: str
    flowId: str
    actionId: int
    name: str
    attempt: int
    input: Any
    # With ORCHY_OTEL=true: the W3C trace context of the attempt's span, in its run's trace.
    traceparent: str | None = None


class PollResponse(BaseModel):
    tasks: list[TaskOut]


class TakeNextRequest(BaseModel):
    """Lease the tasks these results start to this worker at once, up to ``max``."""

    workerId: str = Field(min_length=1)
    actions: list[str] = Field(min_length=1)
    max: Integer = Field(ge=1)


class CompleteRequest(BaseModel):
    output: dict[str, Any] = Field(default_factory=dict)
    next: TakeNextRequest | None = None


class Completed(BaseModel):
    status: Literal["ok", "held"]
    tasks: list[TaskOut] = Field(
        default_factory=list,
        description="tasks leased at once; present only when the request has next",
    )


class TaskResult(BaseModel):
    """One result in a batch: ``output`` for a completion, or ``error`` for a failure."""

    taskId: str = Field(min_length=1)
    output: dict[str, Any] | None = None
    error: str | None = Field(default=None, min_length=1)
    retryable: Boolean = True

    @model_validator(mode="after")
    def one_of_output_or_error(self) -> TaskResult:
        if (self.output is None) == (self.error is None):
            raise ValueError("give exactly one of output (completed) or error (failed)")
        return self


class ResultsRequest(BaseModel):
    results: list[TaskResult] = Field(min_length=1)
    next: TakeNextRequest | None = None


class ResultStatus(BaseModel):
    taskId: str
    status: int = Field(description="200 applied (or held), 404, 409, 413 as the single routes")
    held: bool = False
    error: str | None = None


class ResultsResponse(BaseModel):
    results: list[ResultStatus]
    tasks: list[TaskOut] = Field(
        default_factory=list, description="tasks leased at once (when the request has next)"
    )


class FailRequest(BaseModel):
    error: str = Field(min_length=1)
    retryable: Boolean = True


class QueueView(BaseModel):
    action: str
    depth: int = Field(description="tasks waiting in the action's queue")
    lastPollAt: str | None = Field(description="when a worker last polled for the action")


class QueueList(BaseModel):
    queues: list[QueueView]


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded (with 503) when Redis fails")
    redis: str = Field(description='"ok", or the error met reaching Redis')


# -- correlated events (POST /events/{event}) --


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="the correlation key the waits name")
    data: Any = Field(default=None, description="the waits' output; none is {}")
    ttlSeconds: Number | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="how long an event that finds no waiting run is kept for waits to come "
        "(ORCHY_EVENT_TTL_SECONDS when left out; 0: not kept)",
    )
    firstOnly: Boolean = Field(
        default=False, description="only the first waiting run (oldest wait) gets it"
    )


class DeliveredTo(BaseModel):
    flowId: str
    actionId: int


class PublishResponse(BaseModel):
    delivered: list[DeliveredTo]
    kept: bool
