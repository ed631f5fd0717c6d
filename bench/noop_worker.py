"""The benchmark's user actions: ``bench-step`` does nothing; ``bench-last`` counts finished
runs in Redis (``BENCH_COUNTER_URL``/``BENCH_COUNTER_KEY``), and the one that finishes the
``BENCH_RUNS``-th run pushes the time to ``BENCH_END_KEY``; ``bench-timed`` records the
step-to-step latency (its input ``t`` is the previous step's end, in ns) into a Redis list,
and tells the benchmark through another list when it runs a run's last step. The first
chain step a process runs pushes the time to ``BENCH_FIRST_KEY``."""

from __future__ import annotations

import os
import time
from typing import Any

import redis.asyncio as redis

from orchy import Worker

worker = Worker()
# A few connections, not one per task in hand: each new connection costs this process
# milliseconds, which would be counted as the worker's cost per task.
_counter = redis.Redis(
    connection_pool=redis.BlockingConnectionPool.from_url(
        os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/5"), max_connections=4
    )
)
COUNTER_KEY = os.environ.get("BENCH_COUNTER_KEY", "bench:done")
LATENCY_KEY = os.environ.get("BENCH_LATENCY_KEY", "bench:latency")
TIMED_DONE_KEY = os.environ.get("BENCH_TIMED_DONE_KEY", "bench:timed-done")
FIRST_KEY = os.environ.get("BENCH_FIRST_KEY", "bench:first")
END_KEY = os.environ.get("BENCH_END_KEY", "bench:end")
RUNS = int(os.environ.get("BENCH_RUNS", "0"))
_first_taken = False


async def _note_first() -> None:
    global _first_taken
    if not _first_taken:
        _first_taken = True
        await _counter.rpush(FIRST_KEY, time.time_ns())


@worker.action("bench-step")
async def step(input: dict[str, Any]) -> dict[str, Any]:
    if not _first_taken:
        await _note_first()
    return {}


@worker.action("bench-last")
async def last(input: dict[str, Any]) -> dict[str, Any]:
    if not _first_taken:
        await _note_first()
    if await _counter.incr(COUNTER_KEY) == RUNS:
        await _counter.rpush(END_KEY, time.time_ns())
    return {}


@worker.action("bench-timed")
async def timed(input: dict[str, Any]) -> dict[str, Any]:
    previous_end = input.get("t")
    if previous_end:
        await _counter.rpush(LATENCY_KEY, time.time_ns() - int(previous_end))
    if input.get("last"):
        await _counter.rpush(TIMED_DONE_KEY, 1)
    return {"t": time.time_ns()}
