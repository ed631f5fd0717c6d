"""How an execution ends or is tried again, as ``transition.lua`` takes it (an ``Outcome``):
the outcomes every kind of execution shares."""

from __future__ import annotations

from app.definition import ERROR_BRANCH
from app.engine.planner import dumps
from app.engine.retry import ActionSettings
from app.engine.status import ActionStatus
from app.store.store import Outcome

MS_PER_SECOND = 1000
# The status transition.lua takes for "queue the task again after retry_delay_ms".
RETRY = "QUEUED"


def failed(error: str) -> Outcome:
    """The execution FAILED with ``error``; its action's error branch follows, if it has one."""
    return Outcome(ActionStatus.FAILED, dumps({"error": error}), error=error, branch=ERROR_BRANCH)


def retry_or_fail(
    settings: ActionSettings, failed_attempt: int, error: str, retryable: bool
) -> tuple[Outcome, bool]:
    """A failed attempt of a user task: (queued again after its back-off, True) while its
    action's retry settings allow, else (FAILED, naming the attempts, False)."""
    if retryable and settings.may_retry(failed_attempt):
        delay = settings.retry_delay_seconds(failed_attempt)
        return Outcome(RETRY, error=error, retry_delay_ms=round(delay * MS_PER_SECOND)), True
    return failed(f"{error} (after {failed_attempt} attempt(s))"), False
