"""Fires due timers. Every server process runs one sweeper over all partitions; a timer is
claimed atomically before it is handled, and its transition is guarded, so it fires once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from app.engine.engine import Engine
from app.settings import Settings
from app.store.store import UNREACHABLE
from app.telemetry import metrics

log = logging.getLogger("orchy.timers")

MS_PER_SECOND = 1000
# A failed timer's error goes into the run's history and, in the end, its reason: at most
# this many characters of it.
ERROR_TEXT_LIMIT = 2000


class Sweeper:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = settings
        partitions = self.store.keys.partitions
        # When each partition next needs a look, in this process's clock (ms); 0 = now.
        self._next_due = [0.0] * partitions
        # When every partition was last looked at, notified or not (monotonic seconds).
        self._last_full_sweep = -math.inf
        self._clock_offset_ms = 0.0  # Redis time minus local time
        self._wake = asyncio.Event()
        self._running = False
        self._slots = asyncio.Semaphore(settings.timer_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()

    def notify(self, partition: int, due_redis_ms: int) -> None:
        """A timer due at ``due_redis_ms`` (Redis clock) was added to ``partition``."""
        due_local = due_redis_ms - self._clock_offset_ms
        if 0 <= partition < len(self._next_due) and due_local < self._next_due[partition]:
            self._next_due[partition] = due_local
            self._wake.set()

    def notify_all(self) -> None:
        self._next_due = [0.0] * len(self._next_due)
        self._wake.set()

    async def run(self) -> None:
        self._running = True
        idle_seconds = self.settings.timer_idle_recheck_seconds
        while self._running:
            if time.monotonic() - self._last_full_sweep >= idle_seconds:
                # The safety net: a timer whose notification was lost (say, one that became
                # the earliest of a partition this process thinks has none due for an hour)
                # fires within the idle recheck rather than when that hour is over.
                self._last_full_sweep = time.monotonic()
                self.notify_all()
            try:
                await self.sweep_once()
            except Exception:  # Redis away: keep trying, /health tells the world
                log.exception("timer sweep failed")
                self.notify_all()
                await asyncio.sleep(self.settings.timer_idle_recheck_seconds)
                continue
            now = time.time() * MS_PER_SECOND
            idle_ms = idle_seconds * MS_PER_SECOND
            wake_at = min(min(self._next_due), now + idle_ms)
            delay = max(0.0, wake_at - now) / MS_PER_SECOND
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def sweep_once(self) -> int:
        """Claims and dispatches what is due now; returns how many timers it claimed."""
        claimed = 0
        interval_ms = self.settings.timer_interval_seconds * MS_PER_SECOND
        claim_ms = round(self.settings.timer_claim_seconds * MS_PER_SECOND)
        for partition in range(len(self._next_due)):
            now = time.time() * MS_PER_SECOND
            if self._next_due[partition] > now + interval_ms:
                continue
            claim = await self.store.claim_timers(partition, self.settings.timer_batch, claim_ms)
            self._clock_offset_ms = claim.now_ms - time.time() * MS_PER_SECOND
            metrics.timers_due(claim.now_ms, claim.due)
            for member, _due in claim.due:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(partition, member, claim.now_ms + claim_ms))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            claimed += len(claim.due)
            if len(claim.due) >= self.settings.timer_batch:
                self._next_due[partition] = 0.0
            elif claim.next_due_ms is None:
                self._next_due[partition] = math.inf
            else:
                self._next_due[partition] = claim.next_due_ms - self._clock_offset_ms
        return claimed

    async def _handle(self, partition: int, member: str, claimed_score: int) -> None:
        try:
            await self.engine.handle_timer(member, claimed_score)
        except UNREACHABLE:  # not the timer's fault: its claim expires and it is tried again
            log.warning("timer %s: Redis unreachable; it will be tried again", member)
        except Exception as error:
            log.exception("timer %s failed", member)
            await self._count_failure(partition, member, error)
        finally:
            self._slots.release()

    async def _count_failure(self, partition: int, member: str, error: Exception) -> None:
        """The timer is tried again a bounded number of times, then its run fails (see
        ``Engine.timer_failed``). If even that cannot be done (Redis away), the claim
        expires and the timer is handled again then."""
        text = f"{type(error).__name__}: {error}"[:ERROR_TEXT_LIMIT]
        try:
            await self.engine.timer_failed(partition, member, text)
        except Exception:
            log.exception("timer %s: its failure could not be recorded", member)
