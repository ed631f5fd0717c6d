"""The state machine: every change of a run goes through here, and reaches Redis as one
atomic script call whose guard re-checks what was read."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.actions import for_each
from app.definition import DEFAULT_BRANCH, WorkflowDef
from app.engine import outcomes, run_log
from app.engine.catalog import Catalog
from app.engine.children import Children, child_result, item_end
from app.engine.correlation import Correlation, is_correlation_timer
from app.engine.document import Document
from app.engine.errors import Conflict, EngineError, Invalid, NotFound, TooLarge
from app.engine.ids import (
    CHILD_TIMER_KINDS,
    ITEM_SUFFIX,
    LEASE_SECRET_HEX,
    TaskId,
    TimerKind,
    TimerMember,
    idempotent_flow_id,
    lease_secrets,
    new_flow_id,
)
from app.engine.planner import Plan, Planner, dumps
from app.engine.pools import Pools
from app.engine.run_cache import MOVED, RunCache
from app.engine.searchable import start_tokens
from app.engine.snapshot import Execution, RunSnapshot
from app.engine.status import TERMINAL_ACTION, ActionStatus, RunStatus
from app.engine.variables import VARS
from app.engine.wakeups import Wakeups
from app.jsontypes import JSON, JSONObject
from app.settings import Settings
from app.store import LeasedTask, PlannedOp, Store
from app.store.correlation import CorrelationStore
from app.store.store import Applied, Outcome, RunStart, Transition
from app.telemetry.recorder import Telemetry

log = logging.getLogger("orchy.engine")

MS_PER_SECOND = 1000
APPLIED = "ok"  # transition.lua's answer when it applied
LEASE_EXPIRED = "lease expired: no result within the action's timeoutSeconds"
TERMINATED_REASON = "terminated by request"
TASK_ID_SHAPE = "task ids look like <flowId>.<n>.<n>.<secret>, as a poll hands them out"


@dataclass(frozen=True)
class Success:
    output: JSON


@dataclass(frozen=True)
class Failure:
    error: str
    retryable: bool


Result = Success | Failure


@dataclass(frozen=True)
class TakeNext:
    """A worker's offer, sent with its results, to take up to ``most`` of the tasks of
    ``actions`` that those results lead to, leased to it at once instead of queued."""

    worker_id: str
    actions: frozenset[str]
    most: int


@dataclass(frozen=True)
class AppliedResults:
    answers: list[str | EngineError]  # per result: what the single call returns or raises
    leased: list[LeasedTask]  # the tasks leased at once to the worker of ``TakeNext``


def _result_from_held(held_json: str) -> Result:
    held = orjson.loads(held_json)
    if "output" in held:
        return Success(held["output"])
    return Failure(held["error"], bool(held["retryable"]))


_HELD_AS_THEMSELVES = frozenset({TimerKind.LEASE, TimerKind.POLL_TIMEOUT})
# Timers of a user task's attempt (see Engine._timer_fields).
_TASK_TIMERS = frozenset(
    {TimerKind.LEASE, TimerKind.POLL_TIMEOUT, TimerKind.RESULT, TimerKind.ENQUEUE}
)
# Ops that queue user tasks, marked with their action's poll timeout (see apply_ops).
_QUEUEING_OPS = frozenset({"user", "each", "item"})


def _nth_secret(secrets: str, index: int) -> str:
    return secrets[index * LEASE_SECRET_HEX : (index + 1) * LEASE_SECRET_HEX]


def _held_json(result: Result) -> str:
    if isinstance(result, Success):
        return dumps({"output": result.output})
    return dumps({"error": result.error, "retryable": result.retryable})


class Engine:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        wakeups: Wakeups | None = None,
        pools: Pools | None = None,
    ) -> None:
        """With ``pools``, the engine works with those (shared with other engines: their
        owner closes them); without, with pools of its own that ``close`` closes."""
        self.store = store
        self.settings = settings
        self.catalog = Catalog(store, settings)
        self._owns_pools = pools is None
        self.pools = pools or Pools.create(settings)
        self.executor = self.pools.executor
        self.documents = self.pools.documents
        self.planner = Planner(
            self.executor,
            self.documents,
            settings.large_document_bytes,
            max_var_bytes=settings.max_output_bytes,
            item_limits=for_each.ItemLimits(
                default_concurrency=settings.for_each_concurrency,
                max_items=settings.max_for_each_items,
                max_payload_bytes=settings.max_for_each_payload_bytes,
            ),
            max_executions=settings.max_run_executions,
        )
        self.wakeups = wakeups or Wakeups()
        self.correlation = Correlation(
            CorrelationStore(store.client, store.keys, store.retention_seconds, store.coalescer),
            settings,
        )
        self.runs = RunCache(settings.run_cache_size)
        self._keeping: set[asyncio.Task[None]] = set()
        self._partition_cursor = itertools.cycle(range(store.keys.partitions))
        self._polls_recorded: dict[str, float] = {}  # action -> when this process last wrote
        self.children = Children(self)  # sub-workflows' hand-offs (spawn, cend, kill timers)
        self.telemetry = Telemetry(store, settings)

    async def warm_up(self) -> None:
        """Starts the script processes now rather than on the first script."""
        await self.pools.warm_up()

    def close(self) -> None:
        if self._owns_pools:
            self.pools.close()

    # -- reading runs ---------------------------------------------------------------

    async def snapshot(self, flow_id: str) -> RunSnapshot:
        fields = await self.store.read_run(flow_id)
        if not fields:
            raise NotFound(f"flow {flow_id!r} not found")
        return RunSnapshot(flow_id, fields)

    async def _workflow_of(self, snapshot: RunSnapshot) -> WorkflowDef:
        workflow = await self.catalog.workflow(snapshot.name, snapshot.version)
        if workflow is None:
            raise NotFound(f"workflow {snapshot.name!r} version {snapshot.version} not found")
        return workflow

    # -- starting -------------------------------------------------------------------

    async def start(
        self,
        name: str,
        input_data: JSON,
        version: int | None = None,
        idempotency_key: str | None = None,
        *,
        by: str,
    ) -> tuple[str, bool]:
        """Starts a run; returns (flow id, created). A repeated idempotency key returns the
        first run's id and created False. ``by``: who starts it (app/engine/audit.py)."""
        [started] = await self.start_many(name, [input_data], version, [idempotency_key], by=by)
        return started

    async def start_many(
        self,
        name: str,
        inputs: list[JSON],
        version: int | None = None,
        idempotency_keys: list[str | None] | None = None,
        *,
        by: str,
    ) -> list[tuple[str, bool]]:
        """Starts one run per input, in one pipelined round trip; ``by`` starts them all."""
        workflow = await self.catalog.workflow(name, version)
        if workflow is None:
            which = "" if version is None else f" version {version}"
            raise NotFound(f"workflow {name!r}{which} not found")
        keys = idempotency_keys or [None] * len(inputs)
        starts = []
        for index, (input_data, key) in enumerate(zip(inputs, keys, strict=True)):
            input_json = dumps(input_data)
            if len(input_json) > self.settings.max_input_bytes:
                what = "input" if len(inputs) == 1 else f"inputs[{index}]"
                raise TooLarge(
                    f"{what} is {len(input_json)} bytes; the limit is "
                    f"{self.settings.max_input_bytes} bytes (ORCHY_MAX_INPUT_BYTES)"
                )
            flow_id = idempotent_flow_id(name, key) if key else new_flow_id()
            starts.append(
                await self.plan_start(workflow, flow_id, input_data, input_json, key or "", by=by)
            )
        created = await self.commit_starts(starts)
        return [
            (start.flow_id, was_created) for start, was_created in zip(starts, created, strict=True)
        ]

    async def plan_start(
        self,
        workflow: WorkflowDef,
        flow_id: str,
        input_data: JSON,
        input_json: str,
        idempotency_key: str = "",
        first_ops: Sequence[PlannedOp] = (),
        *,
        by: str,
    ) -> RunStart:
        """The start of run ``flow_id`` of ``workflow`` by ``by``: ``first_ops``, its limit of
        executions and its variables' initial values, then the plan of its root action on
        its new data document."""
        document: JSONObject = {
            "input": input_data,
            "flow": {"id": flow_id, "name": workflow.name, "version": workflow.version},
        }
        if workflow.vars:
            document[VARS] = orjson.loads(dumps(workflow.vars))  # a run's own copy
        initial = _initial_plan(workflow, self.settings.max_run_executions)
        plan = await self.planner.start(
            workflow,
            [workflow.root_action],
            Document.of(document),
            Plan([self._index_op(workflow, flow_id, input_data), *first_ops, *initial.ops]),
        )
        return RunStart(
            flow_id,
            workflow.name,
            workflow.version,
            input_json,
            idempotency_key,
            plan.fail_reason,
            await self._with_poll_timeouts(plan.ops),
            by,
        )

    def _index_op(self, workflow: WorkflowDef, flow_id: str, input_data: JSON) -> PlannedOp:
        """The op that puts a new run in the search indexes (``ix_start`` in common.lua)."""
        max_bytes = self.settings.search_max_value_bytes
        state = {
            "k": self.store.keys.index_prefix(self.store.keys.partition_of(flow_id)),
            "m": max_bytes,
            "v": start_tokens(workflow.searchable, input_data, max_bytes),
        }
        return PlannedOp("index", 0, payload=orjson.dumps(state).decode())

    async def commit_starts(self, starts: list[RunStart]) -> list[bool]:
        """Writes the planned starts (one pipelined round trip), logs them and wakes the polls
        of their queued tasks; whether each run was created (False: it existed)."""
        created = await self.store.start_runs(starts)
        run_log.started(starts, created)
        self.telemetry.runs_started(starts, created)
        for start in starts:
            self._announce(start.flow_id, start.ops)
        return created

    # -- worker results -------------------------------------------------------------

    @staticmethod
    def _parse_task(task_id: str) -> TaskId:
        parsed = TaskId.parse(task_id)
        if parsed is None:
            raise NotFound(f"task {task_id!r} not found: {TASK_ID_SHAPE}")
        return parsed

    async def _task_execution(self, task_id: str) -> tuple[TaskId, RunSnapshot, Execution]:
        parsed = self._parse_task(task_id)
        fields = (await self._read_items({0: parsed})).get(0)
        if fields is None:
            fields = await self.store.read_run(parsed.flow_id)
        return self._check_task(task_id, parsed, fields)

    async def _read_items(self, tasks: dict[int, TaskId]) -> dict[int, dict[str, str]]:
        """The fields of the tasks named as for-each items (``TaskId.item``): the run's own
        and the execution's only, by the same key as ``tasks``. A task that turns out not to
        be an item is left out: its whole run is read."""
        named = {key: task for key, task in tasks.items() if task.item}
        reads = await self.store.read_executions(
            [(task.flow_id, task.seq) for task in named.values()]
        )
        return {
            key: fields
            for key, fields in zip(named, reads, strict=True)
            if f"x:{named[key].seq}:p" in fields
        }

    @staticmethod
    def _check_task(
        task_id: str, parsed: TaskId, fields: dict[str, str]
    ) -> tuple[TaskId, RunSnapshot, Execution]:
        snapshot = RunSnapshot(parsed.flow_id, fields)
        execution = snapshot.execution(parsed.seq) if fields else None
        if execution is None or execution.queue is None:
            raise NotFound(f"task {task_id!r} not found")
        if snapshot.is_terminal:
            raise Conflict(f"task {task_id!r}: flow is {snapshot.status.value}")
        if (
            execution.status != ActionStatus.RUNNING
            or execution.attempt != parsed.attempt
            or execution.held_json is not None
        ):
            raise Conflict(
                f"task {task_id!r} is not the running attempt (action is {execution.status}, "
                f"attempt {execution.attempt}); its result was not applied"
            )
        if execution.lease_secret != parsed.secret:
            raise Conflict(f"task {task_id!r} is not the current lease; nothing was applied")
        return parsed, snapshot, execution

    async def complete_task(self, task_id: str, output: JSON) -> str:
        return await self._apply_one(task_id, Success(output))

    async def fail_task(self, task_id: str, error: str, retryable: bool) -> str:
        return await self._apply_one(task_id, Failure(error, retryable))

    async def _apply_one(self, task_id: str, result: Result) -> str:
        [answer] = (await self.apply_results([(task_id, result)])).answers
        if isinstance(answer, EngineError):
            raise answer
        return answer

    async def apply_results(
        self, results: list[tuple[str, Result]], take_next: TakeNext | None = None
    ) -> AppliedResults:
        """Many worker results: one pipelined read of their runs, one pipelined write of
        their transitions. With ``take_next``, the user tasks those transitions start are
        leased to that worker in the same scripts, up to its ``most``.

        A run this server kept from its last transition is not read again; if it has
        changed since, its transition does nothing ("moved") and the result is applied
        again from a fresh read."""
        answers: list[str | EngineError] = [NotFound("")] * len(results)
        leased: list[LeasedTask] = []
        again = await self._apply_round(results, range(len(results)), answers, leased, take_next)
        # A result that writes variables is planned again while another transition of its
        # run gets in first (see app/engine/variables.py); each round, one of them gets in.
        for _ in range(self.settings.moved_retry_rounds):
            if not again:
                break
            again = await self._apply_round(
                results, again, answers, leased, take_next, cached=False
            )
        for index in again:
            answers[index] = Conflict(
                f"task {results[index][0]}: its run kept changing while the result was "
                f"applied ({self.settings.moved_retry_rounds} tries, "
                "ORCHY_MOVED_RETRY_ROUNDS); nothing was applied, send it again"
            )
        self.telemetry.leased(leased)
        return AppliedResults(answers, leased)

    async def _apply_round(
        self,
        results: list[tuple[str, Result]],
        indexes: Sequence[int],
        answers: list[str | EngineError],
        leased: list[LeasedTask],
        take_next: TakeNext | None,
        cached: bool = True,
    ) -> list[int]:
        """Applies ``results[indexes]``, filling ``answers`` and ``leased``; returns the
        indexes planned from a kept copy of their run that must be applied again."""
        parsed = {index: TaskId.parse(results[index][0]) for index in indexes}
        # A for-each item's result reads its execution, not its run (which holds all items).
        items = await self._read_items(
            {index: task for index, task in parsed.items() if task is not None}
        )
        flows = sorted(
            {
                task.flow_id
                for index, task in parsed.items()
                if task is not None and index not in items
            }
        )
        kept = await self.runs.take(flows) if cached else {}
        unread = [flow for flow in flows if flow not in kept]
        fields_of = {**kept, **dict(zip(unread, await self.store.read_runs(unread), strict=True))}
        again: list[int] = []
        planned: list[tuple[int, TaskId, Transition]] = []
        executions: dict[int, Execution] = {}
        budget = 0 if take_next is None else take_next.most - len(leased)
        for index in indexes:
            task_id, result = results[index]
            task = parsed[index]
            try:
                task = task or self._parse_task(task_id)
                from_copy = index not in items and task.flow_id in kept
                fields = items[index] if index in items else fields_of[task.flow_id]
                _, snapshot, execution = self._check_task(task_id, task, fields)
                # Planned from a kept copy: the transition applies only if the run has not
                # moved since.
                expected_rev = fields[RunCache.REVISION] if from_copy else ""
                change = await self._plan_user_result(
                    task, snapshot, execution, result, expected_rev=expected_rev
                )
                if take_next is not None and budget > 0:
                    change, budget = await self._lease_at_once(change, take_next, budget)
                planned.append((index, task, change))
                executions[index] = execution
            except EngineError as error:
                if task is not None and task.flow_id in kept and index not in items:
                    again.append(index)  # the kept copy may be behind: read it and see
                else:
                    answers[index] = error
        changes = [change for _, _, change in planned]
        # A run with several results in the batch is read once.
        keep = list(dict.fromkeys(change.flow_id for change in changes if change.lease_to))
        replies = await self._commit(changes, keep)
        for (index, task, change), reply in zip(planned, replies, strict=True):
            if reply.status == MOVED:
                again.append(index)
                continue
            try:
                self._raise_for(reply.status, f"task {task}")
                answers[index] = reply.status
                self._attempt_ended(task, executions[index], change, reply)
                leased += self._leased_tasks(change, reply)
            except EngineError as error:
                answers[index] = error
        return again

    async def _lease_at_once(
        self, change: Transition, take_next: TakeNext, budget: int
    ) -> tuple[Transition, int]:
        """Marks up to ``budget`` of the change's user tasks for ``take_next``'s worker."""
        ops = list(change.ops)
        marked = 0
        for position, op in enumerate(ops):
            if marked == budget:
                break
            if op.kind == "user" and op.queue is not None and op.queue in take_next.actions:
                lease_ms = (await self.catalog.action(op.queue)).lease_ms
                ops[position] = dataclasses.replace(op, number=lease_ms)
                marked += 1
        if not marked:
            return change, budget
        leased = dataclasses.replace(
            change, ops=ops, lease_to=take_next.worker_id, take_secrets=lease_secrets(marked)
        )
        return leased, budget - marked

    @staticmethod
    def _leased_tasks(change: Transition, reply: Applied) -> list[LeasedTask]:
        if not reply.leased_seqs:  # none asked, or the run was held or has ended
            return []
        ops = [op for op in change.ops if op.leased_at_once]
        # The script gave the k-th task it leased the k-th secret.
        secrets = change.take_secrets
        return [
            LeasedTask(
                task_id=str(TaskId(change.flow_id, seq, 1, _nth_secret(secrets, index))),
                flow_id=change.flow_id,
                action_id=op.action_id,
                attempt=1,
                input_json=op.payload,
                name=op.queue or op.name,
            )
            for index, (op, seq) in enumerate(zip(ops, reply.leased_seqs, strict=True))
        ]

    async def _finish_user_task(
        self,
        task: TaskId,
        snapshot: RunSnapshot,
        execution: Execution,
        result: Result,
        timer: TimerMember | None = None,
        claimed_score: int | None = None,
    ) -> str:
        """Applies a result (fresh from a worker, replayed after a pause, or a lease expiry).

        ``timer`` is the timer being handled, when it is not a worker's call."""
        change = await self._plan_user_result(
            task, snapshot, execution, result, timer, claimed_score
        )
        [answer] = await self._commit([change])
        self._raise_for(answer.status, f"task {task}")
        self._attempt_ended(task, execution, change, answer, timer)
        return answer.status

    def _attempt_ended(
        self,
        task: TaskId,
        execution: Execution,
        change: Transition,
        reply: Applied,
        timer: TimerMember | None = None,
    ) -> None:
        """Tells the telemetry of an attempt's end (not of a result held while paused)."""
        if reply.status != APPLIED:
            return
        self.telemetry.attempt_ended(
            task.flow_id,
            task.seq,
            task.attempt,
            execution.queue or "",
            execution.created_ms,
            change.outcome.new_status,
            change.outcome.error,
            ended_by=None if timer is None else timer.kind,
        )

    async def _plan_user_result(
        self,
        task: TaskId,
        snapshot: RunSnapshot,
        execution: Execution,
        result: Result,
        timer: TimerMember | None = None,
        claimed_score: int | None = None,
        expected_rev: str = "",
    ) -> Transition:
        if execution.parent is not None:
            return await self._plan_item_result(task, execution, result, timer, claimed_score)
        workflow = await self._workflow_of(snapshot)
        action = workflow.actions[execution.action_id]
        document = Document.of_run(snapshot)
        plan = Plan()
        var_ops: list[PlannedOp] | str = []
        if isinstance(result, Success):
            output_json = dumps(result.output)
            document.set_output(action.id, result.output, output_json)
            var_ops = self.planner.set_vars(action, result.output, document)
        if isinstance(var_ops, str):  # a mutation cannot apply: the execution fails
            await self.planner.follow_failure(workflow, action, var_ops, document, plan)
            outcome = outcomes.failed(var_ops)
        elif isinstance(result, Success):
            plan = await self.planner.start(
                workflow, action.branch(DEFAULT_BRANCH), document, Plan(ops=var_ops)
            )
            outcome = Outcome(ActionStatus.COMPLETED, output_json, branch=DEFAULT_BRANCH)
        else:
            settings = await self.catalog.action(execution.queue or action.name)
            outcome, retrying = outcomes.retry_or_fail(
                settings, task.attempt, result.error, result.retryable
            )
            if not retrying:
                await self.planner.follow_failure(workflow, action, outcome.error, document, plan)
        expected_rev = expected_rev or _revision_if_writing_vars(plan, snapshot)
        return _user_transition(task, result, outcome, plan, timer, claimed_score, expected_rev)

    async def _plan_item_result(
        self,
        task: TaskId,
        execution: Execution,
        result: Result,
        timer: TimerMember | None,
        claimed_score: int | None,
    ) -> Transition:
        """A for-each item's result, planned from its execution alone: it is retried by its
        action's settings, or ends with an "item" op that counts it and starts the next item
        (common.lua); the for-each, not the item, follows a branch."""
        queue = execution.queue or ""
        item_op = PlannedOp("item", execution.action_id, queue, str(task.seq), queue=queue)
        if isinstance(result, Success):
            outcome = Outcome(ActionStatus.COMPLETED, dumps(result.output), branch=DEFAULT_BRANCH)
            return _user_transition(
                task, result, outcome, Plan(ops=[item_op]), timer, claimed_score
            )
        settings = await self.catalog.action(queue)
        outcome, retrying = outcomes.retry_or_fail(
            settings, task.attempt, result.error, result.retryable
        )
        plan = Plan() if retrying else Plan(ops=[item_op])
        return _user_transition(task, result, outcome, plan, timer, claimed_score)

    async def _commit(
        self, changes: Sequence[Transition], keep: Sequence[str] = ()
    ) -> list[Applied]:
        """Applies transitions (one pipelined round trip), then wakes this process's long
        polls for the tasks they queued, without waiting for the notification to come back
        through Redis (other processes get that one). The runs ``keep`` names are read in
        the same round trip and kept for their next result."""
        changes = [await self._with_poll_timeouts_of(change) for change in changes]
        replies, reads = await self.store.transitions(changes, keep if self.runs.enabled else ())
        self.runs.keep(reads)
        run_log.failed_attempts(changes, replies)
        self.telemetry.transitions_applied(changes, replies)
        for change in changes:
            self._announce(change.flow_id, change.ops)
        return replies

    async def _with_poll_timeouts_of(self, change: Transition) -> Transition:
        ops = await self._with_poll_timeouts(change.ops)
        return change if ops is change.ops else dataclasses.replace(change, ops=ops)

    async def _with_poll_timeouts(self, ops: Sequence[PlannedOp]) -> Sequence[PlannedOp]:
        """The ops, each queued user task of an action with a poll timeout marked with it."""
        marked: list[PlannedOp] | None = None
        for position, op in enumerate(ops):
            if op.kind not in _QUEUEING_OPS or op.queue is None or op.number != 0:
                continue
            timeout_ms = (await self.catalog.action(op.queue)).poll_timeout_ms
            if timeout_ms:
                marked = marked or list(ops)
                marked[position] = dataclasses.replace(op, number=-timeout_ms)
        return ops if marked is None else marked

    def _announce(self, flow_id: str, ops: Sequence[PlannedOp]) -> None:
        partition = self.store.keys.partition_of(flow_id)
        for op in ops:
            if op.queue is not None and not op.leased_at_once:
                self.wakeups.notify(op.queue, partition)

    @staticmethod
    def _raise_for(answer: str, what: str) -> None:
        if answer == "missing":
            raise NotFound(f"{what} not found")
        if answer == "terminal":
            raise Conflict(f"{what}: the flow has ended")
        if answer == "stale":
            raise Conflict(f"{what} is not the current attempt; its result was not applied")

    async def heartbeat(self, task_id: str) -> None:
        parsed, _, execution = await self._task_execution(task_id)
        settings = await self.catalog.action(execution.queue or "")
        lease = TimerMember(TimerKind.LEASE, parsed.flow_id, parsed.seq, parsed.attempt)
        answer = await self.store.heartbeat(
            parsed.flow_id, parsed.seq, parsed.attempt, settings.lease_ms, str(lease), parsed.secret
        )
        self._raise_for(answer, f"task {task_id}")

    # -- polling --------------------------------------------------------------------

    async def poll(
        self,
        worker_id: str,
        actions: list[str],
        most: int,
        wait_seconds: float,
        gone: asyncio.Event | None = None,
    ) -> list[LeasedTask]:
        """Leases up to ``most`` tasks, waiting up to ``wait_seconds`` for the first one.

        ``gone`` is set when the client hangs up: a poll nobody will read must not lease."""
        deadline = time.monotonic() + min(wait_seconds, self.settings.poll_max_wait_seconds)
        await self._record_poll(actions)
        leases = [(name, (await self.catalog.action(name)).lease_ms) for name in actions]
        look_everywhere = self.wakeups.full_scan_due(actions, self.settings.poll_recheck_seconds)
        while not self.wakeups.closed and (gone is None or not gone.is_set()):
            wakeup = self.wakeups.subscribe(actions)
            try:
                tasks = await self._take(worker_id, leases, most, look_everywhere)
                remaining = deadline - time.monotonic()
                if tasks:
                    self._keep_runs_of(tasks)
                    self.telemetry.leased(tasks)
                    return tasks
                if remaining <= 0:
                    return tasks
                await self.wakeups.wait(
                    wakeup, min(remaining, self.settings.poll_recheck_seconds), gone
                )
                # Woken by a notification: its hint says where. Timed out: look everywhere.
                look_everywhere = not wakeup.done()
            finally:
                self.wakeups.unsubscribe(actions, wakeup)
        return []

    async def _record_poll(self, actions: list[str]) -> None:
        """Notes the poll time of its actions, at most once per ``poll_record_seconds`` per
        action and process: one HSET, or none."""
        now = time.monotonic()
        every = self.settings.poll_record_seconds
        due = [name for name in actions if now - self._polls_recorded.get(name, -math.inf) >= every]
        if not due:
            return
        await self.store.record_polls(due, round(time.time() * MS_PER_SECOND))
        for name in due:
            self._polls_recorded[name] = now

    def _keep_runs_of(self, tasks: list[LeasedTask]) -> None:
        """Reads the runs of tasks just leased (one round trip for the whole batch) and keeps
        them, so that each task's result plans from the copy instead of reading its run: a
        poll of many tasks spares a round trip to each of their results. The read goes out
        while the poll is answered, not before: a result comes a round trip of its worker
        later at the soonest, and one that comes sooner waits for this read. A run that
        changes meanwhile is read again when its result comes (see ``RunCache``)."""
        if not self.runs.enabled:
            return
        # Not for a for-each's items: their results read their executions only.
        flows = list(
            dict.fromkeys(task.flow_id for task in tasks if not task.task_id.endswith(ITEM_SUFFIX))
        )
        if not flows:
            return
        reading = asyncio.ensure_future(self._read_and_keep(flows))
        self._keeping.add(reading)  # a reference until it is done
        reading.add_done_callback(self._kept)
        self.runs.reading(flows, reading)

    async def _read_and_keep(self, flow_ids: list[str]) -> None:
        self.runs.keep(await self.store.read_runs(flow_ids))

    def _kept(self, reading: asyncio.Task[None]) -> None:
        self._keeping.discard(reading)
        if not reading.cancelled() and reading.exception() is not None:
            # Only a cost: each result reads its run, as without the copy.
            log.warning("runs of polled tasks not kept: %s", reading.exception())

    async def _take(
        self, worker_id: str, leases: list[tuple[str, int]], most: int, look_everywhere: bool
    ) -> list[LeasedTask]:
        names = [name for name, _ in leases]
        hints = self.wakeups.hinted(names)
        partitions = self.store.keys.partitions
        if look_everywhere:
            self.wakeups.scanned_everywhere(names)
            first = next(self._partition_cursor)
            order = [(first + offset) % partitions for offset in range(partitions)]
        else:
            order = sorted({partition for _, partition in hints})
        leased: list[LeasedTask] = []
        for partition in order:
            if len(leased) >= most:
                break
            wanted = most - len(leased)
            got = await self.store.poll(partition, leases, wanted, worker_id, lease_secrets(wanted))
            leased += got
            if len(got) < wanted:
                self.wakeups.drained(
                    {key: gen for key, gen in hints.items() if key[1] == partition}
                )
        return leased

    # -- events and lifecycle -------------------------------------------------------

    # ``by``: who asks (the principal's name), written in the run's history (app/engine/audit.py).

    async def send_event(self, flow_id: str, name: str, data: JSON, *, by: str) -> str:
        answer = await self.store.send_event(flow_id, name, dumps(data), by=by)
        if answer == "missing":
            raise NotFound(f"flow {flow_id!r} not found")
        if answer == "terminal":
            raise Conflict(f"flow {flow_id!r} has ended; event {name!r} was not delivered")
        return answer

    async def pause(self, flow_id: str, *, by: str) -> None:
        answer = await self.store.pause(flow_id, by=by)
        if answer == "missing":
            raise NotFound(f"flow {flow_id!r} not found")
        if answer == "not_running":
            snapshot = await self.snapshot(flow_id)
            raise Conflict(f"flow {flow_id!r} is {snapshot.status.value}, not RUNNING")

    async def resume(self, flow_id: str, *, by: str) -> None:
        answer = await self.store.resume(flow_id, by=by)
        if answer == "missing":
            raise NotFound(f"flow {flow_id!r} not found")
        if answer == "not_paused":
            snapshot = await self.snapshot(flow_id)
            raise Conflict(f"flow {flow_id!r} is {snapshot.status.value}, not PAUSED")

    async def terminate(self, flow_id: str, reason: str | None = None, *, by: str) -> None:
        answer = await self.store.terminate(flow_id, reason or TERMINATED_REASON, by=by)
        if answer == "missing":
            raise NotFound(f"flow {flow_id!r} not found")
        if answer == "terminal":
            snapshot = await self.snapshot(flow_id)
            raise Conflict(f"flow {flow_id!r} has already ended ({snapshot.status.value})")

    # -- timers ---------------------------------------------------------------------

    async def handle_timer(self, member_text: str, claimed_score: int | None = None) -> str:
        """Acts on one due timer claimed by a sweeper; safe to call twice for one member.

        ``claimed_score`` is the score the claim gave the timer: a lease expiry is dropped if
        a heartbeat moved the lease since."""
        if is_correlation_timer(correlated := TimerMember.parse(member_text)):
            return await self.correlation.handle_timer(correlated)
        answer = MOVED
        # A step that writes variables is planned again while the run moves under it.
        for _ in range(self.settings.moved_retry_rounds + 1):
            answer = await self._handle_timer_once(member_text, claimed_score)
            if answer != MOVED:
                break
        return answer

    async def _handle_timer_once(self, member_text: str, claimed_score: int | None) -> str:
        member = TimerMember.parse(member_text)
        if member.kind in CHILD_TIMER_KINDS:
            return await self.children.handle(member)
        fields = await self._timer_fields(member)
        snapshot = RunSnapshot(member.flow_id, fields)
        execution = snapshot.execution(member.seq) if fields else None
        if execution is None:
            # The run is gone (expired) or never had this step: nothing can use the timer.
            return await self._drop_timer(member)
        task = TaskId(member.flow_id, member.seq, member.generation)
        if member.kind is TimerKind.ENQUEUE:
            queue = execution.queue or ""
            return await self.store.requeue(
                member.flow_id,
                member.seq,
                member.generation,
                member_text,
                queue,
                (await self.catalog.action(queue)).poll_timeout_ms,
            )
        if member.kind is TimerKind.POLL_TIMEOUT:
            return await self._poll_timed_out(task, snapshot, execution, member)
        if member.kind is TimerKind.LEASE:
            return await self._handle_quietly(
                self._finish_user_task(
                    task, snapshot, execution, Failure(LEASE_EXPIRED, True), member, claimed_score
                )
            )
        if member.kind is TimerKind.RESULT:
            if execution.held_json is None:
                return "stale"
            result = _result_from_held(execution.held_json)
            return await self._handle_quietly(
                self._finish_user_task(task, snapshot, execution, result, member)
            )
        if member.kind is TimerKind.ITEM_STEP:
            return await self._finish_item_child(snapshot, execution, member)
        return await self._finish_waiting(snapshot, execution, member)

    async def _finish_item_child(
        self, snapshot: RunSnapshot, execution: Execution, member: TimerMember
    ) -> str:
        """A for-each item's child run has ended: the item ends with the child's output, or
        fails with its reason, planned from the item's fields alone (see children.py)."""
        if execution.child_status is None:  # not told of a child's end: nothing to do
            return await self._drop_timer(member)
        output, error = child_result(execution)
        change = item_end(snapshot.flow_id, execution, member, output, error)
        [answer] = await self._commit([change])
        return answer.status

    async def _timer_fields(self, member: TimerMember) -> dict[str, str]:
        """What a timer reads of its run. A retry's back-off needs only its execution; the
        other timers of a user task read a for-each item's execution only (a worker that
        dies holding 500 items must not have the whole run read 500 times); the rest read
        the whole run."""
        if member.kind in _TASK_TIMERS or member.kind is TimerKind.ITEM_STEP:
            [fields] = await self.store.read_executions([(member.flow_id, member.seq)])
            if member.kind is TimerKind.ENQUEUE or f"x:{member.seq}:p" in fields:
                return fields
        return await self.store.read_run(member.flow_id)

    async def timer_failed(self, partition: int, member_text: str, error: str) -> str:
        """Handling the due timer ``member_text`` of ``partition`` raised ``error``.

        The timer is tried again after ``timer_retry_seconds``, up to ``timer_max_attempts``
        failed attempts in all for its execution; then the execution FAILS, and the run with
        it, with the error as reason, rather than the timer being retried for ever."""
        try:
            member = TimerMember.parse(member_text)
        except ValueError:  # names no run: nothing could ever handle it
            await self.store.drop_timer(partition, member_text)
            return "dropped"
        if member.kind is TimerKind.DELIVER:  # names a delivery, not a run
            return await self.correlation.delivery_failed(member)
        if member.kind in (TimerKind.CHILD_END, TimerKind.KILL):
            # They act on another run than the one they name an execution of, which may have
            # ended: dropped, the end or the termination would be lost. Their claim expires
            # and they are tried again then (timer_claim_seconds).
            return "retry"
        most = self.settings.timer_max_attempts
        retry_ms = round(self.settings.timer_retry_seconds * MS_PER_SECOND)
        failures = await self.store.timer_failed(
            member.flow_id, member.seq, member_text, error, retry_ms, most
        )
        if failures == 0:
            return "terminal"
        if failures < most:
            return "retry"
        snapshot = RunSnapshot(member.flow_id, await self.store.read_run(member.flow_id))
        execution = snapshot.execution(member.seq) if snapshot.fields else None
        if (
            execution is None
            or execution.status in TERMINAL_ACTION
            or execution.attempt != member.generation
        ):
            # The execution has moved on without this timer: it is only dropped.
            return await self._drop_timer(member)
        reason = (
            f"action {execution.action_id}: its {member.kind.name.lower()} timer failed "
            f"{failures} times: {error}"
        )
        change = Transition(
            member.flow_id,
            member.seq,
            execution.status,
            execution.attempt,
            outcomes.failed(reason),
            (),
            reason,
            timer_member=member_text,
        )
        [answer] = await self._commit([change])
        if member.kind is TimerKind.SPAWN and answer.status == "ok":
            # A failed attempt may have started the child before it failed: the run has
            # ended without its execution open, so no kill timer ends the child.
            await self.children.end_child(member.flow_id, member.seq)
        return answer.status

    async def _drop_timer(self, member: TimerMember) -> str:
        """Removes a timer through a transition that can only find it stale."""
        return await self.store.transition(
            member.flow_id, member.seq, "", member.generation, Outcome(""), timer_member=str(member)
        )

    async def _poll_timed_out(
        self, task: TaskId, snapshot: RunSnapshot, execution: Execution, member: TimerMember
    ) -> str:
        """A queued attempt that no worker polled within the action's poll timeout fails,
        and is retried by the action's policy."""
        queue = execution.queue or ""
        timeout = (await self.catalog.action(queue)).poll_timeout_seconds
        within = "" if timeout is None else f" within {timeout:g} s"
        failure = Failure(f"not polled{within}: no worker took the task (pollTimeoutSeconds)", True)
        answer = await self._handle_quietly(
            self._finish_user_task(task, snapshot, execution, failure, member)
        )
        if answer == "ok":
            await self.store.drop_queued(task.flow_id, queue, task.queue_entry)
        return answer

    @staticmethod
    async def _handle_quietly(call: Coroutine[Any, Any, str]) -> str:
        try:
            return await call
        except (Conflict, NotFound) as stale:
            return f"stale: {stale.message}"

    async def _finish_waiting(
        self, snapshot: RunSnapshot, execution: Execution, member: TimerMember
    ) -> str:
        """A delay fired, a wait got its event or timed out, a join is complete, or a
        for-each's items have ended (or one failed)."""
        workflow = await self._workflow_of(snapshot)
        action = workflow.actions[execution.action_id]
        document = Document.of_run(snapshot)
        branch = DEFAULT_BRANCH
        output: JSON
        if member.kind is TimerKind.FIRE:
            output = {}
        elif member.kind is TimerKind.WAIT_TIMEOUT:
            output = {"timedOut": True}
        elif execution.event_name is not None:
            output = orjson.loads(execution.event_data_json or "null")
            if execution.event_name in action.next:
                branch = execution.event_name
        elif execution.child_status is not None:  # a sub-workflow's child has ended
            output, child_error = child_result(execution)
            if child_error is not None:
                return await self._fail_waiting(snapshot, execution, member, child_error)
        elif action.for_each is not None:  # its items have ended, or one failed ("fail")
            failed = for_each.failed_item(snapshot.fields, execution.seq)
            if failed is not None:
                return await self._fail_waiting(snapshot, execution, member, failed)
            output = for_each.output_of(for_each.items_of(snapshot.fields, execution.seq))
        else:
            output = {str(joined): snapshot.output(joined) for joined in execution.join_on}
        output_json = dumps(output)
        document.set_output(action.id, output, output_json)
        var_ops = self.planner.set_vars(action, output, document)
        if isinstance(var_ops, str):  # a mutation cannot apply: the execution fails
            plan = Plan()
            await self.planner.follow_failure(workflow, action, var_ops, document, plan)
            outcome = outcomes.failed(var_ops)
        else:
            plan = await self.planner.start(
                workflow, action.branch(branch), document, Plan(ops=var_ops)
            )
            outcome = Outcome(ActionStatus.COMPLETED, output_json, branch=branch)
        return await self._end_waiting(snapshot, execution, member, outcome, plan)

    async def _end_waiting(
        self,
        snapshot: RunSnapshot,
        execution: Execution,
        member: TimerMember,
        outcome: Outcome,
        plan: Plan,
    ) -> str:
        """Ends the waiting execution with ``outcome`` and applies ``plan``, brought by the
        timer ``member`` (held as itself if the run is paused)."""
        change = Transition(
            snapshot.flow_id,
            execution.seq,
            ActionStatus.WAITING,
            member.generation,
            outcome,
            plan.ops,
            plan.fail_reason,
            timer_member=str(member),
            held_member=str(member),
            expected_rev=_revision_if_writing_vars(plan, snapshot),
        )
        [answer] = await self._commit([change])
        return answer.status

    async def _fail_waiting(
        self, snapshot: RunSnapshot, execution: Execution, member: TimerMember, error: str
    ) -> str:
        """The waiting execution fails with ``error``; its action's error branch follows,
        or the run fails. ``member`` is the timer that brings the failure."""
        workflow = await self._workflow_of(snapshot)
        action = workflow.actions[execution.action_id]
        plan = Plan()
        await self.planner.follow_failure(workflow, action, error, Document.of_run(snapshot), plan)
        outcome = outcomes.failed(error)
        return await self._end_waiting(snapshot, execution, member, outcome, plan)


