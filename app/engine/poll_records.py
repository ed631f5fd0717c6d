"""Who polls for what: each poll notes its worker and actions in Redis (the actions' last
poll times, and the workers seen: GET /tasks/queues, GET /workers), throttled so that the
workers' busiest route stays cheap."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence

from app.settings import Settings
from app.store.workload import Workload

MS_PER_SECOND = 1000


class PollRecords:
    def __init__(self, workload: Workload, settings: Settings) -> None:
        self.workload = workload
        self.every = settings.poll_record_seconds
        self.seen_ms = round(settings.worker_seen_seconds * MS_PER_SECOND)
        # (worker, action) -> when this process last wrote it, oldest first; entries older
        # than ``every`` are forgotten, so workers that come and go do not pile up here.
        self._written: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def polled(self, worker_id: str, actions: Sequence[str]) -> None:
        """Notes that ``worker_id`` polls (or offers to take tasks) for ``actions``: at most
        once per ``poll_record_seconds`` per worker, action and process; one script call, or
        none."""
        now = time.monotonic()
        written = self._written
        while written and now - next(iter(written.values())) >= self.every:
            written.popitem(last=False)
        last = written.get
        due = [name for name in actions if now - last((worker_id, name), -math.inf) >= self.every]
        if not due:
            return
        await self.workload.record_poll(
            worker_id, due, round(time.time() * MS_PER_SECOND), self.seen_ms
        )
        for name in due:
            written[(worker_id, name)] = now
            written.move_to_end((worker_id, name))
