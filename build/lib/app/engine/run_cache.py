"""Runs kept in memory as of this server's last transition of them.

A run whose next task was leased at once to a worker (see ``TakeNext``) is read in the same
round trip as that transition and kept here; the worker's next result is then planned from
this copy instead of a fresh read. Every script that changes a run raises its revision, and
the transition planned from a copy carries the revision it saw: if the run has changed
since, the script answers "moved", changes nothing, and the engine reads the run again.

The runs of the tasks a poll leases are read while the poll is answered (``reading``): a
result that comes before that read is back waits for it rather than reading its run
again, and the copy the read brings is then the one it takes (a read that landed after
its task's result would only leave a copy already out of date).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence

MOVED = "moved"


class RunCache:
    REVISION = "rev"

    def __init__(self, size: int) -> None:
        self._size = size
        self._runs: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[None]] = {}

    @property
    def enabled(self) -> bool:
        return self._size > 0

    def keep(self, runs: Iterable[dict[str, str]]) -> None:
        """Keeps runs as read (a run without a revision, or gone, is not kept)."""
        for fields in runs:
            flow_id = fields.get("id")
            if flow_id is None or self.REVISION not in fields:
                continue
            self._runs[flow_id] = fields
            self._runs.move_to_end(flow_id)
            if len(self._runs) > self._size:
                self._runs.popitem(last=False)

    def reading(self, flow_ids: Sequence[str], read: asyncio.Future[None]) -> None:
        """``read`` is out to fetch these runs and keep them."""
        for flow_id in flow_ids:
            self._reading[flow_id] = read
        read.add_done_callback(lambda _: self._read_over(flow_ids, read))

    def _read_over(self, flow_ids: Sequence[str], read: asyncio.Future[None]) -> None:
        for flow_id in flow_ids:
            if self._reading.get(flow_id) is read:
                del self._reading[flow_id]

    def peek(self, flow_id: str) -> dict[str, str] | None:
        """The kept copy of a run, left kept."""
        return self._runs.get(flow_id)

    async def take(self, flow_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The kept copies of these runs, removed: a copy serves one transition. Reads out
        for them are waited for (one that fails only leaves its runs unkept)."""
        reads = {self._reading[flow_id] for flow_id in flow_ids if flow_id in self._reading}
        if reads:
            await asyncio.wait(reads)
        taken = {}
        for flow_id in flow_ids:
            fields = self._runs.pop(flow_id, None)
            if fields is not None:
                taken[flow_id] = fields
        return taken

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._runs
