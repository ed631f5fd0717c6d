"""The only module that reads or writes Redis. Each method is one atomic step."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.store.coalesce import Coalescer
from app.store.keys import DEFAULT_NAMESPACE, Keys, RunKeys
from app.store.scripts import Scripts
from app.store.search import RunSearch
from app.store.workload import Workload
from app.telemetry import metrics

# redis-py's asyncio ``Redis`` or ``RedisCluster``, opened with ``decode_responses=True``; their
# stubs type every reply as ``bytes | str``, which that option makes ``str``.
RedisClient = Any

# Redis could not be reached or did not answer in time: no fault of the run at hand.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)

# The first KEYS index after the fixed ones of start.lua and transition.lua.
START_FIXED_KEYS = 8
TRANSITION_FIXED_KEYS = 6
# The fields of one execution that ``action_executions`` reads (see common.lua's header).
LISTED_EXECUTION_FIELDS = ("a", "s", "n", "in", "q", "o", "e", "t0", "t1")
# The run hash field that one server process sets when it has counted the run's end.
RUN_END_TOLD = "endTold"
# Fields asked for in one HMGET when looking for an action's executions.
SCAN_CHUNK = 10_000


@dataclass(frozen=True)
class PlannedOp:
    """One step of a plan, as ``apply_ops`` in common.lua reads it."""

    kind: str
    action_id: int
    name: str = ""
    payload: str = ""
    # A "user" op's lease ms when leased at once to the transition's worker; minus its poll
    # timeout ms when queued with one (see apply_ops in common.lua).
    number: int = 0
    queue: str | None = None
    # What a system action's execution received, JSON (a user action's is its payload).
    input: str = ""

    @property
    def leased_at_once(self) -> bool:
        return self.kind == "user" and self.number > 0


@dataclass(frozen=True)
class LeasedTask:
    task_id: str
    flow_id: str
    action_id: int
    attempt: int
    input_json: str
    name: str = ""


@dataclass(frozen=True)
class TimerClaim:
    now_ms: int
    next_due_ms: int | None
    due: list[tuple[str, int]]


@dataclass(frozen=True)
class Outcome:
    """What ends (or retries) one execution, as transition.lua takes it."""

    new_status: str
    output_json: str = ""
    error: str = ""
    branch: str = ""
    retry_delay_ms: int = 0


@dataclass(frozen=True)
class RunStart:
    """All that start.lua takes (see its header)."""

    flow_id: str
    name: str
    version: int
    input_json: str
    idempotency_key: str
    fail_reason: str
    ops: Sequence[PlannedOp]
    by: str  # who starts it (app/engine/audit.py)


@dataclass(frozen=True)
class Transition:
    """All that transition.lua takes (see its header)."""

    flow_id: str
    seq: int
    expected_status: str
    expected_attempt: int
    outcome: Outcome
    ops: Sequence[PlannedOp] = ()
    fail_reason: str = ""
    timer_member: str = ""
    held_member: str = ""
    held_outcome: str = ""
    claimed_score: int | None = None
    lease_to: str = ""  # the worker that gets the ops' tasks leased at once, if any
    expected_rev: str = ""  # the run's revision this was planned from, if it must not move
    lease_secret: str = ""  # the secret of the lease a worker's result names ("" for timers)
    take_secrets: str = ""  # a fresh lease secret per task leased at once, end to end


@dataclass(frozen=True)
class ForEachRetry:
    """A for-each that a retry lets go on (see retry.lua): its FAILED items start again on
    ``queue`` (None: a sub-workflow body, each item a child run), then items not started
    yet, up to ``concurrency`` open at once."""

    seq: int
    queue: str | None
    poll_timeout_ms: int
    concurrency: int


@dataclass(frozen=True)
class RunRetry:
    """All that retry.lua takes (see its header)."""

    flow_id: str
    expected_rev: str
    by: str
    fail_reason: str
    replaced: Sequence[int]  # the executions the ops start afresh
    actions: Sequence[int]  # the ids of the actions retried, for the history
    for_each: Sequence[ForEachRetry]
    ops: Sequence[PlannedOp]


@dataclass(frozen=True)
class ActionExecutions:
    """A page of one action's executions in a run (``Store.action_executions``): the run's
    workflow, how many executions the action has, and the page's (seq, fields) pairs, each
    field named as in the run hash (``x:<seq>:<field>``)."""

    workflow: str
    version: int
    total: int
    page: list[tuple[int, dict[str, str]]]


@dataclass(frozen=True)
class Applied:
    """transition.lua's answer: its status, and the seqs of the tasks it leased at once."""

    status: str
    leased_seqs: tuple[int, ...] = ()

    @classmethod
    def from_reply(cls, reply: Any) -> Applied:
        if isinstance(reply, list):
            return cls(str(reply[0]), tuple(int(seq) for seq in reply[1:]))
        return cls(str(reply))


