"""JSON value types of the worker library (the same aliases as the server's)."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any value that ``json.loads`` can return."""

JSONObject: TypeAlias = dict[str, Any]
