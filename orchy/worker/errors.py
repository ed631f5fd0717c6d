"""Exceptions that action code raises and that the worker raises to its caller."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raised by an action when retrying cannot help (bad input, a refused payment...).

    The attempt is reported with ``retryable: false``, so the server takes the action's
    ``error`` branch (or fails the run) at once instead of spending the retry budget.
    """


class ActionRegistrationError(RuntimeError):
    """The server refused an action definition that the worker sends when it starts."""
