"""Unique names, and waiting on a condition with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

DEFAULT_WAIT_SECONDS = 15.0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    timeout: float = DEFAULT_WAIT_SECONDS,
    step: float = 0.02,
    what: str = "condition",
) -> None:
    """Waits for ``condition`` with a deadline; fails the test when it does not come."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


def wait_until_sync(
    condition: Callable[[], bool],
    timeout: float = DEFAULT_WAIT_SECONDS,
    step: float = 0.02,
    what: str = "condition",
) -> None:
    """``wait_until`` for tests without an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
