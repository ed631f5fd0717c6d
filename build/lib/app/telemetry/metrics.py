"""The server's Prometheus metrics (README, "Metrics and tracing").

Counters and histograms are kept by the process that saw the event. Under ``orchy serve
--workers N`` the processes share one port, so ``orchy serve`` gives them a folder for
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, read when
prometheus-client is first imported) and any process answers ``/metrics`` for all of them.
Separate server instances are scraped each; their sums are the cluster's figures. What is
true of Redis, not of a process (tasks queued and leased), is read from Redis at scrape time
(``scrape``).

The calls here sit on the workers' path: each is a dict lookup and an ``observe`` or ``inc``
on a child kept per label value, nothing that blocks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from redis.exceptions import RedisError

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
MS_PER_SECOND = 1000

# Seconds: a task's wait in its queue and its execution by a worker span milliseconds to
# hours; a script's round trip is usually well under a millisecond.
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
SCRIPT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# No ``*_created`` series (when each labelled counter was first used): noise to scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]

RUNS_STARTED = Counter("orchy_runs_started", "Runs started, by workflow.", ["workflow"])
RUNS_ENDED = Counter(
    "orchy_runs_ended",
    "Runs ended, by workflow and final status (COMPLETED, FAILED, TERMINATED).",
    ["workflow", "status"],
)
QUEUE_WAIT = Histogram(
    "orchy_task_queue_wait_seconds",
    "From a task's queuing to its lease by a worker (first attempts), by action.",
    ["action"],
    buckets=TASK_BUCKETS,
)
EXECUTION = Histogram(
    "orchy_task_execution_seconds",
    "From a task's lease to its result, by action.",
    ["action"],
    buckets=TASK_BUCKETS,
)
LEASE_EXPIRIES = Counter(
    "orchy_lease_expiries", "Task attempts whose lease ran out, by action.", ["action"]
)
RETRIES = Counter(
    "orchy_task_retries", "Failed task attempts queued again by the retry policy.", ["action"]
)
POLL_TIMEOUTS = Counter(
    "orchy_poll_timeouts",
    "Queued attempts no worker polled within pollTimeoutSeconds, by action.",
    ["action"],
)
TIMER_LAG = Histogram(
    "orchy_timer_lag_seconds",
    "How late timers are handled after their due time, by timer kind.",
    ["kind"],
    buckets=LAG_BUCKETS,
)
SCRIPT_TIME = Histogram(
    "orchy_script_seconds",
    "Round trip of Lua script calls (a pipelined batch counts once), by script.",
    ["script"],
    buckets=SCRIPT_BUCKETS,
)
REDIS_ERRORS = Counter(
    "orchy_redis_errors",
    "Script calls that failed in Redis (connection lost, timeout, error reply), by error type.",
    ["error"],
)


class _Children:
    """A metric's child per label value, looked up once (``labels`` takes a lock)."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[str, Any] = {}

    def __getitem__(self, value: str) -> Any:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = self.metric.labels(value)
        return child


_queue_wait = _Children(QUEUE_WAIT)
_execution = _Children(EXECUTION)
_script_time = _Children(SCRIPT_TIME)
_timer_lag = _Children(TIMER_LAG)
_runs_started = _Children(RUNS_STARTED)


def run_started(workflow: str) -> None:
    _runs_started[workflow].inc()


def run_ended(workflow: str, status: str) -> None:
    RUNS_ENDED.labels(workflow, status).inc()


def attempt_timed(
    action: str, queued_seconds: float | None, executed_seconds: float | None
) -> None:
    if queued_seconds is not None:
        _queue_wait[action].observe(max(queued_seconds, 0.0))
    if executed_seconds is not None:
        _execution[action].observe(max(executed_seconds, 0.0))


def retried(action: str) -> None:
    RETRIES.labels(action).inc()


def lease_expired(action: str) -> None:
    LEASE_EXPIRIES.labels(action).inc()


def poll_timed_out(action: str) -> None:
    POLL_TIMEOUTS.labels(action).inc()


def timers_due(now_ms: int, due: list[tuple[str, int]]) -> None:
    """Timers claimed at ``now_ms`` (Redis's clock), with their due times."""
    for member, due_ms in due:
        kind = member.split("|", 1)[0]
        _timer_lag[kind].observe(max(now_ms - due_ms, 0) / MS_PER_SECOND)


def redis_error(error: BaseException) -> None:
    REDIS_ERRORS.labels(type(error).__name__).inc()


class _ScriptCall:
    """Times one script call (a class, not a generator: this is on every request)."""

    __slots__ = ("began", "child")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.began = time.perf_counter()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if isinstance(error, RedisError):
            redis_error(error)
        self.child.observe(time.perf_counter() - self.began)


def script_call(script: str) -> _ScriptCall:
    """Times a script call; counts it as a Redis error if it raises one."""
    return _ScriptCall(_script_time[script])


class TimedScript:
    """A registered script (redis-py's ``AsyncScript``) whose calls are timed."""

    def __init__(self, name: str, script: Any) -> None:
        self.name = name
        self.script = script
        self.sha: str = script.sha

    async def __call__(self, **arguments: Any) -> Any:
        with script_call(self.name):
            return await self.script(**arguments)


class _ReadAtScrape(Collector):
    """Gauges read from Redis for this scrape, by action name."""

    def __init__(self, queued: Mapping[str, int], leased: Mapping[str, int]) -> None:
        self.queued = queued
        self.leased = leased

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily(
            "orchy_tasks_queued", "Tasks waiting in their queue, by action.", labels=["action"]
        )
        for action, count in sorted(self.queued.items()):
            queued.add_metric([action], count)
        leased = GaugeMetricFamily(
            "orchy_tasks_leased", "Tasks leased to a worker, by action.", labels=["action"]
        )
        for action, count in sorted(self.leased.items()):
            leased.add_metric([action], count)
        yield queued
        yield leased


def scrape(queued: Mapping[str, int], leased: Mapping[str, int]) -> bytes:
    """The Prometheus text of every metric: this process's own (or, in multiprocess mode,
    every process's of this server), then the gauges read from Redis."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counted = generate_latest(registry)
    else:
        counted = generate_latest(REGISTRY)
    read = CollectorRegistry(auto_describe=False)
    read.register(_ReadAtScrape(queued, leased))
    return counted + generate_latest(read)
