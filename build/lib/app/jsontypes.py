"""JSON value types shared by every layer."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any value that ``json.loads`` can return."""

JSONObject: TypeAlias = dict[str, Any]


def is_json_number(value: JSON) -> bool:
    """A JSON number: ``true`` is not one, whatever Python's ``bool`` subclassing says."""
    return isinstance(value, int | float) and not isinstance(value, bool)
