"""The harness of the Lua script tests: a Store whose run keys live under a key prefix of
its own (the real key layout and hash tags, another prefix), so its partition timers, queues
and notify channel are private, plus raw reads of what the scripts wrote and builders of the
planned ops the engine sends."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from app.engine.ids import TaskId, TimerKind, TimerMember, lease_secrets
from app.store.connection import pubsub_client_for_url
from app.store.keys import Keys, RunKeys
from app.store.store import LeasedTask, Outcome, PlannedOp, Store

RETENTION = 4321
LEASE_MS = 30_000
PUBSUB_SECONDS = 5.0


class IsolatedKeys(Keys):
    """The real key layout under a private prefix (and a private notify channel)."""

    def __init__(self, partitions: int, prefix: str) -> None:
        super().__init__(partitions)
        self.prefix = prefix

    def _base(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}"

    @property
    def notify_channel(self) -> str:
        return f"{self.prefix}:notify"


class Lua:
    """A private Store plus raw reads of what the scripts wrote."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    # -- names ------------------------------------------------------------------------

    @staticmethod
    def new_flow() -> str:
        return uuid.uuid4().hex

    @staticmethod
    def new_name(what: str = "act") -> str:
        return f"{what}-{uuid.uuid4().hex[:10]}"

    def run_keys(self, flow: str) -> RunKeys:
        return self.keys.run(flow)

    def partition(self, flow: str) -> int:
        return self.keys.partition_of(flow)

    def queue_key(self, flow: str, queue: str) -> str:
        return self.keys.queue(self.partition(flow), queue)

    def timers_key(self, flow: str) -> str:
        return self.keys.timers(self.partition(flow))

    # -- raw reads --------------------------------------------------------------------

    async def now(self) -> int:
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def run(self, flow: str) -> dict[str, str]:
        fields: dict[str, str] = await self.client.hgetall(self.run_keys(flow).run)
        return fields

    async def history(self, flow: str) -> list[dict[str, Any]]:
        entries = await self.client.lrange(self.run_keys(flow).history, 0, -1)
        return [json.loads(entry) for entry in entries]

    async def events(self, flow: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.run_keys(flow).events, 0, -1)
        return entries

    async def waiters(self, flow: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.run_keys(flow).waiters, 0, -1)
        return entries

    async def held(self, flow: str) -> set[str]:
        members: set[str] = await self.client.smembers(self.run_keys(flow).held)
        return members

    async def queue(self, flow: str, queue: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.queue_key(flow, queue), 0, -1)
        return entries

    async def score(self, flow: str, member: str) -> float | None:
        value: float | None = await self.client.zscore(self.timers_key(flow), member)
        return value

    async def ttl(self, key: str) -> int:
        return int(await self.client.ttl(key))

    # -- script calls -----------------------------------------------------------------

    async def start(
        self,
        ops: Sequence[PlannedOp],
        flow: str | None = None,
        fail_reason: str = "",
        name: str | None = None,
        input_json: str = '{"in":1}',
    ) -> str:
        flow = flow or self.new_flow()
        name = name or self.new_name("wf")
        created = await self.store.start_run(
            flow, name, 3, input_json, "", fail_reason, ops, by="tester"
        )
        assert created is True
        return flow

    async def poll(
        self, flow: str, queue: str, most: int = 10, lease_ms: int = LEASE_MS
    ) -> list[LeasedTask]:
        return await self.store.poll(
            self.partition(flow), [(queue, lease_ms)], most, "w-1", lease_secrets(most)
        )

    async def secret(self, flow: str, seq: int) -> str | None:
        """The secret of the execution's current lease, as the leasing script stored it."""
        value: str | None = await self.client.hget(self.run_keys(flow).run, f"x:{seq}:k")
        return value

    async def complete(
        self,
        flow: str,
        seq: int,
        output: str = '{"ok":true}',
        ops: Sequence[PlannedOp] = (),
        fail_reason: str = "",
        attempt: int = 1,
        secret: str = "",
    ) -> str:
        """A worker's success for a leased task, as the engine sends it (with ``secret``, as
        a result naming that lease secret)."""
        return await self._leased_result(
            flow,
            seq,
            attempt,
            Outcome("COMPLETED", output, branch="default"),
            ops,
            fail_reason,
            held_outcome=json.dumps({"output": json.loads(output)}),
            secret=secret,
        )

    async def fail(
        self,
        flow: str,
        seq: int,
        error: str,
        ops: Sequence[PlannedOp] = (),
        fail_reason: str = "",
        attempt: int = 1,
    ) -> str:
        return await self._leased_result(
            flow,
            seq,
            attempt,
            Outcome("FAILED", json.dumps({"error": error}), error=error, branch="error"),
            ops,
            fail_reason,
        )

    async def fail_retryable(self, flow: str, seq: int, error: str, attempt: int = 1) -> str:
        """A retryable failure of the leased task, its next attempt due at once: it waits on
        the ``enq`` timer a test fires with ``store.requeue``."""
        return await self.store.transition(
            flow,
            seq,
            "RUNNING",
            attempt,
            Outcome("QUEUED", error=error, retry_delay_ms=0),
            timer_member=member("lease", flow, seq, attempt),
        )

    async def _leased_result(
        self,
        flow: str,
        seq: int,
        attempt: int,
        outcome: Outcome,
        ops: Sequence[PlannedOp],
        fail_reason: str,
        held_outcome: str = "",
        secret: str = "",
    ) -> str:
        """A worker's result for the lease ``attempt`` of a RUNNING task, as the engine sends
        it, naming the lease's timer and held-result members as the engine does."""
        return await self.store.transition(
            flow,
            seq,
            "RUNNING",
            attempt,
            outcome,
            ops,
            fail_reason,
            timer_member=member("lease", flow, seq, attempt),
            held_member=member("res", flow, seq, attempt),
            held_outcome=held_outcome,
            lease_secret=secret,
        )

    async def finish_waiting(
        self, flow: str, seq: int, kind: str, generation: int, output: str = "{}"
    ) -> str:
        """A fired timer completing a WAITING execution, as the engine sends it."""
        timer = member(kind, flow, seq, generation)
        return await self.store.transition(
            flow,
            seq,
            "WAITING",
            generation,
            Outcome("COMPLETED", output, branch="default"),
            timer_member=timer,
            held_member=timer,
        )


