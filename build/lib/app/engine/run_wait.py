"""Waiting for a run's end: ``GET /flow/{id}?waitSeconds=`` answers as soon as the run is
COMPLETED, FAILED or TERMINATED, or when the wait is over (with the run as it is then).

No polling: a run ends in whichever script changes it last, and ``finish_run`` (common.lua)
publishes ``f|<partition>|<flowId>|...`` on the notify channel, which every server process
hears (notifier.py), so a run that ends through another process wakes this one's waits at
once. A message can be lost (a reconnect of the channel wakes every wait), so a wait also
reads the run again every ``run_wait_recheck_seconds``."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from app.engine.snapshot import RunSnapshot
from app.engine.status import TERMINAL_RUN
from app.engine.wakeups import Wakeups

if TYPE_CHECKING:
    from app.engine.engine import Engine


async def wait_for_end(
    engine: Engine, flow_id: str, wait_seconds: float, gone: asyncio.Event | None = None
) -> RunSnapshot:
    """The run once it has ended, or as it is when ``wait_seconds`` (at most
    ``max_run_wait_seconds``) are over, the server stops or ``gone`` (the client hung up) is
    set. Raises NotFound as ``engine.snapshot`` does."""
    settings = engine.settings
    deadline = time.monotonic() + min(wait_seconds, settings.max_run_wait_seconds)
    wakeups = engine.wakeups
    while True:
        ended = wakeups.subscribe_run(flow_id)
        try:
            snapshot = await engine.snapshot(flow_id)
            remaining = deadline - time.monotonic()
            over = wakeups.closed or (gone is not None and gone.is_set())
            if snapshot.status in TERMINAL_RUN or remaining <= 0 or over:
                return snapshot
            await Wakeups.wait(ended, min(remaining, settings.run_wait_recheck_seconds), gone)
        finally:
            wakeups.unsubscribe_run(flow_id, ended)
