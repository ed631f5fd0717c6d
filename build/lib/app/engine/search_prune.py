"""Takes ended runs out of the search indexes as their retention runs out.

A run's keys expire ``ORCHY_RETENTION_SECONDS`` after it ends (finish_run in common.lua);
its index entries cannot expire with them (they are members of shared zsets), so every
server process prunes them: each ``ORCHY_SEARCH_PRUNE_INTERVAL_SECONDS``, over every
partition, the runs that ended more than the retention less a lead ago. The lead
(``ORCHY_SEARCH_PRUNE_LEAD_SECONDS``, at most half the retention) lets the script still read
the run it prunes, whose hash says which indexes hold it. Several processes pruning at once
is harmless: each run is taken out by one script, the others find nothing to do.
"""

from __future__ import annotations

import asyncio
import logging

from app.settings import Settings
from app.store.store import Store

log = logging.getLogger("orchy.search")

MS_PER_SECOND = 1000


def prune_after_ms(settings: Settings) -> int:
    """How long after its end a run leaves the indexes (ms)."""
    retention = settings.retention_seconds * MS_PER_SECOND
    lead = min(settings.search_prune_lead_seconds * MS_PER_SECOND, retention / 2)
    return max(0, round(retention - lead))


class SearchPruner:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def prune_once(self) -> int:
        """Prunes every partition once; how many runs it took out."""
        after_ms = prune_after_ms(self.settings)
        batch = self.settings.search_prune_batch
        pruned = 0
        for partition in range(self.store.keys.partitions):
            while True:
                taken = await self.store.prune_search(partition, after_ms, batch)
                pruned += taken
                if taken < batch:
                    break
        return pruned

    async def run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception:  # Redis away: try again next time, /health tells the world
                log.exception("pruning the search indexes failed")
            await asyncio.sleep(self.settings.search_prune_interval_seconds)


__all__ = ["SearchPruner", "prune_after_ms"]
