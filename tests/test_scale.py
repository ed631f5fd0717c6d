"""Scale and faults, end to end: real ``orchy serve`` processes, real HTTP workers, a Redis
of their own (a private ``redis-server`` or a private 3-master Redis Cluster started for
each test, whatever ``REDIS_URL`` says), and the scenario of ``bench/scenario.py``.

Slow: skipped by default, run with ``python -m pytest -m slow`` (or ``-m ""``). Each test
prints its figures (``-s`` shows them); a failure message carries them too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.scenario import (
    FaultPlan,
    Figures,
    ScenarioConfig,
    private_cluster,
    private_redis,
    run_scenario,
)

pytestmark = pytest.mark.slow

SERVERS = 3
RUNS = 2000
CLUSTER_RUNS = RUNS
DEADLINE_SECONDS = 200.0
"""Runs not finished this long after the first start count as lost."""
TEST_TIMEOUT_SECONDS = 300
USER_ACTIONS_PER_RUN = 3
TIMERS_PER_RUN = 2  # the delay and the wait


def _report(title: str, figures: Figures) -> str:
    text = "\n".join([title, *(f"  {line}" for line in figures.lines())])
    print(text)
    return text


def _assert_every_run_once(figures: Figures, runs: int, report: str) -> None:
    assert figures.started == runs, report
    assert figures.lost == 0, report
    assert figures.failed == 0, report
    assert figures.completed == runs, report
    assert figures.duplicate_effects == 0, report
    assert figures.effect_errors == 0, report
    assert figures.user_tasks == USER_ACTIONS_PER_RUN * runs, report
    assert figures.timers == TIMERS_PER_RUN * runs, report
    assert figures.timer_errors == 0, report
    assert figures.waits_by_event + figures.waits_timed_out == runs, report
    assert figures.server_errors == 0, report
    assert figures.crossslot_lines == 0, report
    assert figures.traceback_lines == 0, report


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
def test_three_servers_two_thousand_runs(tmp_path: Path) -> None:
    config = ScenarioConfig(runs=RUNS, servers=SERVERS, deadline_seconds=DEADLINE_SECONDS)
    with private_redis(tmp_path / "redis") as url:
        figures = asyncio.run(run_scenario(config, url, tmp_path / "logs"))
    report = _report(f"{SERVERS} servers, {RUNS} runs", figures)
    _assert_every_run_once(figures, RUNS, report)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
def test_a_server_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    plan = FaultPlan(kill_index=1, kill_at_fraction=1 / 3, restart_at_fraction=2 / 3)
    config = ScenarioConfig(
        runs=RUNS, servers=SERVERS, deadline_seconds=DEADLINE_SECONDS, fault=plan
    )
    with private_redis(tmp_path / "redis") as url:
        figures = asyncio.run(run_scenario(config, url, tmp_path / "logs"))
    report = _report(f"{SERVERS} servers, {RUNS} runs, server 1 killed with -9", figures)
    assert figures.kills == 1, report
    assert figures.restarts == 1, report
    _assert_every_run_once(figures, RUNS, report)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
def test_three_servers_on_a_redis_cluster(tmp_path: Path) -> None:
    config = ScenarioConfig(runs=CLUSTER_RUNS, servers=SERVERS, deadline_seconds=DEADLINE_SECONDS)
    with private_cluster(tmp_path / "cluster") as url:
        figures = asyncio.run(run_scenario(config, url, tmp_path / "logs"))
    report = _report(f"{SERVERS} servers on a 3-master cluster, {CLUSTER_RUNS} runs", figures)
    _assert_every_run_once(figures, CLUSTER_RUNS, report)
