"""``Telemetry``: what the engine tells at its few central places (a run started, tasks
leased, an attempt ended, timers due, a run ended), turned into metrics and, with
``ORCHY_OTEL=true``, spans."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.engine.ids import TimerKind
from app.settings import Settings
from app.telemetry import metrics, trace_ids

if TYPE_CHECKING:
    from app.store import LeasedTask, PlannedOp, Store
    from app.store.store import Applied, RunStart, Transition
    from app.telemetry.tracing import RunTracing

log = logging.getLogger("orchy.telemetry")

NS_PER_MS = 1_000_000
NS_PER_SECOND = 1_000_000_000
RETRYING = "QUEUED"  # an attempt's outcome when its action's retry policy retries it
APPLIED = "ok"  # transition.lua's answer when it applied
FAILED_OP = "failed"
# The ops of a plan that end a system action's execution (planner.py): its output, or its
# failure.
SYSTEM_ACTION_ENDS = frozenset({"done", FAILED_OP})


def _ms_in_ns(ms: int) -> int:
    return ms * NS_PER_MS


def _attempt_key(task_id: str) -> str:
    """``<flowId>.<seq>.<attempt>`` of a task id (which adds the lease secret)."""
    flow_id, seq, attempt = task_id.split(".", 3)[:3]
    return f"{flow_id}.{seq}.{attempt}"


class Telemetry:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.tracing: RunTracing | None = None
        if settings.otel:
            try:
                from app.telemetry.tracing import RunTracing
            except ImportError as error:
                raise RuntimeError(
                    f"ORCHY_OTEL=true needs OpenTelemetry: pip install 'orchy[otel]' ({error})"
                ) from error
            self.tracing = RunTracing(settings.otel_exporter)
        # When this process leased each attempt in hand (ns since the epoch), by
        # "<flowId>.<seq>.<attempt>". A result that reaches another server process is not
        # in the histograms, and its span starts at its execution's creation.
        self._leased_at: OrderedDict[str, int] = OrderedDict()
        self._lease_memory = settings.lease_clock_size
        self._ended: list[tuple[str, str]] = []  # runs ended, not claimed yet
        self._claiming: asyncio.Future[None] | None = None

    def traceparent(self, flow_id: str, task_id: str) -> str | None:
        """The W3C trace context a leased task carries to its worker (tracing on)."""
        if self.tracing is None:
            return None
        _, seq, attempt = _attempt_key(task_id).rsplit(".", 2)
        return trace_ids.traceparent(flow_id, int(seq), int(attempt))

    def runs_started(self, starts: Sequence[RunStart], created: Sequence[bool]) -> None:
        for start, was_created in zip(starts, created, strict=True):
            if was_created:
                metrics.run_started(start.name)
                self._system_actions(start.flow_id, start.ops)

    def leased(self, tasks: Sequence[LeasedTask]) -> None:
        if not tasks:
            return
        now = time.time_ns()
        leased_at = self._leased_at
        for task in tasks:
            leased_at[_attempt_key(task.task_id)] = now
        while len(leased_at) > self._lease_memory:
            leased_at.popitem(last=False)

    def attempt_ended(
        self,
        flow_id: str,
        seq: int,
        attempt: int,
        action: str,
        created_ms: int | None,
        new_status: str,
        error: str,
        ended_by: TimerKind | None = None,
    ) -> None:
        """A user task's attempt ended (a worker's result, or ``ended_by`` a timer) and its
        transition applied."""
        if new_status == RETRYING:
            metrics.retried(action)
        if ended_by is TimerKind.LEASE:
            metrics.lease_expired(action)
        elif ended_by is TimerKind.POLL_TIMEOUT:
            metrics.poll_timed_out(action)
        now = time.time_ns()
        leased_at = self._leased_at.pop(f"{flow_id}.{seq}.{attempt}", None)
        if leased_at is not None:
            waited = None
            if created_ms and attempt == 1:
                waited = (leased_at - _ms_in_ns(created_ms)) / NS_PER_SECOND
            executed = None
            if ended_by is not TimerKind.LEASE:  # a result came
                executed = (now - leased_at) / NS_PER_SECOND
            metrics.attempt_timed(action, waited, executed)
        if self.tracing is not None:
            from app.telemetry.tracing import SpanTimes

            start = leased_at or (_ms_in_ns(created_ms) if created_ms else now)
            self.tracing.attempt_ended(flow_id, seq, attempt, action, SpanTimes(start, now), error)

    def transitions_applied(
        self, changes: Sequence[Transition], replies: Sequence[Applied]
    ) -> None:
        """Spans of the system actions that ended within these transitions (tracing on)."""
        if self.tracing is None:
            return
        for change, reply in zip(changes, replies, strict=True):
            if reply.status == APPLIED:
                self._system_actions(change.flow_id, change.ops)

    def _system_actions(self, flow_id: str, ops: Sequence[PlannedOp]) -> None:
        if self.tracing is None:
            return
        now = time.time_ns()
        for op in ops:
            if op.kind in SYSTEM_ACTION_ENDS:
                error = op.payload if op.kind == FAILED_OP else ""
                self.tracing.system_action(flow_id, op.action_id, op.kind, now, error)

    def run_ended(self, flow_id: str, status: str) -> None:
        """A run ended. Every server process hears it; the first to claim it counts it (and
        emits its span). Ends are claimed in batches, one round trip at a time, so that a
        burst of them never holds more than one Redis connection."""
        self._ended.append((flow_id, status))
        if self._claiming is None or self._claiming.done():
            self._claiming = asyncio.ensure_future(self._claim_ends())

    async def _claim_ends(self) -> None:
        while self._ended:
            batch, self._ended = self._ended, []
            try:
                claims = await self.store.claim_run_ends([flow_id for flow_id, _ in batch])
            except Exception as error:  # only metrics and spans are lost
                log.warning("ends of %d runs not counted: %s", len(batch), error)
                continue
            for (flow_id, status), fields in zip(batch, claims, strict=True):
                if fields is not None:
                    self._count_end(flow_id, status, fields)

    def _count_end(self, flow_id: str, status: str, fields: dict[str, str]) -> None:
        workflow = fields["name"] or ""
        metrics.run_ended(workflow, status)
        if self.tracing is not None:
            from app.telemetry.tracing import SpanTimes

            end = _ms_in_ns(int(fields["finishedAt"])) if fields["finishedAt"] else time.time_ns()
            start = _ms_in_ns(int(fields["createdAt"])) if fields["createdAt"] else end
            self.tracing.run_ended(flow_id, workflow, status, SpanTimes(start, end))
