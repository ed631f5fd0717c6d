"""Celery with the Redis broker and result backend: a ``chain`` of 4 no-op tasks per run.

Runs inside bench/.venvs/celery. ``python celery_bench.py all --runs 200`` measures by hand;
bench/peers/run_peers.py drives the phases itself (see _common.py for the subcommands).

Workers: W ``celery worker`` processes (pool and concurrency from CELERY_BENCH_POOL and
CELERY_BENCH_CONCURRENCY, default solo, i.e. one task at a time per process), without gossip,
mingle and heartbeat, which a benchmark on one machine has no use for.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from importlib.metadata import version
from typing import Any

import _common
import redis
from celery import Celery, chain, chord, signals
from celery.backends.redis import RedisBackend

REDIS_URL = os.environ.get("CELERY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
# Celery's own URL for the same Redis when redis-py's differs (a unix socket: Celery says
# "redis+socket:///path", redis-py "unix:///path").
CELERY_URL = os.environ.get("CELERY_BENCH_CELERY_URL", REDIS_URL)
CHORD_KEY = "orchy-bench:chord"  # the chord's callback pushes its end time here
POOL = os.environ.get("CELERY_BENCH_POOL", "solo")
CONCURRENCY = int(os.environ.get("CELERY_BENCH_CONCURRENCY", "1"))
VERSION = version("celery")
ENGINE = "celery"
RESULT_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.05
POLL_BATCH = 500
LATENCY_POLL_SECONDS = 0.001
QUEUED_KEY = "orchy-bench:queued"  # the queued chains' result ids, for ``collect``


app = Celery("orchy_bench", broker=CELERY_URL, backend=CELERY_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
)


@app.task(name="orchy_bench.step")  # type: ignore[untyped-decorator]
def step(stamps: list[list[int]]) -> list[list[int]]:
    """A no-op user task: appends its (start, end) to what the previous step returned."""
    started = time.time_ns()
    return [*stamps, _common.stamp(started)]


@app.task(name="orchy_bench.item")  # type: ignore[untyped-decorator]
def item(n: int) -> int:
    """A no-op chord member."""
    return n


@app.task(name="orchy_bench.gathered")  # type: ignore[untyped-decorator]
def gathered(results: list[int]) -> int:
    """The chord's callback: pushes its end time for the driver."""
    redis.Redis.from_url(REDIS_URL).rpush(CHORD_KEY, time.time_ns())
    return len(results)


def chord_run(args: argparse.Namespace) -> dict[str, Any]:
    """One chord of ``--runs`` no-op tasks and a callback, against workers already running:
    seconds from sending it to the callback's end (bench/for_each.py's peer)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=RESULT_TIMEOUT_SECONDS + 10)
    client.delete(CHORD_KEY)
    started = time.time_ns()
    chord(item.s(n) for n in range(args.runs))(gathered.s())
    sent = time.time_ns()
    popped = client.blpop([CHORD_KEY], timeout=RESULT_TIMEOUT_SECONDS)
    if popped is None:
        raise TimeoutError(f"the chord of {args.runs} tasks did not end in time")
    seconds = (int(popped[1]) - started) / 1e9
    return {
        "engine": ENGINE,
        "version": VERSION,
        "tasks": args.runs,
        "seconds": round(seconds, 2),
        "sending_seconds": round((sent - started) / 1e9, 2),
    }


def new_chain() -> Any:
    return chain(step.s([]), *(step.s() for _ in range(_common.CHAIN_STEPS - 1)))


def wait_results(task_ids: list[str], poll: float = POLL_SECONDS) -> list[list[list[int]]]:
    """The chains' results, read from the result backend's keys in order, a batch at a time
    (``AsyncResult.get`` on thousands of results costs the driver more CPU than the workers
    have to spare on two cores, and the throughput would measure the driver)."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = [f"celery-task-meta-{task_id}" for task_id in task_ids]
    runs: list[list[list[int]]] = []
    deadline = time.monotonic() + RESULT_TIMEOUT_SECONDS
    while len(runs) < len(keys):
        batch = client.mget(keys[len(runs) : len(runs) + POLL_BATCH])
        for raw in batch:
            if raw is None:
                break
            meta = json.loads(raw)
            if meta["status"] != "SUCCESS":
                raise RuntimeError(f"a chain ended {meta['status']}: {meta.get('result')}")
            runs.append(meta["result"])
        else:
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(runs)} of {len(keys)} chains done")
        time.sleep(poll)
    return runs


