"""Run ids, task ids (one per attempt) and timer members."""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class TaskId:
    """``<flowId>.<seq>.<attempt>``: one attempt of one execution of a user action."""

    flow_id: str
    seq: int
    attempt: int

    def __str__(self) -> str:
        return f"{self.flow_id}.{self.seq}.{self.attempt}"

    @classmethod
    def parse(cls, text: str) -> TaskId | None:
        parts = text.split(".")
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))


class TimerKind(StrEnum):
    FIRE = "fire"  # a delay is over
    WAIT_TIMEOUT = "wto"  # a wait gave up on its event
    STEP = "step"  # a wait got its event, or a join is complete
    LEASE = "lease"  # a worker's lease ran out
    ENQUEUE = "enq"  # a retry's back-off is over
    RESULT = "res"  # a result held while the run was paused


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
