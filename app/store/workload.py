"""The work waiting and in hand, as operators look at it: per action, tasks queued, leased
and waiting for a retry's back-off, the oldest queued task, and the workers seen polling.

Read-only views over keys that other scripts write (queues, timers, runs), plus the workers
seen (written by record_poll.lua at polls): nothing here is on a run's path. The leased and
retrying counts read every partition's timers (a lease is a "lease|..." timer, a back-off an
"enq|..." one), so they cost with the number of timers waiting.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.store.keys import Keys
from app.store.scripts import Scripts

# The timer members (common.lua) of a lease, and of a retry's back-off: "<kind>|<flowId>|<seq>|
# <attempt>".
LEASE_TIMER = "lease|"
RETRY_TIMER = "enq|"
# A queue entry: "<flowId>.<seq>.<attempt>" (enqueue in common.lua).
QUEUE_ENTRY = re.compile(r"^(.+)\.(\d+)\.(\d+)$")
# How many entries at the head of each partition's queue are looked at for the oldest one
# still waiting (the head may be an entry of a run that has ended, which a poll would drop).
OLDEST_LOOKAHEAD = 4
QUEUED = "QUEUED"


@dataclass(frozen=True)
class QueueState:
    """One action's queue: entries waiting in it over all partitions (a poll drops those
    of runs that have ended since), when a worker last polled for it (ms), if ever, tasks
    leased and waiting for a retry now, when the oldest task still waiting was queued (ms)
    and how many workers were seen polling for it."""

    name: str
    depth: int
    last_poll_ms: int | None
    leased: int = 0
    retrying: int = 0
    oldest_queued_ms: int | None = None
    workers: int = 0


@dataclass(frozen=True)
class WorkerState:
    """A worker seen polling, or holding leased tasks: the actions it polled for or holds
    tasks of, its last poll (ms; None when it holds tasks but has not polled within the
    window: a worker busy to its concurrency does not poll), and the tasks leased to it."""

    worker_id: str
    actions: tuple[str, ...]
    last_poll_ms: int | None
    tasks_in_hand: int


@dataclass
class TimedTasks:
    """Tasks that wait on a timer: leased ones by action and by worker (and action),
    retrying ones by action."""

    leased: Counter[str] = field(default_factory=Counter)
    held: dict[str, Counter[str]] = field(default_factory=dict)  # worker -> action -> tasks
    retrying: Counter[str] = field(default_factory=Counter)


class Workload:
    def __init__(self, client: Any, keys: Keys, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    async def record_poll(
        self, worker_id: str, actions: Sequence[str], at_ms: int, seen_ms: int
    ) -> None:
        """Notes that ``worker_id`` polled for ``actions`` at ``at_ms`` (and so that a worker
        last polled for each of them then); forgets workers not seen for ``seen_ms``."""
        await self.scripts.record_poll(
            keys=[self.keys.polls, self.keys.workers_seen],
            args=[at_ms, at_ms - seen_ms, worker_id, *actions],
        )

    async def queues(self, now_ms: int, seen_ms: int) -> list[QueueState]:
        """Every known action's queue: the user actions of registered workflows, the
        defined actions and the actions polled for; by name."""
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(self.keys.queue_names)
        pipe.hkeys(self.keys.actions)
        pipe.hgetall(self.keys.polls)
        pipe.zrangebyscore(self.keys.workers_seen, now_ms - seen_ms, "+inf")
        queued, defined, polls, seen = await pipe.execute()
        names = sorted({*queued, *defined, *polls})
        workers: dict[str, set[str]] = {}
        for member in seen:
            worker_id, action = orjson.loads(member)
            workers.setdefault(action, set()).add(worker_id)
        partitions = range(self.keys.partitions)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            for partition in partitions:
                queue = self.keys.queue(partition, name)
                pipe.llen(queue)
                pipe.lrange(queue, 0, OLDEST_LOOKAHEAD - 1)
        replies = await pipe.execute() if names else []
        width = len(partitions)
        timed = await self.timed_tasks()
        for worker_id, actions in timed.held.items():
            for action in actions:
                workers.setdefault(action, set()).add(worker_id)
        heads = [replies[index] for index in range(1, len(replies), 2)]
        oldest = await self._oldest_queued(heads)
        states = []
        for index, name in enumerate(names):
            span = range(index * width, (index + 1) * width)
            times = [at for at in (oldest[i] for i in span) if at is not None]
            states.append(
                QueueState(
                    name,
                    sum(replies[2 * i] for i in span),
                    int(polls[name]) if name in polls else None,
                    leased=timed.leased[name],
                    retrying=timed.retrying[name],
                    oldest_queued_ms=min(times) if times else None,
                    workers=len(workers.get(name, ())),
                )
            )
        return states

    async def _oldest_queued(self, heads: list[list[str]]) -> list[int | None]:
        """For each queue's first entries: when the first one still waiting was queued."""
        entries = [
            (index, match.groups())
            for index, head in enumerate(heads)
            for entry in head
            if (match := QUEUE_ENTRY.match(entry)) is not None
        ]
        if not entries:
            return [None] * len(heads)
        pipe = self.client.pipeline(transaction=False)
        for _, (flow_id, seq, _attempt) in entries:
            fields = [f"x:{seq}:{name}" for name in ("s", "n", "t0", "tq")]
            pipe.hmget(self.keys.run(flow_id).run, *fields)
        oldest: list[int | None] = [None] * len(heads)
        for (index, (_, _, attempt)), (status, current, created, requeued) in zip(
            entries, await pipe.execute(), strict=True
        ):
            if oldest[index] is not None or status != QUEUED or current != attempt:
                continue  # an earlier entry was still waiting, or this one no longer is
            # A first attempt is queued when its execution is created; a retry, when its
            # back-off ends.
            at = requeued if attempt != "1" and requeued is not None else created
            if at is not None:
                oldest[index] = int(at)
        return oldest

    async def timed_tasks(self) -> TimedTasks:
        """The lease and back-off timers of every partition, each one's execution's queue
        name (and a lease's worker) read from its run."""
        pipe = self.client.pipeline(transaction=False)
        for partition in range(self.keys.partitions):
            pipe.zrange(self.keys.timers(partition), 0, -1)
        timers = [
            member.split("|")
            for members in await pipe.execute()
            for member in members
            if member.startswith((LEASE_TIMER, RETRY_TIMER))
        ]
        counts = TimedTasks()
        if not timers:
            return counts
        pipe = self.client.pipeline(transaction=False)
        for _, flow_id, seq, _ in timers:
            pipe.hmget(self.keys.run(flow_id).run, f"x:{seq}:q", f"x:{seq}:w")
        for (kind, *_), (queue, worker) in zip(timers, await pipe.execute(), strict=True):
            if queue is None:
                continue
            if f"{kind}|" == LEASE_TIMER:
                counts.leased[queue] += 1
                if worker is not None:
                    counts.held.setdefault(worker, Counter())[queue] += 1
            else:
                counts.retrying[queue] += 1
        return counts

    async def workers(self, now_ms: int, seen_ms: int) -> list[WorkerState]:
        """The workers seen polling within ``seen_ms``, and those holding leased tasks;
        newest poll first (those that have not polled lately last)."""
        seen = await self.client.zrangebyscore(
            self.keys.workers_seen, now_ms - seen_ms, "+inf", withscores=True
        )
        held = (await self.timed_tasks()).held
        actions: dict[str, set[str]] = {worker_id: set(tasks) for worker_id, tasks in held.items()}
        last: dict[str, int] = {}
        for member, score in seen:
            worker_id, action = orjson.loads(member)
            actions.setdefault(worker_id, set()).add(action)
            last[worker_id] = max(last.get(worker_id, 0), int(score))
        states = [
            WorkerState(
                worker_id,
                tuple(sorted(names)),
                last.get(worker_id),
                sum(held[worker_id].values()) if worker_id in held else 0,
            )
            for worker_id, names in actions.items()
        ]
        return sorted(states, key=lambda worker: (-(worker.last_poll_ms or 0), worker.worker_id))
