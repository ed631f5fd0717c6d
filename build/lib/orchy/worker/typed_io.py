"""Typed action inputs and outputs: pydantic models, TypedDicts and other annotated types.

An action whose input parameter is annotated with a type other than a plain ``dict`` (or
``Any``) gets its input validated into that type before it runs; one whose return annotation
holds a model, a TypedDict or a dataclass gets its output serialised to JSON from it. The
annotations are read once, when the action is registered, and each type's ``TypeAdapter`` is
built then: a call costs one validation and one dump, and an unannotated function nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, is_typeddict

from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError

from orchy.worker.errors import InvalidInputError, InvalidOutputError

logger = logging.getLogger("orchy.worker")

# At most this many field errors in a message: enough to fix the input, short in a run.
MAX_REPORTED_ERRORS = 3
MAX_ERROR_INPUT_CHARS = 60

_UNTYPED: frozenset[object] = frozenset({inspect.Parameter.empty, Any, object, dict, None})
_PLAIN_MAPPINGS: frozenset[object] = frozenset({dict, Mapping, MutableMapping})
_AWAITABLES: frozenset[object] = frozenset({Awaitable, Coroutine})


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    """``typing.get_type_hints`` of the function (of ``__call__`` for a callable object);
    empty when one of its annotations cannot be evaluated."""
    target = func if inspect.isroutine(func) else getattr(func, "__call__", func)  # noqa: B004
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        return {}


def _resolve(annotation: object, func: Callable[..., Any], action: str, role: str) -> object:
    """An annotation that ``get_type_hints`` could not give, evaluated alone in the function's
    module; one that cannot be (a name imported under ``TYPE_CHECKING``, a class local to a
    function) counts as no annotation: the action keeps the untyped behaviour."""
    if not isinstance(annotation, str):
        return annotation
    namespace = getattr(inspect.unwrap(func), "__globals__", None)
    if namespace is None:
        module = inspect.getmodule(func)
        namespace = vars(module) if module is not None else {}
    try:
        return eval(annotation, dict(namespace))
    except Exception as exc:
        logger.warning(
            "action %r: its %s annotation %r cannot be evaluated (%s); it is not validated",
            action,
            role,
            annotation,
            exc,
        )
        return inspect.Parameter.empty


def _is_plain(annotation: object) -> bool:
    """No annotation, ``Any``, ``object``, or a plain mapping such as ``dict[str, Any]`` (or
    ``JSONObject``), possibly ``| None``: these keep the untyped behaviour."""
    if annotation in _UNTYPED or annotation in _PLAIN_MAPPINGS or annotation is type(None):
        return True
    origin = get_origin(annotation)
    if origin in _PLAIN_MAPPINGS:
        return True
    if origin is Union or origin is types.UnionType:
        return all(_is_plain(arg) for arg in get_args(annotation))
    return False


def _is_structured(annotation: object) -> bool:
    """A pydantic model, a TypedDict or a dataclass, or a type made of them (``list[Item]``,
    ``Order | None``): an output worth serialising through its type."""
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return True
    if is_typeddict(annotation):
        return True
    if get_origin(annotation) in _AWAITABLES:
        return False
    return any(_is_structured(arg) for arg in get_args(annotation))


def _type_name(annotation: object) -> str:
    name = getattr(annotation, "__name__", None)
    return name if isinstance(name, str) and get_origin(annotation) is None else repr(annotation)


def _adapter(annotation: Any, action: str, role: str) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(annotation)
    except (PydanticUserError, TypeError, NameError) as exc:
        raise TypeError(
            f"action {action!r}: its {role} annotation {_type_name(annotation)} cannot be "
            f"validated by pydantic: {exc}"
        ) from exc


def describe_validation(error: ValidationError) -> str:
    """``field: message; other.field: message (and 2 more)``, short enough for a run."""
    parts: list[str] = []
    details = error.errors(include_url=False)
    for detail in details[:MAX_REPORTED_ERRORS]:
        where = ".".join(str(part) for part in detail["loc"])
        message = detail["msg"]
        if detail["type"] not in ("missing", "extra_forbidden") and "input" in detail:
            given = repr(detail["input"])
            if len(given) > MAX_ERROR_INPUT_CHARS:
                given = given[: MAX_ERROR_INPUT_CHARS - 3] + "..."
            message = f"{message} (got {given})"
        parts.append(f"{where}: {message}" if where else message)
    more = len(details) - MAX_REPORTED_ERRORS
    text = "; ".join(parts)
    return f"{text} (and {more} more)" if more > 0 else text


@dataclass(frozen=True)
class TypedIO:
    """How one action's input is validated and its output serialised."""

    input_name: str
    input_adapter: TypeAdapter[Any] | None
    output_name: str
    output_adapter: TypeAdapter[Any] | None

    def load(self, value: Any) -> Any:
        """The task's input as the function's input type; InvalidInputError otherwise."""
        if self.input_adapter is None:
            return value
        try:
            return self.input_adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidInputError(
                f"input does not match {self.input_name}: {describe_validation(exc)}"
            ) from None

    def dump(self, value: Any) -> Any:
        """The function's return value as JSON values; InvalidOutputError otherwise."""
        if self.output_adapter is None:
            return dump_output(value)
        try:
            return self.output_adapter.dump_python(value, mode="json", warnings="error")
        except Exception as exc:
            raise InvalidOutputError(
                f"output cannot be serialised as {self.output_name}: {' '.join(str(exc).split())}"
            ) from None


def dump_output(value: Any) -> Any:
    """A returned model as JSON values (whatever the annotation); other values unchanged."""
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json")
        except Exception as exc:
            raise InvalidOutputError(
                f"output cannot be serialised as {type(value).__name__}: {exc}"
            ) from None
    return value


def typed_io(name: str, func: Callable[..., Any]) -> TypedIO | None:
    """The typed input and output of the action ``name``, or None when it has neither."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature
        return None
    positional = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    hints = _hints(func)
    input_type: object = inspect.Parameter.empty
    if positional:
        first = positional[0]
        input_type = (
            hints[first.name]
            if first.name in hints
            else _resolve(first.annotation, func, name, "input")
        )
    output_type = (
        hints["return"]
        if "return" in hints
        else _resolve(signature.return_annotation, func, name, "return")
    )
    input_adapter = None if _is_plain(input_type) else _adapter(input_type, name, "input")
    output_adapter = _adapter(output_type, name, "return") if _is_structured(output_type) else None
    if input_adapter is None and output_adapter is None:
        return None
    return TypedIO(_type_name(input_type), input_adapter, _type_name(output_type), output_adapter)
