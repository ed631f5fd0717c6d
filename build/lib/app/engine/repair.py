"""Repair of runs that ended badly: ``retry`` lets a FAILED or TERMINATED run go on from
what failed or was interrupted, with fresh attempts, keeping all that completed; ``rerun``
starts a new run of the same workflow version and input (or a new input).

What a retry starts again (each as a new execution, at its first attempt):
- every execution the run's end closed (a task queued or running, a delay, a wait, a join
  still waiting, a for-each, a sub-workflow waiting for its child when the run was
  terminated or failed elsewhere): marked ``x:<seq>:cl`` by common.lua;
- in a FAILED run, the failure that failed it: the latest execution of an action that
  FAILED with no ``error`` branch to take (or whose error is the run's reason).
A user task gets its last resolved input again (or the one the request gives); a system
action is planned again from the run's data as it is now (a delay waits its whole time
again); a sub-workflow starts a new child run; a for-each goes on (its FAILED items start
again, its COMPLETED ones are kept)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.definition import ERROR_BRANCH, ActionType, ItemBody, WorkflowDef
from app.engine.document import Document
from app.engine.errors import Conflict, Invalid, NotFound, TooLarge
from app.engine.ids import new_flow_id
from app.engine.planner import Plan, dumps
from app.engine.snapshot import Execution, RunSnapshot
from app.engine.status import ActionStatus, RunStatus
from app.jsontypes import JSON
from app.store import PlannedOp
from app.store.store import ForEachRetry, RunRetry

if TYPE_CHECKING:
    from app.engine.engine import Engine

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TERMINATED})
CLOSED_FIELD = "cl"  # x:<seq>:cl, an execution closed by the run's end (common.lua)


@dataclass(frozen=True)
class Retried:
    """What a retry started again: the ids of the actions, in the order of their executions."""

    actions: list[int]


def retried_executions(snapshot: RunSnapshot, workflow: WorkflowDef) -> list[Execution]:
    """The executions a retry of the (ended) run starts again, in their order."""
    fields = snapshot.fields
    reason = fields.get("reason", "")
    found = []
    for seq in range(1, int(fields.get("seq") or 0) + 1):
        execution = snapshot.execution(seq)
        if execution is None or execution.parent is not None:  # items go with their for-each
            continue
        if execution.status != ActionStatus.FAILED:
            continue
        closed = f"x:{seq}:{CLOSED_FIELD}" in fields
        latest = fields.get(f"a:{execution.action_id}:x") == str(seq)
        action = workflow.actions.get(execution.action_id)
        unhandled = action is not None and (
            ERROR_BRANCH not in action.next or execution.error == reason
        )
        if closed or (snapshot.status is RunStatus.FAILED and latest and unhandled):
            found.append(execution)
    return found


def _inputs_by_action(
    executions: list[Execution],
    workflow: WorkflowDef,
    single: JSON | None,
    given: Mapping[str, JSON] | None,
) -> dict[int, JSON]:
    """The new inputs of retried user tasks, by action id: ``given`` names them by id;
    ``single`` is for the one user task retried."""
    users = [
        e.action_id for e in executions if workflow.actions[e.action_id].type is ActionType.USER
    ]
    chosen: dict[int, JSON] = {}
    if single is not None:
        if len(users) != 1:
            which = ", ".join(str(action) for action in users) or "none"
            raise Invalid(
                f"input: it is for the one user task retried, and the retried user tasks "
                f"are: {which}; name each by its action id in inputs"
            )
        chosen[users[0]] = single
    for key, value in (given or {}).items():
        if not key.isdigit() or int(key) not in users:
            raise Invalid(
                f"inputs.{key}: not the id of a user task this retry starts again "
                f"(those are: {', '.join(str(action) for action in users) or 'none'})"
            )
        chosen[int(key)] = value
    return chosen


async def _plan_retry(
    engine: Engine,
    snapshot: RunSnapshot,
    workflow: WorkflowDef,
    executions: list[Execution],
    by: str,
    inputs: dict[int, JSON],
) -> RunRetry:
    document = Document.of_run(snapshot)
    plan = Plan()
    replaced: list[int] = []
    for_each: list[ForEachRetry] = []
    for execution in executions:
        action = workflow.actions[execution.action_id]
        if action.for_each is not None:
            body = action.for_each.body
            queue = body.name if isinstance(body, ItemBody) else None
            timeout_ms = 0
            if queue is not None:
                timeout_ms = (await engine.catalog.action(queue)).poll_timeout_ms
            concurrency = action.for_each.concurrency or engine.settings.for_each_concurrency
            for_each.append(ForEachRetry(execution.seq, queue, timeout_ms, concurrency))
            continue
        replaced.append(execution.seq)
        if action.type is ActionType.USER:
            queue = execution.queue or action.name
            payload = (
                dumps(inputs[action.id]) if action.id in inputs else execution.input_json or "{}"
            )
            plan.ops.append(PlannedOp("user", action.id, queue, payload, queue=queue))
        else:
            await engine.planner.start(workflow, [action.id], document, plan)
    ops = await engine._with_poll_timeouts(plan.ops)
    change = RunRetry(
        flow_id=snapshot.flow_id,
        expected_rev=snapshot.fields.get("rev", ""),
        by=by,
        fail_reason=plan.fail_reason,
        replaced=replaced,
        actions=[execution.action_id for execution in executions],
        for_each=for_each,
        ops=ops,
    )
    return change


async def retry(
    engine: Engine,
    flow_id: str,
    by: str,
    input_data: JSON | None = None,
    inputs: Mapping[str, JSON] | None = None,
) -> Retried:
    """Lets the FAILED or TERMINATED run ``flow_id`` go on (see the module's docstring).
    ``input_data`` replaces the input of the one user task retried; ``inputs`` those of
    retried user tasks by action id. 404 for an unknown run; 409 for one that is not FAILED
    or TERMINATED, that is a sub-workflow's child (retry its parent), or that has nothing to
    retry."""
    for _ in range(engine.settings.moved_retry_rounds + 1):
        snapshot = await engine.snapshot(flow_id)
        if snapshot.status not in RETRYABLE:
            raise Conflict(
                f"flow {flow_id!r} is {snapshot.status.value}: only a FAILED or TERMINATED "
                "run can be retried"
            )
        if snapshot.parent is not None:
            raise Conflict(
                f"flow {flow_id!r} is a sub-workflow run of {snapshot.parent[0]!r}: retry "
                "that run, whose sub-workflow action then starts a new child"
            )
        workflow = await engine.catalog.workflow(snapshot.name, snapshot.version)
        if workflow is None:
            raise NotFound(f"workflow {snapshot.name!r} version {snapshot.version} not found")
        executions = retried_executions(snapshot, workflow)
        if not executions:
            raise Conflict(f"flow {flow_id!r} has no failed or interrupted action to retry")
        chosen = _inputs_by_action(executions, workflow, input_data, inputs)
        change = await _plan_retry(engine, snapshot, workflow, executions, by, chosen)
        answer = await engine.store.retry(change)
        if answer == "ok":
            engine._announce(flow_id, change.ops)
            partition = engine.store.keys.partition_of(flow_id)
            for spec in change.for_each:
                if spec.queue is not None:
                    engine.wakeups.notify(spec.queue, partition)
            return Retried(list(change.actions))
        if answer == "missing":
            raise NotFound(f"flow {flow_id!r} not found")
        if answer != "moved":
            raise Conflict(
                f"flow {flow_id!r} is {answer}: only a FAILED or TERMINATED run can be retried"
            )
    raise Conflict(f"flow {flow_id!r} kept changing while its retry was planned; try again")


async def rerun(engine: Engine, flow_id: str, by: str, input_data: JSON | None = None) -> str:
    """Starts a new run of the workflow version of run ``flow_id`` with its input (or
    ``input_data``); both runs' histories say so. Returns the new run's id."""
    snapshot = await engine.snapshot(flow_id)
    workflow = await engine.catalog.workflow(snapshot.name, snapshot.version)
    if workflow is None:
        raise NotFound(f"workflow {snapshot.name!r} version {snapshot.version} not found")
    chosen = snapshot.input() if input_data is None else input_data
    input_json = dumps(chosen)
    if len(input_json) > engine.settings.max_input_bytes:
        raise TooLarge(
            f"input is {len(input_json)} bytes; the limit is "
            f"{engine.settings.max_input_bytes} bytes (ORCHY_MAX_INPUT_BYTES)"
        )
    new_id = new_flow_id()
    origin = PlannedOp("rerun", 0, flow_id, by)
    start = await engine.plan_start(workflow, new_id, chosen, input_json, first_ops=[origin], by=by)
    await engine.commit_starts([start])
    await engine.store.note_rerun(flow_id, new_id, by)
    return new_id


__all__ = ["Retried", "rerun", "retried_executions", "retry"]
