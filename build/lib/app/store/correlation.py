"""The Redis side of correlated events: the scripts on a correlation index (its own hash
tag, chosen from the event and the key) and the one on a run that receives such an event.
No script touches both: see app/engine/correlation.py for how they hand over."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from app.store.coalesce import Coalescer
from app.store.keys import CorrelationKeys, Keys
from app.store.scripts import script_source

# Scripts on the index slot: common.lua and correlate_index.lua in front.
INDEX_SCRIPTS = ("correlate_register", "correlate_forget", "correlate_publish", "correlate_settle")
RUN_SCRIPTS = ("correlate_deliver",)
WAIT_FIELDS = ("s", "n", "ev", "ck", "cev")
# Deliveries to the runs of one publication are pipelined this many at a time.
DELIVER_CHUNK = 1000


class Delivered(StrEnum):
    """correlate_deliver.lua's answers."""

    DELIVERED = "delivered"  # the wait consumed the event
    HELD = "held"  # the same, in a paused run: it goes on once the run is resumed
    ALREADY = "already"  # the wait had consumed this same event (a delivery made again)
    STALE = "stale"  # the wait no longer waits for it, or has received another event
    TERMINAL = "terminal"  # the run has ended
    MISSING = "missing"  # no such run

    @property
    def got_it(self) -> bool:
        """The wait has the event."""
        return self in (Delivered.DELIVERED, Delivered.HELD, Delivered.ALREADY)


def index_script_source(name: str) -> str:
    """common.lua, correlate_index.lua, then the script."""
    folder = resources.files("app.store") / "lua"
    return script_source("correlate_index") + "\n" + (folder / f"{name}.lua").read_text()


