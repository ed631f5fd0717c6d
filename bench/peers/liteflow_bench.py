"""LiteFlow for Python (PyPI ``liteflow-core``, module ``liteflow.core``, by Daniel Gerlag, the
author of Workflow Core): a workflow of 4 steps per run, in-process, memory persistence.

Runs inside bench/.venvs/liteflow. ``python liteflow_bench.py all --runs 200`` measures by hand.

LiteFlow's memory persistence provider and its queue and lock providers live in one process, and
the package ships no other backend (MongoDB and Azure are separate packages), so W worker
processes cannot share work: ``bench`` forks W processes, each with its own workflow host and
store, and gives each N/W of the runs. There are no ``worker`` processes to start from outside.
The host runs steps on a thread pool; after every step it persists the instance and requeues it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import _common

ENGINE = "liteflow"
WORKFLOW = "orchy-bench-chain"
RESULT_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 30.0

try:
    from liteflow.core import (
        ExecutionResult,
        StepBody,
        StepExecutionContext,
        Workflow,
        WorkflowBuilder,
        configure_workflow_host,
    )

    VERSION = version("liteflow.core")
    IMPORT_ERROR: str | None = None
except (ImportError, PackageNotFoundError) as exc:  # reported as "unavailable"
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    VERSION = "?"


class Tracker:
    """Counts finished runs of this process; the last step of a run calls ``finished``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.expected = 0
        self.all_done = threading.Event()

    def expect(self, runs: int) -> None:
        with self.lock:
            self.done = 0
            self.expected = runs
            self.all_done.clear()

    def finished(self) -> None:
        with self.lock:
            self.done += 1
            if self.done >= self.expected:
                self.all_done.set()


TRACKER = Tracker()


if IMPORT_ERROR is None:

    class Step(StepBody):  # type: ignore[misc]
        """A no-op step: appends its own (start, end) to the run's data."""

        def run(self, context: StepExecutionContext) -> ExecutionResult:
            started = time.time_ns()
            stamps: list[list[int]] = context.workflow.data
            stamps.append(_common.stamp(started))
            if len(stamps) == _common.CHAIN_STEPS:
                TRACKER.finished()
            return ExecutionResult.next()

    class Chain(Workflow):  # type: ignore[misc]
        def id(self) -> str:
            return WORKFLOW

        def version(self) -> int:
            return 1

        def build(self, builder: WorkflowBuilder) -> None:
            steps = builder.start_with(Step)
            for _ in range(_common.CHAIN_STEPS - 1):
                steps = steps.then(Step)


def start_host() -> Any:
    host = configure_workflow_host()
    host.register_workflow(Chain())
    host.start()
    return host


def run_batch(host: Any, runs: int) -> list[list[list[int]]]:
    """Start ``runs`` workflows up front and wait for all of them."""
    TRACKER.expect(runs)
    data: list[list[list[int]]] = [[] for _ in range(runs)]
    for stamps in data:
        host.start_workflow(WORKFLOW, 1, stamps)
    if not TRACKER.all_done.wait(RESULT_TIMEOUT_SECONDS):
        raise TimeoutError(f"{TRACKER.done} of {runs} runs finished")
    return data


def shard(runs: int, ready: ProcessEvent, go: ProcessEvent, results: Connection) -> None:
    """One worker process: its own host and memory store, ``runs`` runs once ``go`` is set."""
    host = start_host()
    try:
        ready.set()
        if not go.wait(READY_TIMEOUT_SECONDS):
            raise TimeoutError("never told to go")
        results.send(run_batch(host, runs))
    except Exception as exc:
        results.send(f"{type(exc).__name__}: {exc}")
    finally:
        host.stop()
        results.close()


def throughput(args: argparse.Namespace) -> tuple[float, float]:
    """Tasks per second, and the seconds from the first start to the last step's end."""
    context = multiprocessing.get_context("fork")
    shares = [
        args.runs // args.workers + (i < args.runs % args.workers) for i in range(args.workers)
    ]
    go = context.Event()
    children = []
    for share in shares:
        ready = context.Event()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=shard, args=(share, ready, go, sender), daemon=True)
        process.start()
        sender.close()
        children.append((process, ready, receiver))
    for process, ready, _ in children:
        if not ready.wait(READY_TIMEOUT_SECONDS):
            raise TimeoutError(f"worker process {process.pid} not ready")
    started = time.time_ns()
    go.set()
    runs: list[list[list[int]]] = []
    for process, _, receiver in children:
        if not receiver.poll(RESULT_TIMEOUT_SECONDS):
            raise TimeoutError(f"worker process {process.pid} sent nothing")
        received = receiver.recv()
        if isinstance(received, str):
            raise RuntimeError(f"worker process {process.pid}: {received}")
        runs.extend(received)
        process.join(10)
    if len(runs) != args.runs or any(len(run) != _common.CHAIN_STEPS for run in runs):
        raise RuntimeError("runs missing or incomplete")
    last_end = max(run[-1][1] for run in runs)
    return _common.tasks_per_second(args.runs, started, last_end), (last_end - started) / 1e9


def bench(args: argparse.Namespace) -> dict[str, Any]:
    if IMPORT_ERROR is not None:
        return _common.failure_row(
            ENGINE, f"liteflow-core cannot be imported: {IMPORT_ERROR}", status="unavailable"
        )
    tps, elapsed = throughput(args)

    # Latency: one run at a time, in this process.
    host = start_host()
    try:
        timed = [run_batch(host, 1)[0] for _ in range(args.latency_runs)]
    finally:
        host.stop()
    gaps = _common.step_gaps_ms(timed)
    return _common.row(
        ENGINE,
        tps,
        gaps,
        f"liteflow.core {VERSION}, in-process, memory persistence; {args.workers} independent "
        f"processes (own host and store each, nothing shared), N/W runs each; N={args.runs} "
        f"done in {elapsed:.2f} s; {len(gaps)} latency samples",
        version=VERSION,
        runs=args.runs,
        workers=args.workers,
    )


if __name__ == "__main__":
    _common.main(__file__, ENGINE, __doc__, {"bench": bench}, external_workers=False)
