"""Correlated events: ``POST /events/{event}`` with a key reaches every run whose wait
names that event and key (``"correlationKey"``), with no run id.

Where state lives. The waits and the kept events of one (event, key) are its correlation
index, under a hash tag chosen from the pair (``Keys.correlation``); each run is under its
own. No script touches both slots, so every crossing is a durable, idempotent hand-off
through a partition timer:

- A correlated wait that is reached writes its key (``x:<seq>:ck``) and a "creg" timer, due
  at once, in its run's script (common.lua). Its handler (``_register``) runs
  correlate_register.lua on the index: the wait takes a kept event there (and the event is
  then delivered to the run with correlate_deliver.lua) or is registered as a waiter. Run
  twice, it takes the same event; the run consumes it once (the event's token is kept in
  ``x:<seq>:cev``).
- A publication (``publish``) takes its receivers off the index and records its delivery
  there, with a "cdel" timer in the index's partition, before anything is delivered
  (correlate_publish.lua). Then each receiver's run gets it (correlate_deliver.lua: only a
  wait that still waits and has received nothing consumes it) and correlate_settle.lua ends
  the delivery: receivers whose wait had ended are replaced by the next waiters, or, with
  none, the event is kept. A server that dies between the steps leaves the record and the
  timer: whichever server handles the timer resumes the delivery, and each run still gets
  the event once.
- A registration is kept for the retention of runs: its creg timer comes again halfway
  through and registers the wait again while it still waits (keeping its place), or drops
  it from the index once it no longer does (it timed out, got an event by its run id, or
  its run ended). An event that meets such a registration first drops it too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.engine.ids import TimerKind, TimerMember
from app.engine.status import ActionStatus, RunStatus
from app.settings import Settings
from app.store.correlation import CorrelationStore

MS_PER_SECOND = 1000
LIVE_RUN = frozenset({RunStatus.RUNNING.value, RunStatus.PAUSED.value})
CORRELATION_TIMERS = frozenset({TimerKind.CORRELATE, TimerKind.DELIVER})


@dataclass(frozen=True)
class Published:
    """What a publication did: the waits that got the event (flow id, action id), and
    whether it was kept for waits to come."""

    delivered: list[tuple[str, int]]
    kept: bool


def is_correlation_timer(member: TimerMember) -> bool:
    return member.kind in CORRELATION_TIMERS


class Correlation:
    def __init__(self, store: CorrelationStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.grace_ms = round(settings.event_grace_seconds * MS_PER_SECOND)
        # A registration is kept for the retention of runs, and renewed halfway through
        # while its wait still waits: so it never outlives its run's retention.
        self.keep_ms = store.retention_seconds * MS_PER_SECOND

    async def publish(
        self,
        event: str,
        key: str,
        data_json: str,
        ttl_seconds: float | None,
        first_only: bool,
        *,
        by: str,
    ) -> Published:
        """Delivers ``data_json`` to the runs waiting for (event, key), or keeps it. ``by``
        (the principal's name) goes with it: each run that gets it, now or from the kept
        event later, writes it in its EVENT_RECEIVED entry."""
        ttl = self.settings.event_ttl_seconds if ttl_seconds is None else ttl_seconds
        delivery_id = uuid.uuid4().hex
        settled = await self.store.publish(
            delivery_id,
            event,
            key,
            data_json,
            round(ttl * MS_PER_SECOND),
            first_only,
            round(self.settings.event_delivery_retry_seconds * MS_PER_SECOND),
            self.grace_ms,
            by=by,
        )
        if settled.done:
            return Published([], settled.kept)
        return await self._deliver(delivery_id, event, key, data_json, settled.pending, by)

    async def _deliver(
        self,
        delivery_id: str,
        event: str,
        key: str,
        data_json: str,
        receivers: list[tuple[str, int]],
        by: str,
    ) -> Published:
        """Delivers to ``receivers`` and settles, until the delivery is done."""
        token = f"d:{delivery_id}"
        seen: list[tuple[str, int]] = []
        while True:
            answers = await self.store.deliver_many(receivers, event, key, data_json, token, by=by)
            results: list[tuple[str, int, int | None]] = []
            for (flow_id, seq), (answer, action_id) in zip(receivers, answers, strict=True):
                got = answer.got_it and action_id is not None
                results.append((flow_id, seq, action_id if got else None))
                if got and action_id is not None:
                    seen.append((flow_id, action_id))
            settled = await self.store.settle(delivery_id, event, key, results, self.grace_ms)
            if settled.gone:  # another server ended it: what this one saw
                return Published(seen, kept=False)
            if settled.done:
                delivered = [(flow_id, action_id) for flow_id, _, action_id in settled.delivered]
                return Published(delivered, settled.kept)
            receivers = settled.pending

    # -- timers ---------------------------------------------------------------------

    async def handle_timer(self, member: TimerMember) -> str:
        if member.kind is TimerKind.CORRELATE:
            return await self._register(member)
        return await self._resume_delivery(member)

    async def _register(self, member: TimerMember) -> str:
        """A correlated wait was reached (or its registration is due for renewal): it takes
        a kept event, or waits in the index, registered for the retention of runs and
        registered again halfway through while it still waits. A wait that no longer waits
        leaves the index."""
        flow_id, seq, text = member.flow_id, member.seq, str(member)
        wait = await self.store.read_wait(flow_id, seq)
        if wait.event is None or wait.key is None:  # the run is gone, or has no such wait
            await self.store.drop_run_timer(flow_id, text)
            return "stale"
        event, key = wait.event, wait.key
        still_waiting = (
            wait.run_status in LIVE_RUN
            and wait.status == ActionStatus.WAITING.value
            and wait.generation == "1"
        )
        if not still_waiting:
            await self.store.forget(event, key, flow_id, seq, wait.token or "")
            await self.store.drop_run_timer(flow_id, text)
            return "stale"
        taken = await self.store.register(event, key, flow_id, seq, self.keep_ms)
        if taken is None:
            await self.store.renew_run_timer(flow_id, text, self.keep_ms // 2)
            return "waiting"
        answer, _ = await self.store.deliver(
            flow_id, seq, event, key, taken.data_json, f"k:{taken.event_id}", by=taken.by
        )
        if not answer.got_it:  # the wait ended meanwhile: the event is given back
            await self.store.forget(event, key, flow_id, seq, "")
        await self.store.drop_run_timer(flow_id, text)
        return answer

    async def _resume_delivery(self, member: TimerMember) -> str:
        """A delivery that the server which began it did not finish."""
        partition, delivery_id = member.seq, member.flow_id
        record = await self.store.delivery(partition, delivery_id)
        if record is None:
            await self.store.drop_index_timer(partition, str(member))
            return "gone"
        await self._deliver(
            delivery_id, record.event, record.key, record.data_json, record.pending, record.by
        )
        return "done"

    async def delivery_failed(self, member: TimerMember) -> str:
        """Handling a delivery's timer raised: it is tried again after
        ``timer_retry_seconds``, for as long as its record lasts (each run gets the event
        once however often it is tried)."""
        retry_ms = round(self.settings.timer_retry_seconds * MS_PER_SECOND)
        await self.store.retry_index_timer(member.seq, str(member), retry_ms)
        return "retry"
