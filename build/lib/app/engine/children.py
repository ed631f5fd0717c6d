"""Sub-workflows: the hand-offs between a parent run and its child runs.

A parent and its child live in different partitions (different Redis Cluster slots), so no
script can change both. Each hand-off is a durable timer instead, added atomically with the
change that calls for it and removed only once its handler has acted; every handler may run
twice (a server killed midway, a claim that expired) and acts once:

- ``spawn|<parent>|<seq>|1`` (added when a sub-workflow execution starts waiting): starts
  the child under an id computed from the parent and the seq (a start of an existing id
  does nothing), then records the id on the execution and removes the timer in one script.
- ``cend|<child>|0|1`` (added by the child's end, ``finish_run``): delivers the child's
  status, output and reason to the parent's execution, which takes them only while it
  waits and has not been told (child_ended.lua); its step timer then continues it
  (``Engine._finish_waiting``, through :func:`child_result`), and the cend timer goes.
- ``kill|<parent>|<seq>|1`` (added when the parent ends with the execution open): ends
  the child, whose own end reaches its own children the same way.

A for-each whose body is a sub-workflow (app/actions/for_each.py) uses the same timers for
each item, an execution of the for-each; only the end differs: child_ended.lua gives an
item an ``istep|<parent>|<seq>|2`` timer instead of a step, and ``Engine._finish_item_child``
ends the item with :func:`item_end`, planned from the item's own fields (a spawn and a kill
read those only too), so that items never read the parent's whole run, which grows with
them; an item whose child cannot start fails the same way.

The pieces name an execution by its seq, whatever action owns it: :meth:`Children.start_child`
starts the child that an execution's request (its recorded input, see
``app.actions.sub_workflow.child_request``) names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from app.definition import DEFAULT_BRANCH
from app.engine import outcomes
from app.engine.audit import run_as
from app.engine.ids import TimerKind, TimerMember, child_flow_id
from app.engine.planner import dumps
from app.engine.run_output import run_output
from app.engine.snapshot import Execution, RunSnapshot
from app.engine.status import ActionStatus, RunStatus
from app.jsontypes import JSON
from app.store import PlannedOp
from app.store.store import Outcome, Transition

if TYPE_CHECKING:
    from app.engine.engine import Engine

log = logging.getLogger("orchy.engine")


@dataclass(frozen=True)
class Refused:
    """Why a child run was not started (the execution fails with it)."""

    reason: str


def child_result(execution: Execution) -> tuple[JSON, str | None]:
    """What a sub-workflow execution whose child has ended gives: (output, None) when the
    child COMPLETED, else (None, the error that fails the execution). A completed child whose
    output was too large to hand over comes without one (see ``Children.child_ended``)."""
    if execution.child_status == RunStatus.COMPLETED and execution.child_output_json:
        return orjson.loads(execution.child_output_json or "null"), None
    return None, (
        f"sub-workflow {execution.child_workflow} run {execution.child_id} "
        f"{execution.child_status}: {execution.child_reason or ''}"
    )


def item_op(execution: Execution) -> PlannedOp:
    """The op that counts a sub-workflow item that ended and starts the next (common.lua)."""
    return PlannedOp("item", execution.action_id, payload=str(execution.seq))


def item_end(
    flow_id: str, execution: Execution, member: TimerMember, output: JSON, error: str | None
) -> Transition:
    """Ends a for-each item whose body is a sub-workflow (its child ended, or could not
    start: ``error``), with the "item" op that counts it and starts the next item, planned
    from the item's own fields: the for-each, not the item, follows a branch."""
    if error is None:
        outcome = Outcome(ActionStatus.COMPLETED, dumps(output), branch=DEFAULT_BRANCH)
    else:
        outcome = outcomes.failed(error)
    return Transition(
        flow_id,
        execution.seq,
        ActionStatus.WAITING,
        member.generation,
        outcome,
        (item_op(execution),),
        timer_member=str(member),
        held_member=str(member),
    )


