"""``GET /flow``'s filters and cursor, read from the query string (see app/store/search.py).

- ``name``, ``version`` (with ``name``), ``status`` (repeated, or comma-separated: any of);
- ``startedAfter``/``startedBefore``, ``endedAfter``/``endedBefore``: ISO 8601 times
  (``2026-01-05T10:00:00Z``) or ms since the epoch; "after" includes its time, "before"
  does not;
- ``where=$.input.email=a@b.c`` (repeatable, all must hold): a path the run's definition
  declares ``searchable``, ``=``, the value (a string's text, or a number's or boolean's
  JSON: ``where=$.vars.orderId=42`` finds 42 and "42");
- ``cursor``: a page's ``nextCursor``, for the page after it.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from app.engine.errors import Invalid
from app.engine.searchable import SearchPathError, parse_path
from app.engine.status import RunStatus
from app.store.search import Position, RunQuery

MS_PER_SECOND = 1000


def parse_time(field: str, raw: str | None) -> int | None:
    """ms since the epoch, from ms or an ISO 8601 time (UTC when it names no zone)."""
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid(
            f"{field}: {raw!r} is neither an ISO 8601 time (2026-01-05T10:00:00Z) nor ms"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * MS_PER_SECOND)


def parse_statuses(raw: list[str] | None) -> tuple[str, ...]:
    names = [name.strip() for entry in raw or () for name in entry.split(",") if name.strip()]
    allowed = {status.value for status in RunStatus}
    for name in names:
        if name not in allowed:
            raise Invalid(f"status: {name!r} is not one of {', '.join(sorted(allowed))}")
    return tuple(dict.fromkeys(names))


def parse_where(raw: list[str] | None, max_value_bytes: int) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for entry in raw or ():
        path_text, equals, value = entry.partition("=")
        if not equals:
            raise Invalid(f"where: {entry!r} must be '<path>=<value>', e.g. '$.input.email=a@b.c'")
        try:
            path = parse_path(path_text)
        except SearchPathError as error:
            raise Invalid(f"where: {error}") from None
        if value == "" or len(value.encode()) > max_value_bytes:
            raise Invalid(
                f"where: the value for {path_text} must have 1 to {max_value_bytes} bytes "
                "(ORCHY_SEARCH_MAX_VALUE_BYTES): longer values are not indexed"
            )
        found.append((path, value))
    return tuple(found)


def build_query(
    *,
    name: str | None,
    version: int | None,
    status: list[str] | None,
    started_after: str | None,
    started_before: str | None,
    ended_after: str | None,
    ended_before: str | None,
    where: list[str] | None,
    max_value_bytes: int,
) -> RunQuery:
    if version is not None and name is None:
        raise Invalid("version: give name too (a version is a version of one workflow)")
    return RunQuery(
        name=name,
        version=version,
        statuses=parse_statuses(status),
        started_after=parse_time("startedAfter", started_after),
        started_before=parse_time("startedBefore", started_before),
        ended_after=parse_time("endedAfter", ended_after),
        ended_before=parse_time("endedBefore", ended_before),
        values=parse_where(where, max_value_bytes),
    )


def encode_cursor(position: Position | None) -> str | None:
    if position is None:
        return None
    text = f"{position.score}:{position.member}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> Position | None:
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        score, _, member = text.partition(":")
        if not member:
            raise ValueError(text)
        return Position(int(score), member)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("cursor: not a cursor this server gave (use a page's nextCursor)") from None


__all__ = ["build_query", "decode_cursor", "encode_cursor", "parse_time"]
