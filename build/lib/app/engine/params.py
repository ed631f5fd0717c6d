"""Parameter resolution (SPEC section 2): JSONPath references inside JSON templates.

A reference is ``{$...}`` inside a string. A string that is exactly one reference becomes
the typed value found; references inside text become text. Paths are JSONPath as parsed by
jsonpath-ng, plus Orchy's shorthand ``$1.output`` for ``$.1.output``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.jsonpath import JSONPath
from jsonpath_ng.parser import parse

from app.jsontypes import JSON

REFERENCE = re.compile(r"\{(\$[^{}]*)\}")
"""A ``{$...}`` reference; group 1 is the path without the braces."""

_SHORTHAND_ROOT = re.compile(r"^\$(?=\d)")
_COMPACT = (",", ":")
_PARSED_PATH_CACHE_SIZE = 4096


class PathError(ValueError):
    """A JSONPath does not parse; the message names the path."""


@dataclass
class Resolution:
    value: JSON
    warnings: list[str] = field(default_factory=list)


def normalize_path(ref: str) -> str:
    """Rewrite Orchy's shorthand ``$1.output.x`` to JSONPath ``$.1.output.x``."""
    return _SHORTHAND_ROOT.sub("$.", ref)


_PROBE_DOCUMENT: dict[str, Any] = {
    "input": {"a": [1, {"b": "c"}]},
    "flow": {"id": "probe", "name": "probe", "version": 1},
    "1": {"output": {"a": 1}},
}


@lru_cache(maxsize=_PARSED_PATH_CACHE_SIZE)
def compile_path(ref: str) -> JSONPath:
    """Parse ``ref`` (shorthand allowed) into a jsonpath-ng expression, cached."""
    path = normalize_path(ref)
    try:
        compiled = parse(path)
    except (JSONPathError, ValueError) as error:
        raise PathError(f"JSONPath {path} does not parse: {error}".strip()) from None
    try:
        # Some expressions parse but cannot be evaluated at all (``&``, ``parent``...).
        compiled.find(_PROBE_DOCUMENT)
    except Exception as error:  # jsonpath-ng raises anything from its evaluators
        reason = str(error) or type(error).__name__
        raise PathError(f"JSONPath {path} cannot be evaluated: {reason}") from None
    return compiled


def references(template: JSON) -> Iterator[str]:
    """Every reference (path without braces) in any string nested in ``template``."""
    if isinstance(template, str):
        for match in REFERENCE.finditer(template):
            yield match.group(1)
    elif isinstance(template, dict):
        for value in template.values():
            yield from references(value)
    elif isinstance(template, list):
        for item in template:
            yield from references(item)


def resolve(template: JSON, document: dict[str, Any]) -> Resolution:
    """Resolve every reference in ``template`` against the run's data ``document``.

    Raises :class:`PathError` for a path that does not parse; definitions are validated
    before they run, so that only happens for templates that skipped validation.
    """
    warnings: list[str] = []
    value = _resolve(template, document, warnings)
    return Resolution(value=value, warnings=list(dict.fromkeys(warnings)))


def resolve_json(template: JSON, document_json: str) -> tuple[str, list[str]]:
    """:func:`resolve` against a document given as JSON text, answering the value as JSON
    text and the warnings: what the processes of a ``DocumentPool`` run."""
    resolution = resolve(template, orjson.loads(document_json))
    return orjson.dumps(resolution.value).decode(), resolution.warnings


def stringify(value: JSON) -> str:
    """The branch key for ``value``: ``true``, ``42``, ``MALE``, ``null``, compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _compact_json(value)


def _resolve(template: JSON, document: dict[str, Any], warnings: list[str]) -> JSON:
    if isinstance(template, str):
        return _resolve_string(template, document, warnings)
    if isinstance(template, dict):
        return {key: _resolve(value, document, warnings) for key, value in template.items()}
    if isinstance(template, list):
        return [_resolve(item, document, warnings) for item in template]
    return template


def _resolve_string(template: str, document: dict[str, Any], warnings: list[str]) -> JSON:
    whole = REFERENCE.fullmatch(template)
    if whole:
        return _lookup(whole.group(1), document, warnings)
    return REFERENCE.sub(
        lambda match: _as_text(_lookup(match.group(1), document, warnings)), template
    )


def _lookup(ref: str, document: dict[str, Any], warnings: list[str]) -> JSON:
    try:
        matches = compile_path(ref).find(document)
    except PathError:
        raise
    except Exception as error:  # a path that evaluates on the probe may still fail on data
        warnings.append(f"path {normalize_path(ref)} could not be evaluated: {error}")
        return None
    if not matches:
        warnings.append(f"path {normalize_path(ref)} found nothing")
        return None
    # A copy, so that whoever receives the value cannot change the run's document.
    return _copy(matches[0].value)


def _copy(value: JSON) -> JSON:
    """A deep copy of a JSON value, made by orjson in C: several times faster than
    ``copy.deepcopy`` on a large one."""
    if not isinstance(value, dict | list):
        return value
    try:
        copied: JSON = orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError:  # not what orjson writes (an integer beyond 64 bits...)
        return copy.deepcopy(value)
    return copied


def _as_text(value: JSON) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _compact_json(value)


def _compact_json(value: JSON) -> str:
    return json.dumps(value, separators=_COMPACT, ensure_ascii=False)
