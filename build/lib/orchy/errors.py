"""The exceptions of the Orchy client: one per kind of answer, each carrying the server's
message (its ``{"error": "..."}``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchy.client import Run


class OrchyError(Exception):
    """Base of every error the client raises. ``message`` is the server's message (or what
    went wrong on the way to it); ``status`` the HTTP status, None when there was no answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Unauthorized(OrchyError):
    """401: no token, or one the server does not accept (``token=``, ``ORCHY_TOKEN``)."""


class Forbidden(OrchyError):
    """403: the token's role or tenant does not allow this request."""


class NotFound(OrchyError):
    """404: no such run, workflow, version or action."""


class Conflict(OrchyError):
    """409: the run is not in a state that allows it (ended, not paused, not running)."""


class Invalid(OrchyError):
    """422 or 400: the request was refused; the message names the field."""


class TooLarge(OrchyError):
    """413: a body (input, output, event data) over the server's limit."""


class TLSError(OrchyError):
    """The TLS handshake failed: the server's certificate is not signed by a trusted CA (give
    its CA as ``ca_bundle``), or the server wants a client certificate (``client_cert``)."""


class Unavailable(OrchyError):
    """503 (the server cannot reach Redis) or no answer at all (connection refused, reset,
    timed out), once the retries allowed for the call are spent."""


class RunFailed(OrchyError):
    """``Run.result()`` of a run that ended FAILED or TERMINATED: ``run`` is the run as read,
    ``reason`` why it ended."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.id} {run.status}: {run.reason}")
        self.run = run
        self.reason = run.reason


class RunNotEnded(OrchyError):
    """``Run.result()`` of a run still RUNNING or PAUSED (a wait whose timeout came first)."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.id} has not ended: {run.status}")
        self.run = run


__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "OrchyError",
    "RunFailed",
    "RunNotEnded",
    "TLSError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
