"""Wakes long-polling requests of this process when tasks are queued for their actions, and
remembers in which partitions tasks may be waiting, so that a poll looks there and not in
every partition. A hint that is missing costs latency, never a task: polls that find
nothing fall back to looking everywhere at least every ``poll_recheck_seconds``."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any


class Wakeups:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        # flow id -> the waits for that run's end (GET /flow/{id}?waitSeconds=).
        self._run_waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        # action -> partition -> how many notifications were seen (a generation counter).
        self._hints: dict[str, dict[int, int]] = defaultdict(dict)
        self._last_full_scan: dict[str, float] = {}
        # Set when the server stops: long polls answer with what they have.
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.notify_all()

    def full_scan_due(self, actions: list[str], interval: float) -> bool:
        """Whether a poll must look in every partition rather than where tasks were
        announced: at least every ``interval`` per action, in case an announcement was
        lost (tasks queued before this process started, or during a reconnect)."""
        stale = time.monotonic() - interval
        return any(self._last_full_scan.get(action, 0.0) < stale for action in actions)

    def scanned_everywhere(self, actions: list[str]) -> None:
        now = time.monotonic()
        for action in actions:
            self._last_full_scan[action] = now

    def hinted(self, actions: list[str]) -> dict[tuple[str, int], int]:
        """The (action, partition) pairs that may hold tasks, with their generations."""
        return {
            (action, partition): generation
            for action in actions
            for partition, generation in self._hints.get(action, {}).items()
        }

    def drained(self, seen: dict[tuple[str, int], int]) -> None:
        """Forgets hints found empty, unless a notification came after they were read."""
        for (action, partition), generation in seen.items():
            hints = self._hints.get(action)
            if hints is not None and hints.get(partition) == generation:
                del hints[partition]

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

    def notify(self, action: str, partition: int | None = None) -> None:
        if partition is not None:
            hints = self._hints[action]
            hints[partition] = hints.get(partition, 0) + 1
        for future in self._waiters.get(action, ()):
            if not future.done():
                future.set_result(None)

    def notify_all(self) -> None:
        self._last_full_scan.clear()
        for waiters in [*self._waiters.values(), *self._run_waiters.values()]:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    # -- run ends ---------------------------------------------------------------------

    def subscribe_run(self, flow_id: str) -> asyncio.Future[None]:
        """A future done when a run end is announced for ``flow_id`` (or everything is woken):
        registered before the run is read, so that no announcement is missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._run_waiters[flow_id].add(future)
        return future

    def unsubscribe_run(self, flow_id: str, future: asyncio.Future[None]) -> None:
        waiters = self._run_waiters.get(flow_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._run_waiters[flow_id]

    def run_ended(self, flow_id: str) -> None:
        """Wakes the waits for the end of ``flow_id`` (told by ``finish_run``'s message)."""
        for future in self._run_waiters.get(flow_id, ()):
            if not future.done():
                future.set_result(None)

    def waiting_for_run(self, flow_id: str) -> int:
        """How many waits of this process are for the end of ``flow_id``."""
        return len(self._run_waiters.get(flow_id, ()))