def member(kind: str, flow: str, seq: int, n: int) -> str:
    return str(TimerMember(TimerKind(kind), flow, seq, n))


def queue_entry(flow: str, seq: int, attempt: int) -> str:
    """How an attempt waits in its queue."""
    return TaskId(flow, seq, attempt).queue_entry


def entry_of(task_id: str) -> str:
    """The queue entry a leased task id extends with its secret (checked for shape)."""
    parsed = TaskId.parse(task_id)
    assert parsed is not None, f"{task_id!r} is not <flowId>.<seq>.<attempt>.<secret>"
    return parsed.queue_entry


def user(aid: int, queue: str, payload: str = "{}") -> PlannedOp:
    return PlannedOp("user", aid, queue, payload, queue=queue)


def user_with_poll_timeout(aid: int, queue: str, poll_timeout_ms: int) -> PlannedOp:
    """A queued user task that fails if no poll takes it within ``poll_timeout_ms``."""
    return PlannedOp("user", aid, queue, "{}", number=-poll_timeout_ms, queue=queue)


def done(aid: int, output: str = "{}", branch: str = "default") -> PlannedOp:
    return PlannedOp("done", aid, branch, output)


def failed(aid: int, error: str) -> PlannedOp:
    return PlannedOp("failed", aid, payload=error)


def sleep(aid: int, ms: int) -> PlannedOp:
    return PlannedOp("sleep", aid, number=ms)


def wait(aid: int, event: str, timeout_ms: int = -1) -> PlannedOp:
    return PlannedOp("wait", aid, event, number=timeout_ms)


def join(aid: int, on: str) -> PlannedOp:
    return PlannedOp("join", aid, payload=on)


def limit(most: int) -> PlannedOp:
    """The run's limit of executions, written at its start."""
    return PlannedOp("limit", 0, number=most)


def loop(aid: int, joins: str) -> PlannedOp:
    """While ``aid`` starts a pass of its body; ``joins``: the joins of its loop."""
    return PlannedOp("loop", aid, payload=joins)


def note(aid: int, text: str) -> PlannedOp:
    return PlannedOp("note", aid, payload=text)


def end(aid: int, status: str, reason: str, output: str = "") -> PlannedOp:
    """A terminate action ending the run (``output``: the run's output JSON, or "")."""
    return PlannedOp("end", aid, status, reason, input=output)


def each(
    aid: int, queue: str, payloads: list[str], concurrency: int, mode: str = "fail"
) -> PlannedOp:
    """A for-each of ``payloads``, item k at index 10 * k (as if a filter had kept them)."""
    lines = [f"{concurrency} {mode}", *(f"{10 * k} {p}" for k, p in enumerate(payloads))]
    return PlannedOp("each", aid, queue, "\n".join(lines), queue=queue, input='{"items":3}')


def item(aid: int, queue: str, seq: int, poll_timeout_ms: int = 0) -> PlannedOp:
    return PlannedOp("item", aid, queue, str(seq), number=-poll_timeout_ms, queue=queue)


def events_of(history: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in history]


def private_lua(store: Store) -> Lua:
    """A Store like ``store`` whose run keys and notify channel are this test's own."""
    private = copy.copy(store)
    private.keys = IsolatedKeys(store.keys.partitions, f"orchy-lua-{uuid.uuid4().hex[:12]}")
    private.retention_seconds = RETENTION
    return Lua(private)


@asynccontextmanager
async def notify_subscription(lua: Lua, redis_url: str) -> AsyncIterator[Any]:
    """A pub/sub connection subscribed to the private notify channel of ``lua``."""
    client = pubsub_client_for_url(redis_url)
    channel: Any = client.pubsub()
    await channel.subscribe(lua.keys.notify_channel)
    # The subscription is confirmed before the test publishes anything.
    confirm = await channel.get_message(timeout=PUBSUB_SECONDS)
    assert confirm is not None and confirm["type"] == "subscribe"
    try:
        yield channel
    finally:
        await channel.aclose()
        await client.aclose()


async def messages(channel: Any, count: int) -> list[str]:
    deadline = time.monotonic() + PUBSUB_SECONDS
    got: list[str] = []
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {got} of {count} notify messages arrived")
        message = await channel.get_message(
            ignore_subscribe_messages=True, timeout=min(remaining, 0.5)
        )
        if message is not None:
            got.append(message["data"])
    return got


async def assert_no_run(lua: Lua, flow: str, name: str) -> None:
    keys = lua.run_keys(flow)
    for key in (keys.run, keys.history, keys.events, keys.waiters, keys.held):
        assert await lua.client.exists(key) == 0, key
    partition = lua.partition(flow)
    assert await lua.client.zscore(lua.keys.runs_index(partition), flow) is None
    assert await lua.client.zscore(lua.keys.runs_by_name(partition, name), flow) is None
