"""Listens on the notify channel that the Lua scripts publish to, and wakes this process:
long polls when tasks are queued, the sweeper when a timer becomes the earliest, waits for
a run's end when it ends."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from app.engine import run_log
from app.engine.sweeper import Sweeper
from app.engine.wakeups import Wakeups
from app.telemetry.recorder import Telemetry

log = logging.getLogger("orchy.notify")


class Notifier:
    def __init__(
        self,
        client: Redis,
        channel: str,
        wakeups: Wakeups,
        sweeper: Sweeper | None,
        reconnect_seconds: float,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.wakeups = wakeups
        self.sweeper = sweeper
        self.reconnect_seconds = reconnect_seconds
        self.subscribed = asyncio.Event()
        self.telemetry = telemetry

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("notify channel lost (%s); reconnecting", error)
            self.subscribed.clear()
            # Whatever was published meanwhile is lost: look at everything again.
            self.wakeups.notify_all()
            if self.sweeper is not None:
                self.sweeper.notify_all()
            await asyncio.sleep(self.reconnect_seconds)

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            self.subscribed.set()
            self.wakeups.notify_all()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.dispatch(str(message["data"]))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def dispatch(self, data: str) -> None:
        kind, partition, rest = data.split("|", 2)
        if kind == "q":
            self.wakeups.notify(rest, int(partition))
        elif kind == "t" and self.sweeper is not None:
            self.sweeper.notify(int(partition), int(float(rest)))
        elif kind == run_log.FINISHED:
            run_log.finished(rest)
            flow_id, status = [*rest.split("|", 2), ""][:2]
            self.wakeups.run_ended(flow_id)
            if self.telemetry is not None:
                self.telemetry.run_ended(flow_id, status)
