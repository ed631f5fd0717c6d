"""Turns "these actions start now" into the ops of one atomic transition.

User actions get their parameters resolved and are queued. System actions are run at once:
those that finish now (switch, javascript) are followed in the same plan, so a chain of them
costs one Redis call; those that wait (delay, wait, join) become durable ops. A large data
document is read in other processes, so that JSONPath over one run's data never stalls the
server.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

import orjson

from app.actions import get_action
from app.actions.base import (
    AwaitChild,
    AwaitEvent,
    AwaitJoin,
    Done,
    End,
    Fail,
    Outcome,
    Sleep,
    StartItems,
)
from app.actions.for_each import ForEachAction, ItemLimits, expand, expand_json
from app.actions.while_ import BODY_BRANCH
from app.definition import ERROR_BRANCH, ActionDef, ActionType, WorkflowDef
from app.engine.document import Document
from app.engine.document_pool import DocumentPool
from app.engine.params import resolve, resolve_json
from app.engine.variables import MutationError, apply_set_vars
from app.jsontypes import JSON
from app.store import PlannedOp

MS_PER_SECOND = 1000
NO_TIMEOUT = -1


def dumps(value: JSON) -> str:
    return orjson.dumps(value).decode()


def limit_reason(max_executions: int) -> str:
    """Why a run that reached its limit of executions FAILS (common.lua words it too)."""
    return f"run reached its limit of {max_executions} executions (ORCHY_MAX_RUN_EXECUTIONS)"


@dataclass
class Plan:
    ops: list[PlannedOp] = field(default_factory=list)
    fail_reason: str = ""
    ended: bool = False  # a terminate action ended the run: nothing after it is planned
    executions: int = 0  # the executions planned: actions reached


def run_on_document(action: ActionDef, document_json: str) -> Outcome:
    """Runs a system action that reads the document, given as JSON text: what the
    processes of a :class:`DocumentPool` run."""
    implementation = get_action(action.name)
    if implementation is None:
        return Fail(f"unknown system action {action.name!r}")
    return implementation.run(action, orjson.loads(document_json))


class Planner:
    def __init__(
        self,
        executor: Executor,
        documents: DocumentPool,
        large_document_size: int,
        max_var_bytes: int = 1024 * 1024,
        item_limits: ItemLimits | None = None,
        max_executions: int | None = None,
    ) -> None:
        self.executor = executor  # scripts (blocking system actions)
        # A document this large is read in ``documents``: parsing it, JSONPath over it and
        # copies of what that finds would stall every other request.
        self.documents = documents
        self.large_document_size = large_document_size
        self.max_var_bytes = max_var_bytes
        self.item_limits = item_limits or ItemLimits()
        # A run's limit of executions (ORCHY_MAX_RUN_EXECUTIONS), None for none: a loop of
        # system actions only would otherwise be planned for ever.
        self.max_executions = max_executions

    async def start(
        self, workflow: WorkflowDef, ids: list[int], document: Document, plan: Plan | None = None
    ) -> Plan:
        """Plans ``ids`` (added to ``plan`` when given)."""
        plan = plan or Plan()
        await self._reach(workflow, ids, document, plan)
        return plan

    def set_vars(
        self, action: ActionDef, output: JSON, document: Document
    ) -> list[PlannedOp] | str:
        """Applies the action's ``setVars`` for an execution that completed with ``output``:
        the ops that write the variables (the document has them already), or why a mutation
        cannot apply (the document is then unchanged)."""
        if not action.set_vars:
            return []
        try:
            changed, ops = apply_set_vars(
                action.set_vars, action.id, output, document.value, self.max_var_bytes
            )
        except MutationError as error:
            return str(error)
        document.set_vars(changed)
        return ops

    async def _reach(
        self, workflow: WorkflowDef, ids: list[int], document: Document, plan: Plan
    ) -> None:
        """Plans ``ids`` and every step that the system actions among them lead to, depth
        first in ``next`` order. The steps still to plan are kept on a list rather than on
        Python's stack, so a chain of system steps may be as long as its definition."""
        pending = list(reversed(ids))
        while pending and not plan.fail_reason and not plan.ended:
            action = workflow.actions[pending.pop()]
            plan.executions += 1
            if self.max_executions is not None and plan.executions > self.max_executions:
                plan.fail_reason = limit_reason(self.max_executions)
                break
            if action.type is ActionType.USER:
                await self._queue_user_action(action, document, plan)
            else:
                reached = await self._run_system_action(action, document, plan)
                pending.extend(reversed(reached))

    def _is_large(self, document: Document) -> bool:
        return document.size() >= self.large_document_size

    async def _queue_user_action(self, action: ActionDef, document: Document, plan: Plan) -> None:
        warnings: list[str] = []
        if not action.references_data:  # resolves to itself: no document is built
            payload = dumps(action.parameters)
        elif self._is_large(document):
            payload, warnings = await self.documents.call(
                resolve_json, action.parameters, document.json()
            )
        else:
            resolution = resolve(action.parameters, document.value)
            payload, warnings = dumps(resolution.value), resolution.warnings
        for warning in warnings:
            plan.ops.append(PlannedOp("note", action.id, payload=warning))
        plan.ops.append(PlannedOp("user", action.id, action.name, payload, queue=action.name))

    async def _run_system_action(
        self, action: ActionDef, document: Document, plan: Plan
    ) -> list[int]:
        """Runs a system action now; returns the ids it leads to at once (none when it
        waits, or when the run fails or ends)."""
        implementation = get_action(action.name)
        if implementation is None:  # validation keeps unknown names out; a stale cache may not
            outcome: Outcome = Fail(f"unknown system action {action.name!r}")
        elif isinstance(implementation, ForEachAction):  # planned with the server's limits
            if self._is_large(document):
                outcome = await self.documents.call(
                    expand_json, action, document.json(), self.item_limits
                )
            else:
                outcome = expand(action, document.value, self.item_limits)
        elif implementation.blocking:
            reads = implementation.reads_document_of(action)

            def run() -> Outcome:  # the document is built in the script's thread too
                return implementation.run(action, document.value if reads else {})

            outcome = await asyncio.get_running_loop().run_in_executor(self.executor, run)
        elif not implementation.reads_document_of(action):
            outcome = implementation.run(action, {})
        elif self._is_large(document):
            outcome = await self.documents.call(run_on_document, action, document.json())
        else:
            outcome = implementation.run(action, document.value)
        # Now, before the document changes: the input may be (part of) it.
        received = "" if outcome.input is None else dumps(outcome.input)
        match outcome:
            case Done(output=output, branch=branch):
                output_json = dumps(output)
                document.set_output(action.id, output, output_json)
                var_ops = self.set_vars(action, output, document)
                if isinstance(var_ops, str):
                    plan.ops.append(PlannedOp("failed", action.id, payload=var_ops, input=received))
                    return self._failure_branch(action, var_ops, document, plan)
                plan.ops.append(PlannedOp("done", action.id, branch, output_json, input=received))
                plan.ops += var_ops
                if action.loop_joins and branch == BODY_BRANCH:  # a while starts a pass
                    joins = ",".join(str(join) for join in action.loop_joins)
                    plan.ops.append(PlannedOp("loop", action.id, payload=joins))
                return action.branch(branch)
            case Fail(error=error):
                plan.ops.append(PlannedOp("failed", action.id, payload=error, input=received))
                return self._failure_branch(action, error, document, plan)
            case Sleep(seconds=seconds):
                sleep_ms = round(seconds * MS_PER_SECOND)
                plan.ops.append(PlannedOp("sleep", action.id, number=sleep_ms, input=received))
            case AwaitEvent(event=event, timeout_seconds=timeout, correlation_key=key):
                timeout_ms = NO_TIMEOUT if timeout is None else round(timeout * MS_PER_SECOND)
                # A correlated wait's payload is its key (see apply_ops in common.lua).
                plan.ops.append(
                    PlannedOp(
                        "wait", action.id, event, key or "", number=timeout_ms, input=received
                    )
                )
            case AwaitJoin(join_on=join_on):
                payload = ",".join(str(joined) for joined in join_on)
                plan.ops.append(PlannedOp("join", action.id, payload=payload, input=received))
            case StartItems(queue=queue, header=header, lines=lines, warnings=warnings):
                for warning in warnings:
                    plan.ops.append(PlannedOp("note", action.id, payload=warning))
                payload = "\n".join([header, *lines])
                if outcome.workflow is not None:  # a child run per item (spawn timers)
                    plan.ops.append(
                        PlannedOp("subeach", action.id, outcome.workflow, payload, input=received)
                    )
                else:
                    plan.ops.append(
                        PlannedOp("each", action.id, queue, payload, queue=queue, input=received)
                    )
            case AwaitChild(workflow=workflow):
                # The child is started by the execution's spawn timer (see children.py).
                plan.ops.append(PlannedOp("sub", action.id, workflow, input=received))
            case End(status=status, reason=reason, output=output, gives_output=gives_output):
                own: JSON = {"status": status, "reason": reason}
                if gives_output:
                    own["output"] = output
                plan.ops.append(PlannedOp("done", action.id, "", dumps(own), input=received))
                run_output = dumps(output) if gives_output else ""
                plan.ops.append(PlannedOp("end", action.id, status, reason, input=run_output))
                plan.ended = True
        return []

    async def follow_failure(
        self,
        workflow: WorkflowDef,
        action: ActionDef,
        error: str,
        document: Document,
        plan: Plan,
    ) -> None:
        """Takes the action's ``error`` branch, or fails the run when it has none."""
        await self._reach(
            workflow, self._failure_branch(action, error, document, plan), document, plan
        )

    @staticmethod
    def _failure_branch(action: ActionDef, error: str, document: Document, plan: Plan) -> list[int]:
        """The ids of the action's ``error`` branch; with none, the run fails."""
        if ERROR_BRANCH in action.next:
            output: JSON = {"error": error}
            document.set_output(action.id, output, dumps(output))
            return action.next[ERROR_BRANCH]
        plan.fail_reason = f"{action.label} failed: {error}"
        return []
