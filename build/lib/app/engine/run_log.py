"""The server's log of runs, on the ``orchy.runs`` logger: a line per run started, per run
finished, per failed task attempt and per failed system action, never per poll
(``ORCHY_LOG_RUNS=false`` silences it). A run can end in any script that changes it, so its
end is told by the scripts themselves: ``finish_run`` (common.lua) publishes
``f|<partition>|<flowId>|<status>|<reason>`` on the notify channel, and every server
process logs it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.engine.status import RunStatus
from app.store.store import Applied, PlannedOp, RunStart, Transition

log = logging.getLogger("orchy.runs")

FINISHED = "f"  # the notify message kind of a run that ended
RETRYING = "QUEUED"  # a failed attempt's outcome when the action's retry policy retries it
APPLIED = "ok"
FAILED_OP = "failed"  # a system action's failure in a plan (planner.py)
MAX_MESSAGE_CHARS = 500
MS_PER_SECOND = 1000


def enable(enabled: bool) -> None:
    log.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def started(starts: Sequence[RunStart], created: Sequence[bool]) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    for start, was_created in zip(starts, created, strict=True):
        if was_created:
            log.info("run %s started: %s v%d", start.flow_id, start.name, start.version)
            _failed_steps(start.flow_id, start.ops)


def _failed_steps(flow_id: str, ops: Sequence[PlannedOp]) -> None:
    """System actions (a script, a switch) that failed in a transition's plan."""
    for op in ops:
        if op.kind == FAILED_OP:
            log.warning("run %s, action %d failed: %s", flow_id, op.action_id, _short(op.payload))


def failed_attempts(changes: Sequence[Transition], replies: Sequence[Applied]) -> None:
    """The task attempts and system actions that these applied transitions failed."""
    for change, reply in zip(changes, replies, strict=True):
        if reply.status != APPLIED:
            continue
        _failed_steps(change.flow_id, change.ops)
        error = change.outcome.error
        if not error:
            continue
        where = f"run {change.flow_id}, step {change.seq}, attempt {change.expected_attempt}"
        if change.outcome.new_status == RETRYING:
            delay = change.outcome.retry_delay_ms / MS_PER_SECOND
            log.warning("%s failed, retried in %g s: %s", where, delay, _short(error))
        else:
            log.warning("%s failed: %s", where, _short(error))


def finished(message: str) -> None:
    """``message``: what follows ``f|<partition>|`` in the notify message."""
    flow_id, status, reason = [*message.split("|", 2), "", ""][:3]
    if not reason:
        log.info("run %s %s", flow_id, status)
        return
    level = logging.WARNING if status == RunStatus.FAILED else logging.INFO
    log.log(level, "run %s %s: %s", flow_id, status, _short(reason))