def _pairs(text: str) -> list[list[str]]:
    """A JSON list written by cjson (an empty one comes as ``{}``)."""
    value = orjson.loads(text)
    return [[str(part) for part in item] for item in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class WaitState:
    """What the run says of one correlated wait (``x:<seq>:*``), read in one HMGET."""

    run_status: str | None
    status: str | None
    generation: str | None
    event: str | None
    key: str | None
    token: str | None


@dataclass(frozen=True)
class Taken:
    """A kept event a wait took: its id (token ``k:<id>``), data, and who published it
    ("" for an event kept before publishers were recorded)."""

    event_id: str
    data_json: str
    by: str


@dataclass(frozen=True)
class Settled:
    """A delivery's state: receivers still pending, or done (who got it, and kept)."""

    pending: list[tuple[str, int]]
    done: bool
    kept: bool = False
    delivered: tuple[tuple[str, int, int], ...] = ()
    gone: bool = False


@dataclass(frozen=True)
class DeliveryRecord:
    event: str
    key: str
    data_json: str
    pending: list[tuple[str, int]]
    by: str  # who published it ("" in a record written before publishers were recorded)


def _receivers(text: str) -> list[tuple[str, int]]:
    return [(flow, int(seq)) for flow, seq, *_ in _pairs(text)]


def _settled(reply: list[Any]) -> Settled:
    if reply[0] == "pending":
        return Settled(_receivers(reply[1]), done=False)
    if reply[0] == "gone":
        return Settled([], done=True, gone=True)
    delivered = tuple((flow, int(seq), int(aid)) for flow, seq, aid in _pairs(reply[2]))
    return Settled([], done=True, kept=bool(int(reply[1])), delivered=delivered)


class CorrelationStore:
    def __init__(
        self,
        client: Any,
        keys: Keys,
        retention_seconds: int,
        coalescer: Coalescer | None = None,
    ) -> None:
        self.client = client
        self.coalescer = coalescer or Coalescer(client)
        self.keys = keys
        self.retention_seconds = retention_seconds
        self.scripts = {
            name: client.register_script(index_script_source(name)) for name in INDEX_SCRIPTS
        }
        for name in RUN_SCRIPTS:
            self.scripts[name] = client.register_script(script_source(name))

    def index(self, event: str, key: str) -> CorrelationKeys:
        return self.keys.correlation(event, key)

    # -- the run's side -----------------------------------------------------------------

    async def read_wait(self, flow_id: str, seq: int) -> WaitState:
        fields = ["status", *(f"x:{seq}:{field}" for field in WAIT_FIELDS)]
        values = await self.client.hmget(self.keys.run(flow_id).run, fields)
        return WaitState(*values)

    def _deliver_call(
        self, flow_id: str, seq: int, event: str, key: str, data_json: str, token: str, by: str
    ) -> tuple[list[str], list[Any]]:
        partition = self.keys.partition_of(flow_id)
        keys = self.keys.run(flow_id).as_list()
        args = [flow_id, partition, self.keys.notify_channel, self.retention_seconds]
        return keys, [*args, seq, event, key, data_json, token, by]

    async def deliver(
        self,
        flow_id: str,
        seq: int,
        event: str,
        key: str,
        data_json: str,
        token: str,
        *,
        by: str,
    ) -> tuple[Delivered, int | None]:
        """correlate_deliver.lua: (answer, action id of the wait, if it exists). ``by``: who
        published the event ("" when not known: the history entry then names nobody)."""
        [answer] = await self.deliver_many([(flow_id, seq)], event, key, data_json, token, by=by)
        return answer

    async def deliver_many(
        self,
        receivers: Sequence[tuple[str, int]],
        event: str,
        key: str,
        data_json: str,
        token: str,
        *,
        by: str,
    ) -> list[tuple[Delivered, int | None]]:
        """correlate_deliver.lua for each receiver, pipelined (each its own atomic call)."""
        script = self.scripts["correlate_deliver"]
        answers: list[tuple[Delivered, int | None]] = []
        for first in range(0, len(receivers), DELIVER_CHUNK):
            calls = [
                self._deliver_call(flow_id, seq, event, key, data_json, token, by)
                for flow_id, seq in receivers[first : first + DELIVER_CHUNK]
            ]
            commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
            replies = await self.coalescer.execute(commands)
            for (keys, args), reply in zip(calls, replies, strict=True):
                if isinstance(reply, NoScriptError):  # the script cache was flushed
                    reply = await script(keys=keys, args=args)
                elif isinstance(reply, Exception):
                    raise reply
                answer, aid = reply
                answers.append((Delivered(answer), int(aid) if aid else None))
        return answers

    async def drop_run_timer(self, flow_id: str, member: str) -> None:
        await self.client.zrem(self.keys.timers(self.keys.partition_of(flow_id)), member)

    async def renew_run_timer(self, flow_id: str, member: str, after_ms: int) -> None:
        """Makes a timer of the run's partition due again in ``after_ms``, if it is there."""
        await self._due_again(self.keys.timers(self.keys.partition_of(flow_id)), member, after_ms)

    async def _due_again(self, timers: str, member: str, after_ms: int) -> None:
        seconds, micros = await self.client.time()
        due = int(seconds) * 1000 + int(micros) // 1000 + after_ms
        await self.client.zadd(timers, {member: due}, xx=True)

    # -- the index's side ---------------------------------------------------------------

    async def register(
        self, event: str, key: str, flow_id: str, seq: int, keep_ms: int
    ) -> Taken | None:
        """correlate_register.lua: the kept event the wait took, or None (it waits)."""
        index = self.index(event, key)
        reply = await self.scripts["correlate_register"](
            keys=[index.waiters, index.events], args=[index.takers_prefix, flow_id, seq, keep_ms]
        )
        if reply[0] == "taken":
            return Taken(str(reply[1]), str(reply[2]), str(reply[3]))
        return None

    async def forget(self, event: str, key: str, flow_id: str, seq: int, token: str) -> int:
        index = self.index(event, key)
        return int(
            await self.scripts["correlate_forget"](
                keys=[index.waiters, index.events],
                args=[index.takers_prefix, flow_id, seq, token],
            )
        )

    def _delivery_keys(self, event: str, key: str, delivery_id: str) -> tuple[int, list[str]]:
        index = self.index(event, key)
        record = self.keys.delivery(index.partition, delivery_id)
        return index.partition, [index.waiters, index.events, record, index.timers]

    async def publish(
        self,
        delivery_id: str,
        event: str,
        key: str,
        data_json: str,
        ttl_ms: int,
        first_only: bool,
        retry_ms: int,
        grace_ms: int,
        *,
        by: str,
    ) -> Settled:
        """correlate_publish.lua; ``by``: who publishes it (the principal's name)."""
        partition, keys = self._delivery_keys(event, key, delivery_id)
        args = [delivery_id, partition, self.keys.notify_channel, event, key, data_json]
        args += [ttl_ms, "1" if first_only else "0", retry_ms, grace_ms, by]
        return _settled(await self.scripts["correlate_publish"](keys=keys, args=args))

    async def settle(
        self,
        delivery_id: str,
        event: str,
        key: str,
        results: list[tuple[str, int, int | None]],
        grace_ms: int,
    ) -> Settled:
        partition, keys = self._delivery_keys(event, key, delivery_id)
        args: list[Any] = [delivery_id, partition, self.keys.notify_channel, grace_ms]
        for flow_id, seq, aid in results:
            args += [flow_id, seq, "" if aid is None else aid]
        return _settled(await self.scripts["correlate_settle"](keys=keys, args=args))

    async def delivery(self, partition: int, delivery_id: str) -> DeliveryRecord | None:
        values = await self.client.hmget(
            self.keys.delivery(partition, delivery_id), ["ev", "key", "d", "pending", "by"]
        )
        event, key, data_json, pending, by = values
        if event is None or key is None or data_json is None or pending is None:
            return None
        return DeliveryRecord(event, key, data_json, _receivers(pending), by or "")

    async def drop_index_timer(self, partition: int, member: str) -> None:
        await self.client.zrem(self.keys.timers(partition), member)

    async def retry_index_timer(self, partition: int, member: str, after_ms: int) -> None:
        """Makes a timer of the index's partition due again in ``after_ms`` (Redis's clock),
        if it is still there."""
        await self._due_again(self.keys.timers(partition), member, after_ms)
