"""Run ids, task ids (one per attempt) and timer members."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d4c58-5b8e-4d55-9d3b-1e3c8a0f2b71")


def new_flow_id() -> str:
    return uuid.uuid4().hex


def idempotent_flow_id(workflow: str, key: str) -> str:
    r"""The same (workflow, key) always names the same run, and no other pair names it.

    ``workflow\nkey`` is ambiguous when the workflow's name holds a newline (``"x\ny"`` with
    ``"k"``, ``"x"`` with ``"y\nk"``): such names are written as a JSON array instead, which
    never holds a raw newline, so it cannot meet the first form. Names without a newline
    keep the first form, and the runs their keys named before."""
    scoped = json.dumps([workflow, key]) if "\n" in workflow else f"{workflow}\n{key}"
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, scoped).hex


LEASE_SECRET_BYTES = 16  # 128 random bits per lease
LEASE_SECRET_HEX = 2 * LEASE_SECRET_BYTES
# A for-each item's task id ends with this (lease in common.lua writes it): its result is
# planned from its execution's fields, not from its whole run. Only a hint: a result is
# checked against the run whatever its task id says.
ITEM_SUFFIX = ".i"
_TASK_ID = re.compile(rf"([^.]+)\.(\d+)\.(\d+)\.([0-9a-f]{{{LEASE_SECRET_HEX}}})(\.i)?", re.ASCII)


def lease_secrets(count: int) -> str:
    """``count`` fresh lease secrets end to end, as the leasing scripts take them."""
    return secrets.token_hex(LEASE_SECRET_BYTES * count)


@dataclass(frozen=True)
class TaskId:
    """``<flowId>.<seq>.<attempt>.<secret>``: one lease of one attempt of one execution of a
    user action. The secret is made when the attempt is leased and only its holder is told
    it, so a flow id and its history are not enough to answer for the task. An attempt named
    by a timer rather than a worker has no secret."""

    flow_id: str
    seq: int
    attempt: int
    secret: str = ""
    item: bool = False  # named as a for-each item's task (ITEM_SUFFIX)

    @property
    def queue_entry(self) -> str:
        """``<flowId>.<seq>.<attempt>``: how the attempt waits in its queue, before a lease."""
        return f"{self.flow_id}.{self.seq}.{self.attempt}"

    def __str__(self) -> str:
        if not self.secret:
            return self.queue_entry
        return f"{self.queue_entry}.{self.secret}{ITEM_SUFFIX if self.item else ''}"

    @classmethod
    def parse(cls, text: str) -> TaskId | None:
        match = _TASK_ID.fullmatch(text)
        if match is None:
            return None
        flow_id, seq, attempt, secret, item = match.groups()
        return cls(flow_id, int(seq), int(attempt), secret, item is not None)


class TimerKind(StrEnum):
    FIRE = "fire"  # a delay is over
    WAIT_TIMEOUT = "wto"  # a wait gave up on its event
    STEP = "step"  # a wait got its event, or a join is complete
    LEASE = "lease"  # a worker's lease ran out
    ENQUEUE = "enq"  # a retry's back-off is over
    RESULT = "res"  # a result held while the run was paused
    POLL_TIMEOUT = "pto"  # a queued attempt no worker polled within pollTimeoutSeconds
    # A correlated wait was reached: register it in its correlation index (or take a kept
    # event there). Member "creg|<flowId>|<seq>|1", in the run's partition.
    CORRELATE = "creg"
    # A correlated event's delivery to the runs it found: "cdel|<deliveryId>|<partition>|1",
    # in the partition of the index (the seq field is that partition).
    DELIVER = "cdel"
    SPAWN = "spawn"  # a sub-workflow execution's child run is to be started
    CHILD_END = "cend"  # a child run has ended: its parent's execution is to be told
    KILL = "kill"  # the parent run ended: a sub-workflow execution's child is to be ended
    # A for-each item's child run has ended (child_ended.lua): the item is to be ended, from
    # its own fields (a "step" would read the whole run, which holds every item).
    ITEM_STEP = "istep"


# The timers that hand a sub-workflow's start, end and termination between partitions.
CHILD_TIMER_KINDS = frozenset({TimerKind.SPAWN, TimerKind.CHILD_END, TimerKind.KILL})
CHILD_NAMESPACE = uuid.UUID("3c5b7a1e-9f2d-4e8a-b6c1-7d0e2f4a9b13")


def child_flow_id(parent_flow_id: str, seq: int) -> str:
    """The run a sub-workflow execution (execution ``seq`` of run ``parent_flow_id``) starts:
    always the same id, so that a spawn handled twice starts one run."""
    return uuid.uuid5(CHILD_NAMESPACE, f"{parent_flow_id}|{seq}").hex


@dataclass(frozen=True)
class TimerMember:
    kind: TimerKind
    flow_id: str
    seq: int
    generation: int

    def __str__(self) -> str:
        return f"{self.kind.value}|{self.flow_id}|{self.seq}|{self.generation}"

    @classmethod
    def parse(cls, text: str) -> TimerMember:
        kind, flow_id, seq, generation = text.split("|")
        return cls(TimerKind(kind), flow_id, int(seq), int(generation))