def _user_transition(
    task: TaskId,
    result: Result,
    outcome: Outcome,
    plan: Plan,
    timer: TimerMember | None,
    claimed_score: int | None,
    expected_rev: str = "",
) -> Transition:
    """The transition of a user task's result: a worker's (``timer`` None), or a timer's
    (lease expiry, poll timeout, a held result replayed)."""
    lease = str(TimerMember(TimerKind.LEASE, task.flow_id, task.seq, task.attempt))
    expected = ActionStatus.RUNNING
    if timer is None:
        timer_member = lease
        held_member = str(TimerMember(TimerKind.RESULT, task.flow_id, task.seq, task.attempt))
        held_outcome = _held_json(result)
    else:
        timer_member = str(timer)
        # A lease expiry or poll timeout is held as itself if the run is paused; a
        # replayed result has its outcome stored already, and transition.lua holds it
        # again as its timer.
        held_member = str(timer) if timer.kind in _HELD_AS_THEMSELVES else ""
        held_outcome = ""
        if timer.kind is TimerKind.POLL_TIMEOUT:
            expected = ActionStatus.QUEUED  # it ends an attempt no worker has taken
    return Transition(
        task.flow_id,
        task.seq,
        expected,
        task.attempt,
        outcome,
        plan.ops,
        plan.fail_reason,
        timer_member=timer_member,
        held_member=held_member,
        held_outcome=held_outcome,
        claimed_score=claimed_score,
        expected_rev=expected_rev,
        lease_secret=task.secret,
    )


def _initial_plan(workflow: WorkflowDef, max_executions: int) -> Plan:
    """A plan that starts with writing the run's limit of executions and the workflow's
    variables' initial values."""
    return Plan(
        ops=[
            PlannedOp("limit", 0, number=max_executions),
            *(PlannedOp("var", 0, name, dumps(value)) for name, value in workflow.vars.items()),
        ]
    )


def _revision_if_writing_vars(plan: Plan, snapshot: RunSnapshot) -> str:
    """The revision the plan was made from when it writes variables: computed from what was
    read, their new values must not overwrite a change made since."""
    if any(op.kind == "var" for op in plan.ops):
        return snapshot.fields.get(RunCache.REVISION, "")
    return ""


__all__ = ["Engine", "Invalid", "RunStatus"]
