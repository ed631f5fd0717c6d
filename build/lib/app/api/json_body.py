"""Request bodies: each route's size limit, and JSON read strictly.

Python's ``json`` module (FastAPI's parser) and pydantic's both read ``NaN``, ``Infinity``,
integers of any size and lone surrogates (``"\\ud800"``); orjson, which writes everything
the server stores, writes NaN as ``null``, refuses the others, and refuses more than 254
levels of nesting. A body is therefore parsed here once with orjson, which refuses NaN,
Infinity and lone surrogates itself, and checked for what orjson lets through (integers
beyond 64 bits, which it reads as floats, and nesting deeper than ``max_json_depth``).
Only a refused body (or one that may be: a long number may sit in a string) is parsed a
second time, to name the field at fault.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Message, Receive

from app.settings import Settings

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# A JSON number with this many digits may not fit in 64 bits (2**63 has 19).
_DIGITS_AS_ZEROS = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_RUN = b"0" * 19
_LONG_INTEGER = re.compile(rb"(?:^|[:\[,])\s*(-?\d{19,})(?![\d.eE])")
_SHOWN_DIGITS = 40
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPENERS = b"[{"
_CLOSERS = b"]}"
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in _OPENERS + _CLOSERS)
_AS_PARENTHESES = bytes.maketrans(_OPENERS + _CLOSERS, b"(())")


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a route's body may have, and the setting that says so."""

    most: int
    setting: str

    @property
    def variable(self) -> str:
        return f"ORCHY_{self.setting.upper()}"

    def refusal(self, size: int | None) -> str:
        what = "too large" if size is None else f"{size} bytes"
        return f"the request body is {what}; the limit is {self.most} bytes ({self.variable})"


# Routes whose bodies hold user data, by path; every other body gets ``max_body_bytes``.
_ROUTE_LIMITS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/metadata/workflow"), "max_definition_bytes"),
    (re.compile(r"/flow/execute"), "max_input_bytes"),
    (re.compile(r"/flow/execute/many|/tasks/results"), "max_batch_bytes"),
    (re.compile(r"/flow/[^/]+/events/[^/]+"), "max_event_bytes"),
    (re.compile(r"/events/[^/]+"), "max_event_bytes"),
    (re.compile(r"/tasks/[^/]+/(?:complete|fail)"), "max_output_bytes"),
]
DEFAULT_LIMIT = "max_body_bytes"


class BodyLimits:
    """Every route's limit, read from the settings once."""

    def __init__(self, settings: Settings) -> None:
        self._routes = [
            (pattern, BodyLimit(getattr(settings, setting), setting))
            for pattern, setting in _ROUTE_LIMITS
        ]
        self._default = BodyLimit(getattr(settings, DEFAULT_LIMIT), DEFAULT_LIMIT)

    def of(self, path: str) -> BodyLimit:
        for pattern, limit in self._routes:
            if pattern.fullmatch(path):
                return limit
        return self._default


class InvalidBody(ValueError):
    """A body that is not JSON the server can keep; the message names the field."""


