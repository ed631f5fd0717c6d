"""Stopping the background tasks of a server (its sweepers and notifiers)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("orchy.server")
# A background task that swallowed one cancellation (redis-py's pub/sub does while it
# subscribes) is cancelled again this often until it ends.
CANCEL_AGAIN_SECONDS = 0.1


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout_seconds: float) -> None:
    """Cancels ``tasks`` and waits for them to end, at most ``timeout_seconds``."""
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.warning("stopped without waiting for %s", names)
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, CANCEL_AGAIN_SECONDS))