def stop_subscribing_to_results() -> None:
    """In the driver only: on every ``apply_async`` Celery's Redis result backend subscribes
    the sender to the task's result channel, for ``AsyncResult.get``. The driver reads results
    from their keys instead (``wait_results``), and a pub/sub connection cannot be shared by
    the threads that send chains. Workers store results exactly as with the stock backend."""

    def on_task_call(self: RedisBackend, producer: object, task_id: str) -> dict[str, Any]:
        return {}

    RedisBackend.on_task_call = on_task_call


def setup(args: argparse.Namespace) -> None:
    """Empty the broker/backend database (before the bench, and again after it)."""
    redis.Redis.from_url(REDIS_URL).flushdb()


def worker(args: argparse.Namespace) -> None:
    @signals.worker_ready.connect  # type: ignore[untyped-decorator]
    def ready(**kwargs: object) -> None:
        _common.announce_ready()

    app.worker_main(
        [
            "worker",
            f"--pool={POOL}",
            f"--concurrency={CONCURRENCY}",
            "--loglevel=WARNING",
            f"--hostname=bench{args.index}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def bench(args: argparse.Namespace) -> dict[str, Any]:
    stop_subscribing_to_results()
    # Throughput: N chains sent up front, then every result collected.
    started = time.time_ns()
    results = _common.start_all(lambda: new_chain().apply_async(), args.runs, args.start_clients)
    sent = time.time_ns()
    runs = wait_results([r.id for r in results])
    last_end = max(run[-1][1] for run in runs)
    tps = _common.tasks_per_second(args.runs, started, last_end)

    # Latency: one chain at a time.
    timed = [
        wait_results([new_chain().apply_async().id], LATENCY_POLL_SECONDS)[0]
        for _ in range(args.latency_runs)
    ]
    gaps = _common.step_gaps_ms(timed)
    concurrency = "" if POOL == "solo" else f" x{CONCURRENCY}"
    sending = (sent - started) / 1e9
    return _common.row(
        ENGINE,
        tps,
        gaps,
        f"celery {VERSION}, redis broker+backend db {REDIS_URL.rsplit('/', 1)[-1]}; "
        f"{args.workers} worker processes, pool {POOL}{concurrency}; "
        f"N={args.runs} sent by {args.start_clients} threads in {sending:.2f} s, "
        f"done in {(last_end - started) / 1e9:.2f} s; {len(gaps)} latency samples",
        version=VERSION,
        runs=args.runs,
        workers=args.workers,
    )


def queue(args: argparse.Namespace) -> None:
    """N chains sent before any worker runs (bench/worker_routes.py starts the worker next)."""
    stop_subscribing_to_results()
    results = _common.start_all(lambda: new_chain().apply_async(), args.runs, args.start_clients)
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(QUEUED_KEY)
    client.rpush(QUEUED_KEY, *(result.id for result in results))


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """The queued chains, timed from the first step's start to the last step's end; then
    the step latency, one chain at a time."""
    stop_subscribing_to_results()
    client = redis.Redis.from_url(REDIS_URL)
    task_ids = [raw.decode() for raw in client.lrange(QUEUED_KEY, 0, -1)]
    runs = wait_results(task_ids)
    first_start = min(run[0][0] for run in runs)
    last_end = max(run[-1][1] for run in runs)
    tps = _common.tasks_per_second(len(runs), first_start, last_end)
    timed = [
        wait_results([new_chain().apply_async().id], LATENCY_POLL_SECONDS)[0]
        for _ in range(args.latency_runs)
    ]
    gaps = _common.step_gaps_ms(timed)
    concurrency = "" if POOL == "solo" else f" x{CONCURRENCY}"
    return _common.row(
        ENGINE,
        tps,
        gaps,
        f"celery {VERSION}, redis broker+backend db {REDIS_URL.rsplit('/', 1)[-1]}; "
        f"{args.workers} worker, pool {POOL}{concurrency}; N={len(runs)} queued before it "
        f"started, done in {(last_end - first_start) / 1e9:.2f} s from the first step's start; "
        f"{len(gaps)} latency samples",
        version=VERSION,
        runs=len(runs),
        seconds=round((last_end - first_start) / 1e9, 2),
    )


if __name__ == "__main__":
    _common.main(
        __file__,
        ENGINE,
        __doc__,
        {
            "setup": setup,
            "worker": worker,
            "bench": bench,
            "teardown": setup,
            "queue": queue,
            "collect": collect,
            "chord": chord_run,
        },
    )