class Store:
    def __init__(
        self,
        client: RedisClient,
        partitions: int,
        retention_seconds: int,
        namespace: str = DEFAULT_NAMESPACE,
        shared: Store | None = None,
    ) -> None:
        """A store of ``namespace``'s keys; with ``shared``, one on that store's client that
        uses its loaded scripts and its pipeline (see ``in_namespace``)."""
        self.client = client
        self.keys = Keys(partitions, namespace)
        self.retention_seconds = retention_seconds
        self.scripts: Scripts = (
            shared.scripts if shared else Scripts.register(client, metrics.TimedScript)
        )
        self.coalescer: Coalescer = shared.coalescer if shared else Coalescer(client)
        self.search = RunSearch(self.coalescer, self.keys)

    @property
    def workload(self) -> Workload:
        """Queues, leases, retries and workers as operators look at them."""
        return Workload(self.client, self.keys, self.scripts)

    def in_namespace(self, namespace: str) -> Store:
        """The store of another namespace (a tenant) on the same Redis, sharing this one's
        client, scripts and pipeline."""
        return Store(
            self.client, self.keys.partitions, self.retention_seconds, namespace, shared=self
        )

    # -- set-up and health ------------------------------------------------------------

    async def check_partitions(self) -> None:
        """Refuses a partition count other than the one this database was started with."""
        await self.client.hsetnx(self.keys.config, "partitions", str(self.keys.partitions))
        stored = await self.client.hget(self.keys.config, "partitions")
        if stored is not None and int(stored) != self.keys.partitions:
            raise RuntimeError(
                f"this Redis holds runs spread over {stored} partitions; "
                f"set ORCHY_PARTITIONS={stored}"
            )

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # -- definitions ----------------------------------------------------------------

    async def register_workflow(
        self, name: str, digest: str, source: str, user_actions: Sequence[str] = ()
    ) -> tuple[int, bool]:
        """Stores a definition as a new version unless an identical one exists, and notes
        the names of the user actions it queues tasks for (see ``queues``)."""
        keys = [self.keys.workflow(name), self.keys.workflow_names, self.keys.queue_names]
        version, created = await self.scripts.register_workflow(
            keys=keys, args=[name, digest, source, *user_actions]
        )
        return int(version), bool(created)

    async def workflow_source(self, name: str, version: int | None) -> tuple[int, str] | None:
        key = self.keys.workflow(name)
        if version is None:
            latest = await self.client.hget(key, "latest")
            if latest is None:
                return None
            version = int(latest)
        source = await self.client.hget(key, f"v:{version}")
        return None if source is None else (version, source)

    async def workflow_versions(self, name: str) -> int:
        latest = await self.client.hget(self.keys.workflow(name), "latest")
        return 0 if latest is None else int(latest)

    async def workflow_names(self) -> list[str]:
        return sorted(await self.client.smembers(self.keys.workflow_names))

    async def put_action(self, name: str, source: str) -> None:
        await self.client.hset(self.keys.actions, name, source)

    async def action_source(self, name: str) -> str | None:
        value: str | None = await self.client.hget(self.keys.actions, name)
        return value

    async def action_sources(self) -> dict[str, str]:
        values: dict[str, str] = await self.client.hgetall(self.keys.actions)
        return values

    # -- run transitions ------------------------------------------------------------

    def _run_args(self, flow_id: str) -> list[Any]:
        partition = self.keys.partition_of(flow_id)
        return [flow_id, partition, self.keys.notify_channel, self.retention_seconds]

    def _ops(
        self, flow_id: str, ops: Sequence[PlannedOp], first_key: int
    ) -> tuple[list[str], list[Any]]:
        """KEYS for the ops' queues (numbered from ``first_key``) and the ops' ARGV."""
        partition = self.keys.partition_of(flow_id)
        key_index_of: dict[str, int] = {}  # one KEYS entry per queue, however many ops use it
        args: list[Any] = [len(ops)]
        for op in ops:
            key_index = 0
            if op.queue is not None:
                key = self.keys.queue(partition, op.queue)
                key_index = key_index_of.setdefault(key, first_key + len(key_index_of))
            args += [op.kind, op.action_id, op.name, op.payload, op.number, key_index, op.input]
        return list(key_index_of), args

    async def start_run(
        self,
        flow_id: str,
        name: str,
        version: int,
        input_json: str,
        idempotency_key: str,
        fail_reason: str,
        ops: Sequence[PlannedOp],
        *,
        by: str,
    ) -> bool:
        """Creates the run; False when a run with this id already exists."""
        start = RunStart(flow_id, name, version, input_json, idempotency_key, fail_reason, ops, by)
        return (await self.start_runs([start]))[0]

    async def start_runs(self, starts: Sequence[RunStart]) -> list[bool]:
        """Creates several runs in one pipelined round trip (each its own atomic script)."""
        calls = [self._start_call(start) for start in starts]
        return [reply == "created" for reply in await self._run_pipelined("start", calls)]

    def _start_call(self, start: RunStart) -> tuple[list[str], list[Any]]:
        flow_id = start.flow_id
        partition = self.keys.partition_of(flow_id)
        queue_keys, op_args = self._ops(flow_id, start.ops, START_FIXED_KEYS + 1)
        keys = [
            *self.keys.run(flow_id).as_list(),
            self.keys.runs_index(partition),
            self.keys.runs_by_name(partition, start.name),
            *queue_keys,
        ]
        args = [
            *self._run_args(flow_id),
            start.name,
            start.version,
            start.input_json,
            start.idempotency_key,
            start.fail_reason,
            start.by,
            *op_args,
        ]
        return keys, args

    async def _run_pipelined(
        self,
        script_name: str,
        calls: Sequence[tuple[list[str], list[Any]]],
        then_read: Sequence[str] = (),
    ) -> list[Any]:
        """Runs one script many times in one round trip; replies in order. ``then_read``
        names runs to read whole in the same round trip, after the scripts: their fields
        follow the scripts' replies."""
        if not calls and not then_read:
            return []
        script = getattr(self.scripts, script_name)
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls
        ]
        commands += [("HGETALL", self.keys.run(flow_id).run) for flow_id in then_read]
        with metrics.script_call(script_name):
            replies = await self.coalescer.execute(commands)
        reads: list[Any] = replies[len(calls) :]
        for read in reads:
            if isinstance(read, Exception):
                raise read
        answers = []
        reloaded = False
        for (keys, args), reply in zip(calls, replies[: len(calls)], strict=True):
            if isinstance(reply, NoScriptError):
                # Not run (the script cache was flushed): run it the loading way.
                reply = await script(keys=keys, args=args)
                reloaded = True
            elif isinstance(reply, Exception):
                metrics.redis_error(reply)
                raise reply
            answers.append(reply)
        if reloaded and then_read:
            # Those reads came before the scripts run again: read what the scripts left.
            reads = await self.read_runs(then_read)
        return answers + reads

    async def transition(
        self,
        flow_id: str,
        seq: int,
        expected_status: str,
        expected_attempt: int,
        outcome: Outcome,
        ops: Sequence[PlannedOp] = (),
        fail_reason: str = "",
        timer_member: str = "",
        held_member: str = "",
        held_outcome: str = "",
        claimed_score: int | None = None,
        lease_secret: str = "",
    ) -> str:
        change = Transition(
            flow_id,
            seq,
            expected_status,
            expected_attempt,
            outcome,
            ops,
            fail_reason,
            timer_member,
            held_member,
            held_outcome,
            claimed_score,
            lease_secret=lease_secret,
        )
        keys, args = self._transition_call(change)
        return str(await self.scripts.transition(keys=keys, args=args))

    async def transitions(
        self, changes: Sequence[Transition], then_read: Sequence[str] = ()
    ) -> tuple[list[Applied], list[dict[str, str]]]:
        """Several transitions in one pipelined round trip; each is still its own atomic
        script, and the answers come in order. The runs ``then_read`` names are read in the
        same round trip, after the transitions."""
        calls = [self._transition_call(change) for change in changes]
        replies = await self._run_pipelined("transition", calls, then_read)
        applied = [Applied.from_reply(reply) for reply in replies[: len(calls)]]
        return applied, replies[len(calls) :]

    def _transition_call(self, change: Transition) -> tuple[list[str], list[Any]]:
        queue_keys, op_args = self._ops(change.flow_id, change.ops, TRANSITION_FIXED_KEYS + 1)
        keys = [*self.keys.run(change.flow_id).as_list(), *queue_keys]
        outcome = change.outcome
        args = [
            *self._run_args(change.flow_id),
            change.seq,
            change.expected_status,
            change.expected_attempt,
            change.timer_member,
            change.held_member,
            change.held_outcome,
            outcome.new_status,
            outcome.output_json,
            outcome.error,
            outcome.branch,
            outcome.retry_delay_ms,
            change.fail_reason,
            "" if change.claimed_score is None else change.claimed_score,
            change.lease_to,
            change.expected_rev,
            change.lease_secret,
            change.take_secrets,
            *op_args,
        ]
        return keys, args

    async def requeue(
        self,
        flow_id: str,
        seq: int,
        attempt: int,
        timer_member: str,
        queue: str,
        poll_timeout_ms: int = 0,
    ) -> str:
        """Puts a retried attempt back on its queue; with ``poll_timeout_ms`` it fails if no
        poll takes it within that time."""
        partition = self.keys.partition_of(flow_id)
        keys = [*self.keys.run(flow_id).as_list(), self.keys.queue(partition, queue)]
        args = [*self._run_args(flow_id), seq, attempt, timer_member, queue, poll_timeout_ms]
        return str(await self.scripts.requeue(keys=keys, args=args))

    async def drop_queued(self, flow_id: str, queue: str, entry: str) -> None:
        """Takes an attempt that has ended before any poll took it off its queue, so that the
        queue's depth counts only what a poll could still lease. (A poll drops such entries
        anyway: this only keeps the count true.)"""
        queue_key = self.keys.queue(self.keys.partition_of(flow_id), queue)
        await self.client.lrem(queue_key, 1, entry)

    # ``by``: the principal's name, written as ``by`` in the history entry.

    async def send_event(self, flow_id: str, name: str, data_json: str, *, by: str) -> str:
        keys = self.keys.run(flow_id).as_list()
        args = [*self._run_args(flow_id), name, data_json, by]
        return str(await self.scripts.event(keys=keys, args=args))

    async def pause(self, flow_id: str, *, by: str) -> str:
        run_keys = self.keys.run(flow_id)
        keys = [run_keys.run, run_keys.history]
        return str(await self.scripts.pause(keys=keys, args=[flow_id, by]))

    async def resume(self, flow_id: str, *, by: str) -> str:
        keys = self.keys.run(flow_id).as_list()
        return str(await self.scripts.resume(keys=keys, args=[*self._run_args(flow_id), by]))

    async def terminate(self, flow_id: str, reason: str, *, by: str) -> str:
        keys = self.keys.run(flow_id).as_list()
        args = [*self._run_args(flow_id), reason, by]
        return str(await self.scripts.terminate(keys=keys, args=args))

    async def retry(self, change: RunRetry) -> str:
        """Lets an ended run go on (retry.lua): "ok", "missing", "moved" or its status."""
        flow_id = change.flow_id
        partition = self.keys.partition_of(flow_id)
        run_keys = self.keys.run(flow_id).as_list()
        queue_keys, op_args = self._ops(flow_id, change.ops, len(run_keys) + 1)
        for_each = []
        for spec in change.for_each:
            key_index = 0
            if spec.queue is not None:
                key = self.keys.queue(partition, spec.queue)
                if key not in queue_keys:
                    queue_keys.append(key)
                key_index = len(run_keys) + 1 + queue_keys.index(key)
            for_each.append(
                {
                    "seq": spec.seq,
                    "key": key_index,
                    "name": spec.queue or "",
                    "pollTimeoutMs": spec.poll_timeout_ms,
                    "concurrency": spec.concurrency,
                }
            )
        plan = {
            "replaced": list(change.replaced),
            "actions": list(change.actions),
            "forEach": for_each,
        }
        args = [
            *self._run_args(flow_id),
            change.expected_rev,
            change.by,
            change.fail_reason,
            orjson.dumps(plan).decode(),
            *op_args,
        ]
        return str(await self.scripts.retry(keys=[*run_keys, *queue_keys], args=args))

    async def note_rerun(self, flow_id: str, new_flow_id: str, by: str) -> str:
        """Writes in the history of ``flow_id`` that ``new_flow_id`` reruns it."""
        run_keys = self.keys.run(flow_id)
        return str(
            await self.scripts.note_rerun(
                keys=[run_keys.run, run_keys.history], args=[new_flow_id, by]
            )
        )

    # -- sub-workflows ---------------------------------------------------------------

    async def child_started(self, flow_id: str, seq: int, child_id: str, timer_member: str) -> str:
        """Records that execution ``seq`` of ``flow_id`` started run ``child_id`` and removes
        its spawn timer ``timer_member`` (see child_started.lua)."""
        keys = self.keys.run(flow_id).as_list()
        args = [*self._run_args(flow_id), seq, child_id, timer_member]
        return str(await self.scripts.child_started(keys=keys, args=args))

    async def child_ended(
        self, flow_id: str, seq: int, child_id: str, status: str, output_json: str, reason: str
    ) -> str:
        """Delivers the end of run ``child_id`` to execution ``seq`` of its parent
        ``flow_id``, once (see child_ended.lua)."""
        keys = self.keys.run(flow_id).as_list()
        args = [*self._run_args(flow_id), seq, child_id, status, output_json, reason]
        return str(await self.scripts.child_ended(keys=keys, args=args))

    async def drop_run_timer(self, flow_id: str, timer_member: str) -> None:
        """Removes a timer of ``flow_id``'s partition that has been acted on."""
        await self.client.zrem(self.keys.run(flow_id).timers, timer_member)

    # -- tasks ----------------------------------------------------------------------

    async def poll(
        self,
        partition: int,
        queues: Sequence[tuple[str, int]],
        most: int,
        worker_id: str,
        secrets: str,
    ) -> list[LeasedTask]:
        """Leases up to ``most`` tasks of one partition; ``queues`` pairs names with lease ms,
        and ``secrets`` holds ``most`` fresh lease secrets (32 hex digits each, end to end)."""
        keys = [self.keys.timers(partition)]
        keys += [self.keys.queue(partition, name) for name, _ in queues]
        args: list[Any] = [
            self.keys.run_prefix(partition),
            self.keys.history_prefix(partition),
            most,
            worker_id,
            partition,
            self.keys.notify_channel,
            secrets,
        ]
        args += [lease_ms for _, lease_ms in queues]
        rows = await self.scripts.poll(keys=keys, args=args)
        return [
            LeasedTask(
                task_id=row[0],
                flow_id=row[1],
                action_id=int(row[2]),
                attempt=int(row[3]),
                input_json=row[4],
                name=row[5],
            )
            for row in rows
        ]

    async def claim_run_ends(self, flow_ids: Sequence[str]) -> list[dict[str, str] | None]:
        """Marks each ended run as told (every server process hears of each end), in one
        round trip, and answers its name, createdAt and finishedAt to the one process that
        marked it first; None to the others, and for a run that is gone."""
        calls = [([self.keys.run(flow_id).run], [RUN_END_TOLD]) for flow_id in flow_ids]
        replies = await self._run_pipelined("claim_run_end", calls)
        return [
            dict(zip(("name", "createdAt", "finishedAt"), reply, strict=True)) if reply else None
            for reply in replies
        ]

    async def heartbeat(
        self, flow_id: str, seq: int, attempt: int, lease_ms: int, timer_member: str, secret: str
    ) -> str:
        run_keys = self.keys.run(flow_id)
        keys = [run_keys.run, run_keys.timers]
        args = [seq, attempt, lease_ms, timer_member, secret]
        return str(await self.scripts.heartbeat(keys=keys, args=args))

    # -- timers ---------------------------------------------------------------------

    async def timer_failed(
        self, flow_id: str, seq: int, timer_member: str, error: str, retry_ms: int, most: int
    ) -> int:
        """Counts a failed attempt at handling a timer; returns the attempts so far (0: the
        run is gone or has ended, and the timer was dropped). Below ``most`` the timer is
        due again in ``retry_ms``."""
        keys = self.keys.run(flow_id).as_list()
        args = [*self._run_args(flow_id), timer_member, seq, error, retry_ms, most]
        return int(await self.scripts.timer_failed(keys=keys, args=args))

    async def drop_timer(self, partition: int, timer_member: str) -> None:
        """Removes a timer that names no run (it cannot be parsed)."""
        await self.client.zrem(self.keys.timers(partition), timer_member)

    async def claim_timers(self, partition: int, most: int, claim_ms: int) -> TimerClaim:
        reply = await self.scripts.claim_timers(
            keys=[self.keys.timers(partition)], args=[most, claim_ms]
        )
        next_due = int(reply[1])
        members = reply[2:]
        due = [(members[i], int(float(members[i + 1]))) for i in range(0, len(members), 2)]
        return TimerClaim(
            now_ms=int(reply[0]), next_due_ms=None if next_due < 0 else next_due, due=due
        )

    # -- reads ----------------------------------------------------------------------

    async def read_run(self, flow_id: str) -> dict[str, str]:
        fields: dict[str, str] = await self.client.hgetall(self.keys.run(flow_id).run)
        return fields

    async def read_runs(self, flow_ids: Sequence[str]) -> list[dict[str, str]]:
        """Several runs in one pipelined round trip."""
        if not flow_ids:
            return []
        commands = [("HGETALL", self.keys.run(flow_id).run) for flow_id in flow_ids]
        replies = await self.coalescer.execute(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    # What planning a for-each item's result reads of its run (see ``read_executions``): a
    # sub-workflow item's spawn, child's end and kill read its depth and child fields too.
    EXECUTION_RUN_FIELDS = ("id", "name", "version", "status", "rev", "depth")
    EXECUTION_FIELDS: tuple[str, ...] = ("a", "s", "n", "in", "q", "k", "held", "p", "i")
    EXECUTION_FIELDS += ("cw", "cid", "cs", "co", "ce")

    async def read_executions(self, tasks: Sequence[tuple[str, int]]) -> list[dict[str, str]]:
        """For each (flow id, seq), the run's own fields and that execution's, not the whole
        run (one HMGET each, all in one pipelined round trip): a for-each of 10,000 items
        would read 10,000 executions for each result. Fields the run lacks are left out."""
        if not tasks:
            return []
        commands = []
        names_of = []
        for flow_id, seq in tasks:
            names = [
                *self.EXECUTION_RUN_FIELDS,
                *(f"x:{seq}:{field}" for field in self.EXECUTION_FIELDS),
            ]
            names_of.append(names)
            commands.append(("HMGET", self.keys.run(flow_id).run, *names))
        replies = await self.coalescer.execute(commands)
        found = []
        for names, reply in zip(names_of, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            found.append(
                {name: value for name, value in zip(names, reply, strict=True) if value is not None}
            )
        return found

    async def action_executions(
        self, flow_id: str, action_id: int, offset: int, limit: int
    ) -> ActionExecutions | None:
        """The executions of one action in a run, ``limit`` of them from ``offset`` in seq
        order, without reading the run's other fields (its outputs may be large): None when
        there is no such run. Read commands only: a page may see the run move on between
        them, as a read after another would."""
        key = self.keys.run(flow_id).run
        name, version, last = await self.client.hmget(key, "name", "version", "seq")
        if name is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        last_seq = int(last or 0)
        for first in range(1, last_seq + 1, SCAN_CHUNK):
            seqs = range(first, min(first + SCAN_CHUNK, last_seq + 1))
            pipe.hmget(key, [f"x:{seq}:a" for seq in seqs])
        owners = [owner for chunk in await pipe.execute() for owner in chunk]
        wanted = str(action_id)
        mine = [seq for seq, owner in enumerate(owners, start=1) if owner == wanted]
        page = mine[offset : offset + limit]
        pipe = self.client.pipeline(transaction=False)
        for seq in page:
            pipe.hmget(key, [f"x:{seq}:{field}" for field in LISTED_EXECUTION_FIELDS])
        rows = await pipe.execute() if page else []
        executions = [
            {
                f"x:{seq}:{field}": value
                for field, value in zip(LISTED_EXECUTION_FIELDS, row, strict=True)
                if value is not None
            }
            for seq, row in zip(page, rows, strict=True)
        ]
        return ActionExecutions(
            name, int(version), len(mine), list(zip(page, executions, strict=True))
        )

    async def read_history(self, flow_id: str) -> list[str]:
        entries: list[str] = await self.client.lrange(self.keys.run(flow_id).history, 0, -1)
        return entries

    async def newest_runs(self, name: str | None, most: int) -> list[tuple[str, int]]:
        """Up to ``most`` (flow id, created ms) pairs, newest first, over all partitions."""
        per_partition = []
        for partition in range(self.keys.partitions):
            key = (
                self.keys.runs_index(partition)
                if name is None
                else self.keys.runs_by_name(partition, name)
            )
            rows = await self.client.zrevrange(key, 0, most - 1, withscores=True)
            per_partition.append([(member, int(score)) for member, score in rows])
        merged = heapq.merge(*per_partition, key=lambda row: row[1], reverse=True)
        return list(merged)[:most]

    async def prune_search(self, partition: int, after_ms: int, most: int) -> int:
        """Takes up to ``most`` runs of ``partition`` that ended more than ``after_ms`` ago
        out of the search indexes (search_prune.lua); how many it took."""
        keys = [self.keys.ended(partition), self.keys.runs_index(partition)]
        args = [
            after_ms,
            most,
            self.keys.run_prefix(partition),
            self.keys.runs_by_name_prefix(partition),
            self.keys.index_prefix(partition),
        ]
        taken, _next_end = await self.scripts.search_prune(keys=keys, args=args)
        return int(taken)


__all__ = [
    "UNREACHABLE",
    "ActionExecutions",
    "Applied",
    "LeasedTask",
    "Outcome",
    "PlannedOp",
    "RunKeys",
    "RunStart",
    "Store",
    "TimerClaim",
    "Transition",
]
