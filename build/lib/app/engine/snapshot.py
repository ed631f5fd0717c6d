"""A run as read in one HGETALL: its fields, executions, and data document."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from app.engine.status import TERMINAL_RUN, RunStatus
from app.jsontypes import JSON, JSONObject


@dataclass(frozen=True)
class Execution:
    """One execution of an action in a run (a user task, a delay, a wait, a join...)."""

    seq: int
    action_id: int
    status: str
    attempt: int
    input_json: str | None
    queue: str | None
    lease_secret: str | None
    event_name: str | None
    event_data_json: str | None
    held_json: str | None
    join_on: list[int]
    output_json: str | None = None  # once it ended with an output
    error: str | None = None
    created_ms: int | None = None
    ended_ms: int | None = None
    # A sub-workflow execution: the child's workflow, its run id once started, and once it
    # has ended its status, output JSON (COMPLETED) and reason.
    child_workflow: str | None = None
    child_id: str | None = None
    child_status: str | None = None
    child_output_json: str | None = None
    child_reason: str | None = None
    parent: int | None = None  # a for-each item: the for-each execution's seq
    index: int | None = None  # a for-each item: its position in the for-each's list


ACTION_PREFIX = "a:"  # a:<id>:<field>, the latest execution of action <id> (common.lua)
OUTPUT_FIELD = "o"  # x:<seq>:o, an execution's output (an action's is its latest's)
LATEST_SEQ_FIELD = "x"
COUNT_FIELD = "c"  # a:<id>:c, the number of executions of action <id>
INPUT_FIELD = "in"
LATEST_SEQ_SUFFIX = ":" + LATEST_SEQ_FIELD
VAR_PREFIX = "v:"  # v:<name>, a workflow variable's JSON (common.lua)


def _optional_int(raw: str | None) -> int | None:
    return None if raw is None or raw == "" else int(raw)


class RunSnapshot:
    def __init__(self, flow_id: str, fields: dict[str, str]) -> None:
        self.flow_id = flow_id
        self.fields = fields

    @property
    def name(self) -> str:
        return self.fields["name"]

    @property
    def version(self) -> int:
        return int(self.fields["version"])

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.fields["status"])

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN

    def execution(self, seq: int) -> Execution | None:
        prefix = f"x:{seq}:"
        fields = self.fields
        if prefix + "a" not in fields:
            return None
        join_on = fields.get(prefix + "jon")
        return Execution(
            seq=seq,
            action_id=int(fields[prefix + "a"]),
            status=fields[prefix + "s"],
            attempt=int(fields[prefix + "n"]),
            input_json=fields.get(prefix + INPUT_FIELD),
            queue=fields.get(prefix + "q"),
            lease_secret=fields.get(prefix + "k"),
            event_name=fields.get(prefix + "evn"),
            event_data_json=fields.get(prefix + "evd"),
            held_json=fields.get(prefix + "held"),
            join_on=[int(part) for part in join_on.split(",")] if join_on else [],
            output_json=fields.get(prefix + OUTPUT_FIELD),
            error=fields.get(prefix + "e") or None,
            created_ms=_optional_int(fields.get(prefix + "t0")),
            ended_ms=_optional_int(fields.get(prefix + "t1")),
            child_workflow=fields.get(prefix + "cw"),
            child_id=fields.get(prefix + "cid"),
            child_status=fields.get(prefix + "cs"),
            child_output_json=fields.get(prefix + "co"),
            child_reason=fields.get(prefix + "ce"),
            parent=_optional_int(fields.get(prefix + "p")),
            index=_optional_int(fields.get(prefix + "i")),
        )

    @property
    def depth(self) -> int:
        """How many parents the run has (0: started by a client)."""
        return int(self.fields.get("depth") or 0)

    @property
    def parent(self) -> tuple[str, int, int] | None:
        """A child run's parent: (flow id, execution seq, action id); None for other runs."""
        parent = self.fields.get("parent")
        if parent is None:
            return None
        return parent, int(self.fields["pseq"]), int(self.fields["paid"])

    def children(self) -> list[tuple[int, str]]:
        """(action id, child run id) of every sub-workflow execution that started one, in
        the order of the executions."""
        return [(action_id, child) for _, action_id, child, _ in self.child_executions()]

    def child_executions(self) -> list[tuple[int, int, str, bool]]:
        """(seq, action id, child run id, is a for-each item) of every sub-workflow execution
        that started one, in the order of the executions."""
        found = []
        for key, child in self.fields.items():
            if key.startswith("x:") and key.endswith(":cid"):
                seq = int(key.split(":")[1])
                item = f"x:{seq}:p" in self.fields
                found.append((seq, int(self.fields[f"x:{seq}:a"]), child, item))
        found.sort()
        return found

    def action_ids(self) -> list[int]:
        ids = {int(key.split(":")[1]) for key in self.fields if key.startswith(ACTION_PREFIX)}
        return sorted(ids)

    def action_field(self, action_id: int, field: str) -> str | None:
        return self.fields.get(f"{ACTION_PREFIX}{action_id}:{field}")

    def _latest(self, action_id: int, field: str) -> str | None:
        """A field of the latest execution of ``action_id``."""
        seq = self.action_field(action_id, LATEST_SEQ_FIELD)
        return None if seq is None else self.fields.get(f"x:{seq}:{field}")

    def _output_text(self, action_id: int, seq: str) -> str | None:
        raw = self.fields.get(f"x:{seq}:{OUTPUT_FIELD}")
        if raw is None:  # a run stored before executions kept outputs kept its action's
            raw = self.fields.get(f"{ACTION_PREFIX}{action_id}:{OUTPUT_FIELD}")
        return raw

    def output(self, action_id: int) -> JSON:
        """The output of the latest execution of ``action_id``, or None (none yet, or it
        has not ended)."""
        seq = self.action_field(action_id, LATEST_SEQ_FIELD)
        raw = None if seq is None else self._output_text(action_id, seq)
        return None if raw is None else orjson.loads(raw)

    def received(self, action_id: int) -> JSON:
        """The input the latest execution of ``action_id`` received, or None if none kept."""
        raw = self._latest(action_id, INPUT_FIELD)
        return None if raw is None else orjson.loads(raw)

    def executions(self, action_id: int) -> int:
        """How many executions of ``action_id`` the run has had (1 for a run stored before
        they were counted: it has at least its latest)."""
        return int(self.action_field(action_id, COUNT_FIELD) or 1)

    def output_texts(self) -> list[tuple[int, str]]:
        """The output JSON of each action whose latest execution has one, by action id: the
        ``<id>`` entries of the document, unparsed. One pass over the fields: a wide run
        has thousands, and every result reads them."""
        found = []
        for key, seq in self.fields.items():
            if key.startswith(ACTION_PREFIX) and key.endswith(LATEST_SEQ_SUFFIX):
                action_id = int(key[len(ACTION_PREFIX) : -len(LATEST_SEQ_SUFFIX)])
                raw = self._output_text(action_id, seq)
                if raw is not None:
                    found.append((action_id, raw))
        found.sort()
        return found

    def input(self) -> JSON:
        return orjson.loads(self.fields["input"])

    def var_texts(self) -> dict[str, str]:
        """The JSON text of each workflow variable, by name."""
        return {
            key[len(VAR_PREFIX) :]: raw
            for key, raw in self.fields.items()
            if key.startswith(VAR_PREFIX)
        }

    def vars(self) -> JSONObject:
        return {name: orjson.loads(raw) for name, raw in self.var_texts().items()}

    def document(self) -> JSONObject:
        """The data document every expression reads (SPEC section 2)."""
        document: JSONObject = {
            "input": self.input(),
            "flow": {"id": self.flow_id, "name": self.name, "version": self.version},
        }
        variables = self.vars()
        if variables:  # a workflow without variables keeps the document it always had
            document["vars"] = variables
        for action_id, raw in self.output_texts():
            document[str(action_id)] = {"output": orjson.loads(raw)}
        return document
