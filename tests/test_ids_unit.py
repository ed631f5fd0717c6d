"""Run ids, task ids and timer members: their formats and how they parse. Pure: no Redis,
no server."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from app.engine.ids import (
    IDEMPOTENCY_NAMESPACE,
    LEASE_SECRET_BYTES,
    LEASE_SECRET_HEX,
    TaskId,
    TimerKind,
    TimerMember,
    child_flow_id,
    idempotent_flow_id,
    lease_secrets,
    new_flow_id,
)

HEX32 = re.compile(r"[0-9a-f]{32}")
SECRET = "0123456789abcdef" * 2


def test_a_new_flow_id_is_a_random_uuid_in_hex() -> None:
    flow_id = new_flow_id()

    assert HEX32.fullmatch(flow_id)
    assert uuid.UUID(flow_id).version == 4
    assert new_flow_id() != flow_id


def test_the_idempotency_namespace_is_fixed() -> None:
    # Changing it would give every key already used a new run.
    assert str(IDEMPOTENCY_NAMESPACE) == "6f1d4c58-5b8e-4d55-9d3b-1e3c8a0f2b71"


def test_an_idempotent_flow_id_is_the_uuid5_of_workflow_newline_key() -> None:
    flow_id = idempotent_flow_id("order", "k-1")

    assert flow_id == uuid.uuid5(IDEMPOTENCY_NAMESPACE, "order\nk-1").hex
    assert flow_id == idempotent_flow_id("order", "k-1")
    assert uuid.UUID(flow_id).version == 5


def test_a_workflow_name_with_a_newline_is_scoped_as_a_json_array() -> None:
    flow_id = idempotent_flow_id("x\ny", "k")

    assert flow_id == uuid.uuid5(IDEMPOTENCY_NAMESPACE, json.dumps(["x\ny", "k"])).hex
    assert flow_id != idempotent_flow_id("x", "y\nk")


def test_a_newline_in_the_key_alone_keeps_the_first_form() -> None:
    assert idempotent_flow_id("x", "y\nk") == uuid.uuid5(IDEMPOTENCY_NAMESPACE, "x\ny\nk").hex


def test_different_pairs_name_different_runs() -> None:
    ids = {idempotent_flow_id(w, k) for w, k in [("a", "b"), ("b", "a"), ("a", "c"), ("ab", "")]}

    assert len(ids) == 4


def test_lease_secrets_are_128_bit_hex_strings_end_to_end() -> None:
    assert LEASE_SECRET_BYTES == 16
    assert LEASE_SECRET_HEX == 32

    secrets = lease_secrets(3)

    assert re.fullmatch(r"[0-9a-f]{96}", secrets)
    assert lease_secrets(0) == ""
    assert lease_secrets(3) != secrets


def test_a_task_id_with_a_secret_is_flow_seq_attempt_secret() -> None:
    task_id = TaskId("f1", 4, 2, SECRET)

    assert task_id.queue_entry == "f1.4.2"
    assert str(task_id) == f"f1.4.2.{SECRET}"


def test_a_task_id_without_a_secret_is_its_queue_entry() -> None:
    task_id = TaskId("f1", 4, 2)

    assert task_id.secret == ""
    assert str(task_id) == "f1.4.2"


def test_a_task_id_parses_back_to_its_parts() -> None:
    flow_id = new_flow_id()

    parsed = TaskId.parse(f"{flow_id}.12.3.{SECRET}")

    assert parsed == TaskId(flow_id, 12, 3, SECRET)
    assert parsed is not None
    assert type(parsed.seq) is int
    assert type(parsed.attempt) is int
    assert TaskId.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "f1.4.2",  # no secret: a queue entry, not a lease
        f"f1.4.2.{SECRET[:-1]}",  # a secret one digit short
        f"f1.4.2.{SECRET}0",  # one digit long
        f"f1.4.2.{SECRET.upper()}",  # capitals
        f".4.2.{SECRET}",  # no flow id
        f"f.1.4.2.{SECRET}",  # a dot in the flow id
        f"f1.x.2.{SECRET}",
        f"f1.4..{SECRET}",
        f"f1.٤.2.{SECRET}",  # a digit, but not an ASCII one
        f"f1.4.2.{SECRET}\n",
        "",
    ],
)
def test_anything_else_is_not_a_task_id(text: str) -> None:
    assert TaskId.parse(text) is None


def test_timer_kinds_have_short_stable_names() -> None:
    assert {kind.name: kind.value for kind in TimerKind} == {
        "FIRE": "fire",
        "WAIT_TIMEOUT": "wto",
        "STEP": "step",
        "LEASE": "lease",
        "ENQUEUE": "enq",
        "RESULT": "res",
        "POLL_TIMEOUT": "pto",
        "CORRELATE": "creg",
        "DELIVER": "cdel",
        "SPAWN": "spawn",
        "CHILD_END": "cend",
        "KILL": "kill",
        "ITEM_STEP": "istep",
    }


def test_a_child_run_id_is_fixed_by_its_parent_and_execution() -> None:
    first = child_flow_id("p1", 4)
    assert first == child_flow_id("p1", 4)
    assert len({first, child_flow_id("p1", 5), child_flow_id("p2", 4)}) == 3
    assert len(first) == 32 and int(first, 16) >= 0
    # Never a run that an idempotency key names.
    assert first != idempotent_flow_id("p1", "4")


def test_a_timer_member_is_pipe_separated_and_parses_back() -> None:
    member = TimerMember(TimerKind.WAIT_TIMEOUT, "f1", 7, 3)

    assert str(member) == "wto|f1|7|3"
    parsed = TimerMember.parse("wto|f1|7|3")
    assert parsed == member
    assert parsed.kind is TimerKind.WAIT_TIMEOUT
    assert type(parsed.seq) is int
    assert type(parsed.generation) is int


@pytest.mark.parametrize("text", ["fire|f1|7", "fire|f1|7|3|x", "nope|f1|7|3", "fire|f1|x|3"])
def test_a_malformed_timer_member_does_not_parse(text: str) -> None:
    with pytest.raises(ValueError):
        TimerMember.parse(text)
