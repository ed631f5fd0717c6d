"""Wakes long-polling requests of this process when tasks are queued for their actions."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class Wakeups:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def subscribe(self, actions: list[str]) -> asyncio.Future[None]:
        """Registers before looking at the queues, so that no notification is missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for action in actions:
            self._waiters[action].add(future)
        return future

    def unsubscribe(self, actions: list[str], future: asyncio.Future[None]) -> None:
        for action in actions:
            waiters = self._waiters.get(action)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[action]

    @staticmethod
    async def wait(
        future: asyncio.Future[None], timeout: float, gone: asyncio.Event | None = None
    ) -> None:
        """Waits for ``future``, ``timeout``, or ``gone`` being set, whichever comes first."""
        waits: list[asyncio.Future[Any]] = [asyncio.shield(future)]
        gone_task = None if gone is None else asyncio.ensure_future(gone.wait())
        if gone_task is not None:
            waits.append(gone_task)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in waits:
                pending.cancel()

    def waiting(self, action: str) -> int:
        """How many long polls of this process wait for ``action``."""
        return len(self._waiters.get(action, ()))

    def notify(self, action: str) -> None:
        for future in self._waiters.get(action, ()):
            if not future.done():
                future.set_result(None)

    def notify_all(self) -> None:
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_result(None)