class Children:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings

    async def handle(self, member: TimerMember) -> str:
        """Acts on a spawn, cend or kill timer; safe to call twice for one member."""
        if member.kind is TimerKind.SPAWN:
            return await self.spawn(member)
        if member.kind is TimerKind.CHILD_END:
            return await self.child_ended(member)
        return await self.kill(member)

    # -- spawn ----------------------------------------------------------------------

    async def spawn(self, member: TimerMember) -> str:
        # A for-each item's spawn reads the item, not the run that holds every item.
        [fields] = await self.store.read_executions([(member.flow_id, member.seq)])
        if f"x:{member.seq}:p" not in fields:
            fields = await self.store.read_run(member.flow_id)
        parent = RunSnapshot(member.flow_id, fields)
        execution = parent.execution(member.seq) if parent.fields else None
        child_id = child_flow_id(member.flow_id, member.seq)
        if execution is None or execution.child_workflow is None:
            await self.store.drop_run_timer(member.flow_id, str(member))
            return "missing"
        if parent.is_terminal:
            # A handler that died after starting the child, before recording it, left a
            # child the parent's kill timer may have missed.
            await self._end_child(child_id, parent)
            await self.store.drop_run_timer(member.flow_id, str(member))
            return "terminal"
        if execution.status != ActionStatus.WAITING or execution.attempt != 1:
            # Told of the child's end already (which records its id): nothing left to do.
            await self.store.drop_run_timer(member.flow_id, str(member))
            return "stale"
        started = await self.start_child(parent, execution)
        if isinstance(started, Refused):
            if execution.parent is not None:  # a for-each item: it fails, and is counted
                change = item_end(member.flow_id, execution, member, None, started.reason)
                [applied] = await self.engine._commit([change])
                return applied.status
            return await self.engine._fail_waiting(parent, execution, member, started.reason)
        answer = await self.store.child_started(member.flow_id, member.seq, started, str(member))
        if answer == "terminal":  # ended meanwhile: its kill timer may have come too soon
            await self._end_child(started, parent)
        return answer

    async def start_child(self, parent: RunSnapshot, execution: Execution) -> str | Refused:
        """Starts the child run that execution ``execution`` of ``parent`` asks for (once: a
        second call finds it started); returns its id, or why it cannot start."""
        request = orjson.loads(execution.input_json or "null")
        if not isinstance(request, dict) or not isinstance(request.get("workflow"), str):
            return Refused(f"execution {execution.seq} names no sub-workflow to start")
        name = request["workflow"]
        version = request.get("version")
        child_input = request.get("input")
        depth = parent.depth + 1
        most = self.settings.max_subworkflow_depth
        if depth > most:
            return Refused(
                f"sub-workflow {name} not started: it would be {depth} levels deep; the "
                f"limit is {most} (ORCHY_MAX_SUBWORKFLOW_DEPTH)"
            )
        workflow = await self.engine.catalog.workflow(
            name, version if isinstance(version, int) else None
        )
        if workflow is None:
            which = "" if version is None else f" version {version}"
            return Refused(f"sub-workflow {name}{which} not found")
        input_json = dumps(child_input)
        if len(input_json) > self.settings.max_input_bytes:
            return Refused(
                f"sub-workflow {name} not started: its input is {len(input_json)} bytes; the "
                f"limit is {self.settings.max_input_bytes} bytes (ORCHY_MAX_INPUT_BYTES)"
            )
        child_id = child_flow_id(parent.flow_id, execution.seq)
        link = PlannedOp("child", execution.action_id, parent.flow_id, str(execution.seq), depth)
        start = await self.engine.plan_start(
            workflow, child_id, child_input, input_json, first_ops=[link], by=run_as(parent.flow_id)
        )
        await self.engine.commit_starts([start])
        return child_id

    # -- the child's end --------------------------------------------------------------

    async def child_ended(self, member: TimerMember) -> str:
        child = RunSnapshot(member.flow_id, await self.store.read_run(member.flow_id))
        link = child.parent if child.fields else None
        if link is None or not child.is_terminal:
            await self.store.drop_run_timer(member.flow_id, str(member))
            return "missing"
        parent_id, seq, _ = link
        output_json = ""
        reason = child.fields.get("reason", "")
        if child.status is RunStatus.COMPLETED:
            workflow = await self.engine.catalog.workflow(child.name, child.version)
            template = None if workflow is None else workflow.output
            output_json = dumps(run_output(child, template))
            most = self.settings.max_output_bytes
            if len(output_json) > most:  # as a worker's output would be refused
                reason = (
                    f"its output is {len(output_json)} bytes; the limit is {most} bytes "
                    "(ORCHY_MAX_OUTPUT_BYTES)"
                )
                output_json = ""
        answer = await self.store.child_ended(
            parent_id,
            seq,
            child.flow_id,
            child.status.value,
            output_json,
            reason,
        )
        await self.store.drop_run_timer(member.flow_id, str(member))
        return answer

    # -- the parent's end -------------------------------------------------------------

    async def kill(self, member: TimerMember) -> str:
        # The run's status and the execution's child: not the whole run (a for-each's items).
        [fields] = await self.store.read_executions([(member.flow_id, member.seq)])
        parent = RunSnapshot(member.flow_id, fields)
        execution = parent.execution(member.seq) if parent.fields else None
        child_id = (execution.child_id if execution else None) or child_flow_id(
            member.flow_id, member.seq
        )
        answer = await self._end_child(child_id, parent)
        await self.store.drop_run_timer(member.flow_id, str(member))
        return answer

    async def _end_child(self, child_id: str, parent: RunSnapshot) -> str:
        """Terminates the child (an ended or never started one is left as it is)."""
        status = parent.fields.get("status", "gone")
        return await self.store.terminate(
            child_id, f"parent run {parent.flow_id} {status}", by=run_as(parent.flow_id)
        )

    async def end_child(self, flow_id: str, seq: int) -> str:
        """Terminates the child of execution ``seq`` of ``flow_id``, if it has one running."""
        parent = RunSnapshot(flow_id, await self.store.read_run(flow_id))
        return await self._end_child(child_flow_id(flow_id, seq), parent)
