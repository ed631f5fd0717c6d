"""The actions one worker serves: their names, functions and optional definitions."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from orchy.worker.jsontypes import JSON, JSONObject
from orchy.worker.typed_io import TypedIO, typed_io

ActionFunc = Callable[..., Any]
F = TypeVar("F", bound=ActionFunc)

RESULT_KEY = "result"
TASK_ARGUMENTS = 2  # (input, task)
"""Where a return value that is not an object is put: ``42`` -> ``{"result": 42}``."""


class RetryPolicy(StrEnum):
    FIXED = "FIXED"
    LINEAR = "LINEAR"
    EXPONENTIAL = "EXPONENTIAL"


@dataclass(frozen=True)
class ActionOptions:
    """The settings given in ``@worker.action(...)``; ``None`` means "left to the server"."""

    retry_count: int | None = None
    retry_after_seconds: float | None = None
    retry_policy: RetryPolicy | None = None
    timeout_seconds: float | None = None
    poll_timeout_seconds: float | None = None

    @classmethod
    def build(
        cls,
        name: str,
        *,
        retry_count: int | None,
        retry_after_seconds: float | None,
        retry_policy: RetryPolicy | str | None,
        timeout_seconds: float | None,
        poll_timeout_seconds: float | None = None,
    ) -> ActionOptions:
        """Validate the decorator's arguments, naming the action in every message."""
        if retry_count is not None and (
            isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0
        ):
            raise ValueError(
                f"action {name!r}: retry_count must be an int >= 0, not {retry_count!r}"
            )
        if retry_after_seconds is not None and not _is_number(retry_after_seconds, minimum=0):
            raise ValueError(
                f"action {name!r}: retry_after_seconds must be a number >= 0, "
                f"not {retry_after_seconds!r}"
            )
        if timeout_seconds is not None and not _is_number(timeout_seconds, minimum=0, strict=True):
            raise ValueError(
                f"action {name!r}: timeout_seconds must be a number > 0, not {timeout_seconds!r}"
            )
        if poll_timeout_seconds is not None and not _is_number(
            poll_timeout_seconds, minimum=0, strict=True
        ):
            raise ValueError(
                f"action {name!r}: poll_timeout_seconds must be a number > 0, "
                f"not {poll_timeout_seconds!r}"
            )
        policy: RetryPolicy | None = None
        if retry_policy is not None:
            try:
                policy = RetryPolicy(str(retry_policy).upper())
            except ValueError:
                allowed = ", ".join(p.value for p in RetryPolicy)
                raise ValueError(
                    f"action {name!r}: retry_policy must be one of {allowed}, not {retry_policy!r}"
                ) from None
        return cls(retry_count, retry_after_seconds, policy, timeout_seconds, poll_timeout_seconds)

    @property
    def given(self) -> bool:
        return any(
            value is not None
            for value in (
                self.retry_count,
                self.retry_after_seconds,
                self.retry_policy,
                self.timeout_seconds,
                self.poll_timeout_seconds,
            )
        )

    def definition(self, name: str) -> JSONObject:
        """The ``POST /metadata/action`` body: the name and only the settings given."""
        body: JSONObject = {"name": name}
        if self.retry_count is not None:
            body["retryCount"] = self.retry_count
        if self.retry_after_seconds is not None:
            body["retryAfterSeconds"] = self.retry_after_seconds
        if self.retry_policy is not None:
            body["retryPolicy"] = self.retry_policy.value
        if self.timeout_seconds is not None:
            body["timeoutSeconds"] = self.timeout_seconds
        if self.poll_timeout_seconds is not None:
            body["pollTimeoutSeconds"] = self.poll_timeout_seconds
        return body


def _is_number(value: object, *, minimum: float, strict: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not math.isfinite(value):
        return False
    return value > minimum if strict else value >= minimum


@dataclass(frozen=True)
class RegisteredAction:
    name: str
    func: ActionFunc
    options: ActionOptions
    is_async: bool
    # A function that takes a second argument also gets the task (its id names the
    # attempt: a key for effects that must happen once).
    wants_task: bool = False
    # The input type to validate and the output type to serialise through, when annotated.
    typed: TypedIO | None = None

    def definition(self) -> JSONObject:
        return self.options.definition(self.name)


def _is_async_callable(func: ActionFunc) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    # A callable object whose ``__call__`` is ``async def``.
    call: object = getattr(type(func), "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


def _takes_two_arguments(func: ActionFunc) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take the input alone
        return False
    positional = [
        parameter
        for parameter in parameters
        if parameter.kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters)
    return len(positional) >= TASK_ARGUMENTS or varargs


class ActionRegistry:
    """Action name -> function, in the order they were declared."""

    def __init__(self) -> None:
        self._actions: dict[str, RegisteredAction] = {}

    def add(self, name: str, func: ActionFunc, options: ActionOptions) -> RegisteredAction:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an action name must be a non-empty string, not {name!r}")
        if not callable(func):
            raise TypeError(f"action {name!r}: {func!r} is not callable")
        if name in self._actions:
            existing = self._actions[name].func
            raise ValueError(
                f"action {name!r} is already registered "
                f"(by {getattr(existing, '__qualname__', existing)!r})"
            )
        action = RegisteredAction(
            name,
            func,
            options,
            _is_async_callable(func),
            _takes_two_arguments(func),
            typed_io(name, func),
        )
        self._actions[name] = action
        return action

    def get(self, name: str) -> RegisteredAction | None:
        return self._actions.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._actions)

    def __iter__(self) -> Iterator[RegisteredAction]:
        return iter(list(self._actions.values()))

    def __len__(self) -> int:
        return len(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions


def normalize_output(value: JSON) -> JSONObject:
    """What an action returned, as the object that becomes ``$.<id>.output``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {RESULT_KEY: value}
