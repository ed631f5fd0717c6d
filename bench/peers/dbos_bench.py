"""DBOS Transact (Python) on the local PostgreSQL: a workflow of 4 steps per run.

Runs inside bench/.venvs/dbos. ``python dbos_bench.py all --runs 200`` measures by hand;
bench/peers/run_peers.py drives the phases itself (see _common.py for the subcommands).

``setup`` creates a fresh database (DBOS_BENCH_DATABASE, default orchy_bench_dbos) and
registers the queue; ``teardown`` drops the database. Runs are enqueued with a ``DBOSClient``
(which executes nothing) on a DBOS queue that the W worker processes, each a launched DBOS
application, dequeue from: up to DBOS_BENCH_WORKER_CONCURRENCY workflows at once per process
(default 64, like the concurrency of bench/orchy_bench.py's workers), polling every
DBOS_BENCH_POLLING_INTERVAL seconds (default 0.05; DBOS's default of 1.0 caps a process at
worker_concurrency runs a second).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from importlib.metadata import version
from typing import Any, LiteralString

import _common
import psycopg
from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions
from psycopg import sql

SERVER_URL = os.environ.get("DBOS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("DBOS_BENCH_DATABASE", "orchy_bench_dbos")
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"
WORKER_CONCURRENCY = int(os.environ.get("DBOS_BENCH_WORKER_CONCURRENCY", "64"))
POLLING_INTERVAL = float(os.environ.get("DBOS_BENCH_POLLING_INTERVAL", "0.05"))
APP = "orchy-bench"
QUEUE = "orchy-bench"
WORKFLOW = "orchy_bench_chain"
VERSION = version("dbos")
ENGINE = "dbos"
RESULT_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.05

CONFIG: DBOSConfig = {
    "name": APP,
    "system_database_url": DATABASE_URL,
    "application_version": "orchy-bench",
    "log_level": "WARNING",
}


@DBOS.step(name="orchy_bench_step")
def step() -> list[int]:
    """A no-op step: returns its own (start, end)."""
    return _common.stamp(time.time_ns())


@DBOS.workflow(name=WORKFLOW)
def chain() -> list[list[int]]:
    return [step() for _ in range(_common.CHAIN_STEPS)]


def admin(template: LiteralString) -> None:
    """Run ``template`` with {} replaced by the quoted database name, in the postgres db."""
    statement = sql.SQL(template).format(sql.Identifier(DATABASE))
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as connection:
        connection.execute(statement)


def setup(args: argparse.Namespace) -> None:
    admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    admin("CREATE DATABASE {}")
    # Launching once creates DBOS's system tables; the queue lives in them.
    DBOS(config=CONFIG)
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=WORKER_CONCURRENCY,
        polling_interval_sec=POLLING_INTERVAL,
        on_conflict="always_update",
    )
    DBOS.destroy()


def teardown(args: argparse.Namespace) -> None:
    admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def worker(args: argparse.Namespace) -> None:
    stop = threading.Event()
    DBOS(config=CONFIG)
    DBOS.launch()
    _common.install_stop_handlers(stop.set)
    _common.announce_ready()
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=5)


def count(connection: psycopg.Connection[Any], statuses: tuple[str, ...]) -> int:
    found = connection.execute(
        "SELECT count(*) FROM dbos.workflow_status WHERE status = ANY(%s)", (list(statuses),)
    ).fetchone()
    return int(found[0]) if found else 0


def bench(args: argparse.Namespace) -> dict[str, Any]:
    client = DBOSClient(
        system_database_url=DATABASE_URL,
        application_name=APP,
        system_database_pool_size=max(5, args.start_clients),
    )
    options: EnqueueOptions = {"workflow_name": WORKFLOW, "queue_name": QUEUE}
    try:
        with psycopg.connect(DATABASE_URL, autocommit=True) as connection:
            # Throughput: N workflows enqueued up front.
            started = time.time_ns()
            ids = _common.start_all(
                lambda: client.enqueue(options).workflow_id, args.runs, args.start_clients
            )
            sent = time.time_ns()
            _common.wait_until(
                lambda: count(connection, ("ENQUEUED", "PENDING")) == 0,
                RESULT_TIMEOUT_SECONDS,
                f"{args.runs} workflows",
                POLL_SECONDS,
            )
            failed = count(connection, ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"))
            if failed:
                raise RuntimeError(f"{failed} workflows did not succeed")
        statuses = client.list_workflows(workflow_ids=ids, load_input=False)
        runs: list[list[list[int]]] = [status.output for status in statuses if status.output]
        if len(runs) != args.runs:
            raise RuntimeError(f"{len(runs)} of {args.runs} workflows found")
        last_end = max(run[-1][1] for run in runs)
        tps = _common.tasks_per_second(args.runs, started, last_end)

        # Latency: one workflow at a time.
        timed: list[list[list[int]]] = [
            client.enqueue(options).get_result(polling_interval_sec=0.005)
            for _ in range(args.latency_runs)
        ]
    finally:
        client.destroy()
    gaps = _common.step_gaps_ms(timed)
    sending = (sent - started) / 1e9
    return _common.row(
        ENGINE,
        tps,
        gaps,
        f"dbos {VERSION}, postgres database {DATABASE}; {args.workers} worker processes on one "
        f"queue, worker_concurrency {WORKER_CONCURRENCY}, polling {POLLING_INTERVAL} s; "
        f"N={args.runs} enqueued by {args.start_clients} threads in {sending:.2f} s, "
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
        {"setup": setup, "worker": worker, "bench": bench, "teardown": teardown},
    )
