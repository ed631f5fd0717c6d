"""Turns stored runs into the shapes of the API."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from app.api.models import (
    ActionView,
    ExecutionView,
    FlowSummary,
    FlowView,
    HistoryEntry,
    RunLink,
)
from app.definition import WorkflowDef
from app.engine.run_output import run_output
from app.engine.snapshot import Execution, RunSnapshot
from app.engine.status import ActionStatus, RunStatus

MS_PER_SECOND = 1000


def iso(ms: str | int | None) -> str | None:
    if ms is None or ms == "":
        return None
    moment = datetime.fromtimestamp(int(ms) / MS_PER_SECOND, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# GET /flow/{id} lists at most this many children when its run has no settings at hand.
DEFAULT_MAX_CHILDREN = 100


def flow_view(
    snapshot: RunSnapshot, workflow: WorkflowDef | None, max_children: int = DEFAULT_MAX_CHILDREN
) -> FlowView:
    fields = snapshot.fields
    document = snapshot.document()
    actions = {}
    for action_id in snapshot.action_ids():
        actions[str(action_id)] = ActionView(
            status=ActionStatus(snapshot.action_field(action_id, "s") or ""),
            attempts=int(snapshot.action_field(action_id, "n") or 0),
            input=snapshot.received(action_id),
            output=snapshot.output(action_id),
            error=snapshot.action_field(action_id, "e"),
            executions=snapshot.executions(action_id),
        )
    output = None
    if snapshot.status is RunStatus.COMPLETED:
        template = None if workflow is None else workflow.output
        output = run_output(snapshot, template, document)
    children = snapshot.child_executions()
    for _, action_id, child, item in children:  # in seq order: the latest one's child stays
        if not item:  # a for-each's items are its children, not its action's child
            actions[str(action_id)].child = child
    parent = snapshot.parent
    return FlowView(
        id=snapshot.flow_id,
        name=snapshot.name,
        version=snapshot.version,
        status=snapshot.status,
        reason=fields.get("reason", ""),
        input=snapshot.input(),
        data=document,
        vars=snapshot.vars(),
        output=output,
        actions=actions,
        createdAt=iso(fields["createdAt"]) or "",
        updatedAt=iso(fields["updatedAt"]) or "",
        finishedAt=iso(fields.get("finishedAt")),
        parent=None if parent is None else RunLink(flowId=parent[0], actionId=parent[2]),
        children=[
            RunLink(flowId=child, actionId=action_id)
            for _, action_id, child, _ in children[:max_children]
        ],
        childrenCount=len(children),
        rerunOf=fields.get("rerunOf"),
    )


def execution_view(execution: Execution) -> ExecutionView:
    # A waiting system action counts generations in its attempt field (a wait that got its
    # event is at 2), not attempts: as the run's view of its action, it made one.
    attempts = execution.attempt if execution.queue is not None else 1
    return ExecutionView(
        seq=execution.seq,
        status=ActionStatus(execution.status),
        attempts=attempts,
        input=None if execution.input_json is None else orjson.loads(execution.input_json),
        output=None if execution.output_json is None else orjson.loads(execution.output_json),
        error=execution.error,
        startedAt=iso(execution.created_ms),
        endedAt=iso(execution.ended_ms),
    )


def flow_summary(snapshot: RunSnapshot) -> FlowSummary:
    fields = snapshot.fields
    return FlowSummary(
        id=snapshot.flow_id,
        name=snapshot.name,
        version=snapshot.version,
        status=snapshot.status,
        createdAt=iso(fields["createdAt"]) or "",
        updatedAt=iso(fields["updatedAt"]) or "",
    )


def history_entry(raw: str) -> HistoryEntry:
    entry = orjson.loads(raw)
    entry["at"] = iso(entry.get("at"))
    return HistoryEntry(**entry)
