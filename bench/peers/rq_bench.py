"""RQ: 4 jobs per run, each enqueued with ``depends_on`` the previous one.

Runs inside bench/.venvs/rq. ``python rq_bench.py all --runs 200`` measures by hand;
bench/peers/run_peers.py drives the phases itself (see _common.py for the subcommands).

Workers: W worker processes of class RQ_BENCH_WORKER_CLASS: ``SimpleWorker`` (default: runs
each job in the worker process) or ``Worker`` (RQ's default, which forks a work horse per job).
"""

from __future__ import annotations

import argparse
import os
import time
from importlib.metadata import version
from typing import Any

import _common
import redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.registry import FinishedJobRegistry

REDIS_URL = os.environ.get("RQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
WORKER_CLASS = os.environ.get("RQ_BENCH_WORKER_CLASS", "SimpleWorker")
QUEUE = "orchy-bench"
VERSION = version("rq")
ENGINE = "rq"
RESULT_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.05
STEP = "rq_bench.step"


def step() -> list[int]:
    """A no-op job: returns its own (start, end)."""
    return _common.stamp(time.time_ns())


def connect() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def enqueue_chain(queue: Queue) -> list[Job]:
    jobs = [queue.enqueue(STEP)]
    for _ in range(_common.CHAIN_STEPS - 1):
        jobs.append(queue.enqueue(STEP, depends_on=jobs[-1]))
    return jobs


def stamps(connection: redis.Redis, jobs: list[Job]) -> list[list[int]]:
    values = []
    for job in jobs:
        value = job.return_value(refresh=True)
        if value is None:
            raise RuntimeError(f"job {job.id} has no result (status {job.get_status()})")
        values.append(value)
    return values


def setup(args: argparse.Namespace) -> None:
    """Empty RQ's database (before the bench, and again after it)."""
    connect().flushdb()


def worker(args: argparse.Namespace) -> None:
    classes: dict[str, type[Worker] | type[SimpleWorker]] = {
        "Worker": Worker,
        "SimpleWorker": SimpleWorker,
    }
    connection = connect()
    runner = classes[WORKER_CLASS](
        [Queue(QUEUE, connection=connection)],
        connection=connection,
        name=f"orchy-bench-{args.index}-{os.getpid()}",
    )
    _common.announce_ready()
    runner.work(logging_level="WARNING")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    connection = connect()
    queue = Queue(QUEUE, connection=connection)
    finished = FinishedJobRegistry(queue=queue)

    # Throughput: N chains enqueued up front.
    started = time.time_ns()
    chains = _common.start_all(lambda: enqueue_chain(queue), args.runs, args.start_clients)
    sent = time.time_ns()
    total = args.runs * _common.CHAIN_STEPS
    _common.wait_until(
        lambda: finished.get_job_count(cleanup=False) >= total,
        RESULT_TIMEOUT_SECONDS,
        f"{total} finished jobs",
        POLL_SECONDS,
    )
    failed = queue.failed_job_registry.get_job_count()
    if failed:
        raise RuntimeError(f"{failed} jobs failed")
    last_end = max(stamps(connection, [jobs[-1]])[0][1] for jobs in chains)
    tps = _common.tasks_per_second(args.runs, started, last_end)

    # Latency: one chain at a time.
    timed = []
    for _ in range(args.latency_runs):
        jobs = enqueue_chain(queue)
        if jobs[-1].latest_result(timeout=int(RESULT_TIMEOUT_SECONDS)) is None:
            raise TimeoutError("a latency chain did not finish")
        timed.append(stamps(connection, jobs))
    gaps = _common.step_gaps_ms(timed)
    sending = (sent - started) / 1e9
    return _common.row(
        ENGINE,
        tps,
        gaps,
        f"rq {VERSION}, redis db {REDIS_URL.rsplit('/', 1)[-1]}; {args.workers} worker "
        f"processes ({WORKER_CLASS}); N={args.runs} enqueued by {args.start_clients} threads "
        f"in {sending:.2f} s, "
        f"done in {(last_end - started) / 1e9:.2f} s; {len(gaps)} latency samples",
        version=VERSION,
        runs=args.runs,
        workers=args.workers,
    )


if __name__ == "__main__":
    _common.main(
        __file__,
        ENGINE,
        __doc__,
        {"setup": setup, "worker": worker, "bench": bench, "teardown": setup},
    )