def parse(body: bytes, max_depth: int) -> Any:
    """The body's JSON value; raises :class:`InvalidBody` naming what is wrong."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidBody(_diagnose(body, max_depth) or f"body: invalid JSON: {error}") from None
    suspect = _has_long_integer(body) or (
        _may_be_deeper(body, max_depth) and _deeper_than(body, max_depth)
    )
    if suspect:
        problem = _diagnose(body, max_depth)
        if problem is not None:  # else: the long number was inside a string
            raise InvalidBody(problem)
    return value


def _has_long_integer(body: bytes) -> bool:
    """True when a number in the body may be an integer beyond 64 bits (or a long number
    sits inside a string). Most bodies have no run of 19 digits: one C-speed look says so."""
    if body.translate(_DIGITS_AS_ZEROS).find(_LONG_RUN) < 0:
        return False
    return any(not _fits_64_bits(match.group(1)) for match in _LONG_INTEGER.finditer(body))


def _fits_64_bits(digits: bytes | str) -> bool:
    # Python refuses to convert more than 4300 digits; 64 bits never need more than 19.
    if len(digits) > len("-9223372036854775808"):
        return False
    return INT64_MIN <= int(digits) <= INT64_MAX


def _may_be_deeper(body: bytes, max_depth: int) -> bool:
    return body.count(b"[") + body.count(b"{") > max_depth


def _deeper_than(body: bytes, max_depth: int) -> bool:
    """True when the body's arrays and objects nest deeper than ``max_depth``, brackets
    inside strings aside. Every step runs in C: with the escaped backslashes and quotes
    gone, every quote left opens or closes a string; with the strings gone, each pass
    drops the innermost brackets, so a body that is ``max_depth`` deep is gone after
    ``max_depth`` passes. (The body is valid JSON: its brackets pair up.)"""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    brackets = outside_strings.translate(_AS_PARENTHESES, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


@dataclass(frozen=True)
class _Unstorable:
    """A value Python's parser reads and the server cannot keep, as written in the body."""

    text: str
    problem: str


def _constant(text: str) -> _Unstorable:
    return _Unstorable(text, "is not a JSON number (JSON has no NaN or Infinity)")


def _integer(text: str) -> int | _Unstorable:
    if _fits_64_bits(text):
        return int(text)
    shown = (
        text if len(text) <= _SHOWN_DIGITS else f"{text[:_SHOWN_DIGITS]}... ({len(text)} digits)"
    )
    return _Unstorable(shown, "does not fit in a 64-bit integer")


def _float(text: str) -> float | _Unstorable:
    number = float(text)
    if math.isfinite(number):
        return number
    return _Unstorable(text, "is too large for a JSON number (a 64-bit float)")


def _diagnose(body: bytes, max_depth: int) -> str | None:
    """The first thing wrong with ``body``, naming where it is; None when nothing is."""
    try:
        text = body.decode()
    except UnicodeDecodeError as error:
        return f"body: not UTF-8 (byte {error.start})"
    try:
        value = json.loads(text, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    except json.JSONDecodeError as error:
        return f"body: invalid JSON: {error}"
    except RecursionError:
        return f"body: nested deeper than {max_depth} levels (ORCHY_MAX_JSON_DEPTH)"
    for path, item, depth in _walk(value):
        if isinstance(item, dict | list) and depth >= max_depth:
            return f"{path}: nested deeper than {max_depth} levels (ORCHY_MAX_JSON_DEPTH)"
        if isinstance(item, _Unstorable):
            return f"{path}: {item.text} {item.problem}"
        if isinstance(item, str) and not _is_unicode(item):
            return f"{path}: the string holds a lone surrogate (a \\ud800-\\udfff escape)"
    return None


def _walk(value: Any) -> Iterator[tuple[str, Any, int]]:
    """Every value with its path and how many arrays and objects hold it; keys too (each as
    the path of its member). Without recursion: the body may nest deeper than the stack."""
    pending: list[tuple[str, Any, int]] = [("body", value, 0)]
    while pending:
        path, item, depth = pending.pop()
        yield path, item, depth
        if isinstance(item, dict):
            members = [(_member(path, key), key, depth + 1) for key in item] + [
                (_member(path, key), member, depth + 1) for key, member in item.items()
            ]
            pending += reversed(members)
        elif isinstance(item, list):
            pending += reversed(
                [(f"{path}[{index}]", member, depth + 1) for index, member in enumerate(item)]
            )


def _member(path: str, key: str) -> str:
    """``path.key``, or ``path["key"]`` in ASCII when the key is not a plain name."""
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def read_within(receive: Receive, most: int) -> tuple[bytes, bool]:
    """The body and True; or, once it passes ``most`` bytes or the client hangs up, what was
    read and False. (A body read whole may still be longer than ``most``.)"""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > most:
            return b"".join(chunks), False


async def drain(receive: Receive) -> None:
    """Reads and drops the rest of a body, so that the client can read the answer."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def replay(body: bytes, complete: bool, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that gives what was read first, then the rest of the request."""
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return receive_again
