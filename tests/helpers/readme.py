"""Helpers of the tests that hold the README to its word (``test_readme_*.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.settings import Settings
from app.store.keys import Keys

MS_PER_SECOND = 1000


def readme_defaults(settings: Settings) -> Settings:
    """``settings`` with the user action defaults the server ships with (the tests' own
    settings shrink them to run fast)."""
    names = (
        "default_retry_count",
        "default_retry_after_seconds",
        "default_retry_policy",
        "default_timeout_seconds",
    )
    return settings.model_copy(update={name: Settings.model_fields[name].default for name in names})


def at_ms(entry: dict[str, Any]) -> int:
    """When a history entry was written, in ms (the server writes milliseconds)."""
    moment = datetime.fromisoformat(str(entry["at"]).replace("Z", "+00:00"))
    return round(moment.timestamp() * MS_PER_SECOND)


async def redis_now_ms(redis_client: Any) -> int:
    """Redis's clock, which every script's timestamps and timers use."""
    seconds, micros = await redis_client.time()
    return int(seconds) * MS_PER_SECOND + int(micros) // MS_PER_SECOND


def timers_key(settings: Settings, flow_id: str) -> str:
    keys = Keys(settings.partitions)
    return keys.timers(keys.partition_of(flow_id))
