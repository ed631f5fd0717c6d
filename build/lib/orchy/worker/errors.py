"""Exceptions that action code raises and that the worker raises to its caller."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raised by an action when retrying cannot help (bad input, a refused payment...).

    The attempt is reported with ``retryable: false``, so the server takes the action's
    ``error`` branch (or fails the run) at once instead of spending the retry budget.
    """


class ActionRegistrationError(RuntimeError):
    """The server refused an action definition that the worker sends when it starts."""


class InvalidInputError(NonRetryableError):
    """A task's input does not match the type its action's input is annotated with."""


class InvalidOutputError(NonRetryableError):
    """An action's return value cannot be serialised through its type."""
