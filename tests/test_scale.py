"""Scale and faults, end to end: real ``orchy serve`` processes, HTTP workers spread over
them, a Redis of their own (a private ``redis-server`` or a private 3-master Redis Cluster
started for each test, whatever ``REDIS_URL`` says), and the scenario of
``tests/helpers/scale.py``. Each test checks the outcome itself: every run started and
completed, every execution of a user action (each loop pass, each for-each item, each
child run's action) run once and its result accepted once, every action of every run
completed once (a loop's as many times as it has passes), each control run's correlated
event received once, nothing answered with an error, no error in the servers' logs.

Slow: left out by default, run with ``python -m pytest -m slow`` (or ``-m ""``, as ``.ci/run``
does).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.cluster import private_cluster
from tests.helpers.processes import Processes, RedisProcess
from tests.helpers.scale import (
    ALL_ACTIONS,
    CHILD,
    CONCURRENCY,
    CONTROL_E,
    EACH,
    ITEMS,
    LOOP,
    LOOP_PASSES,
    ORDER_EVENT,
    PASS,
    SUB,
    USER_ACTIONS,
    WAIT,
    A,
    Fault,
    Record,
    item_seqs,
    run_scenario,
)

pytestmark = pytest.mark.slow

SERVERS = 3
RUNS = 2000
DEADLINE_SECONDS = 200.0
TEST_TIMEOUT_SECONDS = 300


PLAIN_RUN = Counter({(action, None): 1 for action in USER_ACTIONS})
CONTROL_RUN = Counter(
    [
        (A, None),
        *((PASS, n) for n in range(1, LOOP_PASSES + 1)),
        *((EACH, index) for index in range(ITEMS)),
        (CONTROL_E, None),
    ]
)
"""The executions of a control run's user actions: (action id, pass or item index)."""
CONTROL_COMPLETED = Counter(
    {A: 1, LOOP: LOOP_PASSES + 1, PASS: LOOP_PASSES, EACH: 1, SUB: 1, WAIT: 1, CONTROL_E: 1}
)
"""COMPLETED entries of a control run's history, items apart: the while completes at each
pass and once more when it leaves."""
CHILD_RUN = Counter({(CHILD, None): 1})
Executions = dict[str, Counter[tuple[int, int | None]]]


def assert_every_run_once(record: Record) -> None:
    summary = record.summary()
    assert len(record.flow_ids) == record.runs, summary
    assert len(set(record.flow_ids)) == record.runs, summary
    assert set(record.statuses.values()) == {"COMPLETED"}, summary
    assert not record.unexpected, summary
    # A task id is one attempt: delivered to one worker, once.
    twice = [task_id for task_id, count in record.deliveries.items() if count != 1]
    assert not twice, f"delivered more than once: {twice[:5]}; {summary}"
    # Each execution's result answered 200 once, or 409 once when sent again after its first
    # answer was lost with a killed server; never both, never twice.
    answers = record.accepted + record.conflicts
    wrong = {key: count for key, count in answers.items() if count != 1}
    assert not wrong, f"results answered {wrong}; {summary}"
    assert set(answers) == set(record.executions), summary
    ran = record.by_flow(record.executions)
    for flow_id in record.flow_ids:
        if flow_id in record.control:
            assert_control_run(record, flow_id, ran, summary)
            continue
        assert ran[flow_id] == PLAIN_RUN, f"run {flow_id}: user actions ran {ran[flow_id]}"
        completed = record.completed_events[flow_id]
        assert [completed[action] for action in ALL_ACTIONS] == [1] * len(ALL_ACTIONS), (
            f"run {flow_id}: COMPLETED in its history {dict(completed)}; {summary}"
        )
    children = {record.views[flow_id]["actions"][str(SUB)]["child"] for flow_id in record.control}
    assert set(ran) == set(record.flow_ids) | children, f"tasks of unknown runs; {summary}"
    assert record.published["kept"] + record.published["delivered"] == len(record.control)
    # Both ways were taken: events kept until their run's wait took them, and delivered.
    assert record.published["kept"] > 0, summary
    assert record.published["delivered"] > 0, summary
    assert record.log_problems == [], summary


def assert_control_run(record: Record, flow_id: str, ran: Executions, summary: str) -> None:
    """A run of the control workflow: 3 loop passes, 20 items, a child, its event; each once."""
    what = f"control run {flow_id}"
    assert ran[flow_id] == CONTROL_RUN, f"{what}: user actions ran {ran[flow_id]}; {summary}"
    completed = record.completed_events[flow_id]
    assert completed == CONTROL_COMPLETED, f"{what}: COMPLETED in its history {completed}"
    history = record.histories[flow_id]
    seqs = item_seqs(history)
    items = Counter(
        seqs[entry["seq"]]
        for entry in history
        if entry["event"] == "COMPLETED" and entry.get("seq") in seqs
    )
    assert items == Counter(range(ITEMS)), f"{what}: items COMPLETED in its history {items}"
    received = [entry for entry in history if entry["event"] == "EVENT_RECEIVED"]
    assert [entry["name"] for entry in received] == [ORDER_EVENT], f"{what}: {received}"
    actions = record.views[flow_id]["actions"]
    key = record.control[flow_id]
    assert actions[str(WAIT)]["output"] == {"orderKey": key}, f"{what}: {actions[str(WAIT)]}"
    outputs = [{"ran": True, "input": {"index": n, "item": f"item-{n}"}} for n in range(ITEMS)]
    assert actions[str(EACH)]["output"] == outputs, f"{what}: {actions[str(EACH)]}"
    assert record.items_running_max[flow_id] <= CONCURRENCY, f"{what}: {summary}"
    child = actions[str(SUB)]["child"]
    view = record.views[child]
    assert view["status"] == "COMPLETED", f"{what}: child {view}"
    assert view["parent"] == {"flowId": flow_id, "actionId": SUB}, f"{what}: child {view}"
    assert actions[str(SUB)]["output"] == view["output"], f"{what}: {actions[str(SUB)]}"
    assert ran[child] == CHILD_RUN, f"{what}: child {child} ran {ran[child]}"
    child_completed = [entry for entry in record.histories[child] if entry["event"] == "COMPLETED"]
    assert [entry["action"] for entry in child_completed] == [CHILD], f"{what}: child {child}"


async def on_private_redis(
    tmp_path: Path, processes: Processes, fault: Fault | None = None
) -> Record:
    redis_server = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis_server)
    await redis_server.start()
    return await run_scenario(
        processes, redis_server.url, tmp_path, SERVERS, RUNS, DEADLINE_SECONDS, fault
    )


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_three_servers_two_thousand_runs(tmp_path: Path, processes: Processes) -> None:
    record = await on_private_redis(tmp_path, processes)
    assert_every_run_once(record)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_a_server_killed_and_restarted_mid_run(tmp_path: Path, processes: Processes) -> None:
    record = await on_private_redis(tmp_path, processes, Fault(index=1))
    assert (record.kills, record.restarts) == (1, 1), record.summary()
    assert_every_run_once(record)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_three_servers_on_a_redis_cluster(tmp_path: Path, processes: Processes) -> None:
    with private_cluster(tmp_path / "cluster") as url:
        record = await run_scenario(processes, url, tmp_path, SERVERS, RUNS, DEADLINE_SECONDS)
    assert_every_run_once(record)
