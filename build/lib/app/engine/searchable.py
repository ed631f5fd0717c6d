"""Searchable paths: the values of a run that ``GET /flow`` finds it by.

A definition lists them in ``searchable``: ``$.input.<key>[.<key>...]`` (read from the run's
input when it starts) or ``$.vars.<name>`` (a declared variable, indexed again whenever it is
set). A value is indexed under its *token*: a string's own text, a number's or boolean's
JSON text (``42``, ``true``); null, objects, arrays, empty strings and values longer than
``ORCHY_SEARCH_MAX_VALUE_BYTES`` are not indexed. common.lua's ``ix_token`` applies the same
rule to variables' JSON.
"""

from __future__ import annotations

import re

import orjson

from app.definition import DefinitionError
from app.jsontypes import JSON, JSONObject

INPUT = "input"
VARS = "vars"
# ``$.`` then input.<key>(.<key>)* or vars.<name>; a key never holds ``:`` (the index keys
# put one after the path) nor ``=`` (a query's ``where`` puts one after it).
_PATH = re.compile(r"^\$\.((?:input(?:\.[A-Za-z0-9_-]+)+)|(?:vars\.[A-Za-z0-9_-]+))$")


class SearchPathError(ValueError):
    """A searchable path is not of a form that can be indexed."""


def parse_path(text: object) -> str:
    """``$.input.email`` -> ``input.email``; raises :class:`SearchPathError`."""
    if not isinstance(text, str):
        raise SearchPathError(f"must be a string such as '$.input.email', not {text!r}")
    match = _PATH.match(text)
    if match is None:
        raise SearchPathError(
            f"{text!r} must be '$.input.<key>[.<key>...]' or '$.vars.<name>' "
            "(keys of letters, digits, '_' and '-')"
        )
    return match.group(1)


def parse_searchable(
    raw: JSON, variables: JSONObject, max_paths: int | None, max_length: int | None
) -> tuple[str, ...]:
    """A definition's ``searchable``: its paths (without ``$.``), checked."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise DefinitionError(
            f"searchable must be a list of paths such as '$.input.email', not {raw!r}"
        )
    if max_paths is not None and len(raw) > max_paths:
        raise DefinitionError(
            f"searchable: at most {max_paths} paths (ORCHY_SEARCH_MAX_PATHS), not {len(raw)}"
        )
    paths: list[str] = []
    for index, entry in enumerate(raw):
        where = f"searchable[{index}]"
        try:
            path = parse_path(entry)
        except SearchPathError as error:
            raise DefinitionError(f"{where}: {error}") from None
        if max_length is not None and len(path) + 2 > max_length:
            raise DefinitionError(
                f"{where}: at most {max_length} characters (ORCHY_SEARCH_MAX_PATH_LENGTH)"
            )
        if path in paths:
            raise DefinitionError(f"{where}: {entry!r} is listed twice")
        kind, _, rest = path.partition(".")
        if kind == VARS and rest not in variables:
            raise DefinitionError(f"{where}: variable {rest!r} is not declared in vars")
        paths.append(path)
    return tuple(paths)


def token(value: JSON) -> str:
    """The token a value is indexed under ("" when it is not indexed)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    return ""


def input_value(path: str, input_data: JSON) -> JSON:
    """The value at ``input.<key>...`` of ``input_data`` (None when it is not there)."""
    value = input_data
    for key in path.split(".")[1:]:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def start_tokens(paths: tuple[str, ...], input_data: JSON, max_bytes: int) -> dict[str, str]:
    """Each searchable path -> its token when the run starts: the input's values (none when
    longer than ``max_bytes``); "" for variables, which their initial values' ops index."""
    tokens: dict[str, str] = {}
    for path in paths:
        found = token(input_value(path, input_data)) if path.startswith(INPUT + ".") else ""
        tokens[path] = found if len(found.encode()) <= max_bytes else ""
    return tokens


__all__ = [
    "SearchPathError",
    "input_value",
    "parse_path",
    "parse_searchable",
    "start_tokens",
    "token",
]
