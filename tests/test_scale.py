"""Scale and faults, end to end: real ``orchy serve`` processes, HTTP workers spread over
them, a Redis of their own (a private ``redis-server`` or a private 3-master Redis Cluster
started for each test, whatever ``REDIS_URL`` says), and the scenario of
``tests/helpers/scale.py``. Each test checks the outcome itself: every run started and
completed, every user action run once, every action of every run completed once, nothing
answered with an error, no error in the servers' logs.

Slow: left out by default, run with ``python -m pytest -m slow`` (or ``-m ""``, as ``.ci/run``
does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cluster import private_cluster
from tests.helpers.processes import Processes, RedisProcess
from tests.helpers.scale import ALL_ACTIONS, USER_ACTIONS, Fault, Record, run_scenario

pytestmark = pytest.mark.slow

SERVERS = 3
RUNS = 2000
DEADLINE_SECONDS = 200.0
TEST_TIMEOUT_SECONDS = 300


def assert_every_run_once(record: Record) -> None:
    summary = record.summary()
    assert len(record.flow_ids) == record.runs, summary
    assert len(set(record.flow_ids)) == record.runs, summary
    assert set(record.statuses.values()) == {"COMPLETED"}, summary
    assert not record.unexpected, summary
    # A task id is one attempt: delivered to one worker, once.
    twice = [task_id for task_id, count in record.deliveries.items() if count != 1]
    assert not twice, f"delivered more than once: {twice[:5]}; {summary}"
    for flow_id in record.flow_ids:
        ran = {action: record.executions[(flow_id, action)] for action in USER_ACTIONS}
        assert set(ran.values()) == {1}, f"run {flow_id}: user actions ran {ran}; {summary}"
        accepted = [record.accepted[(flow_id, action)] for action in USER_ACTIONS]
        assert max(accepted) == 1, f"run {flow_id}: results accepted {accepted}; {summary}"
        completed = record.completed_events[flow_id]
        assert [completed[action] for action in ALL_ACTIONS] == [1] * len(ALL_ACTIONS), (
            f"run {flow_id}: COMPLETED in its history {dict(completed)}; {summary}"
        )
    assert record.log_problems == [], summary


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
