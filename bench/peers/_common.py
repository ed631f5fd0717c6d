"""What the peer benchmarks share. Standard library only: it is imported both inside each peer's
virtualenv (by ``<peer>_bench.py``) and from the project's venv (by ``run_peers.py``).

Every ``<peer>_bench.py`` takes the same subcommands:

``setup``     make the peer's store empty (flush its Redis database, create its Postgres one)
``worker``    one worker process; prints ``READY`` on stdout once it takes work, runs until
              SIGTERM/SIGINT
``bench``     the two measurements against workers already running; prints one JSON line
``teardown``  drop what ``setup`` made, where that is needed
``all``       setup, W workers, bench, teardown, for running a peer by hand in its venv
``queue``     (where a peer has it) send N runs before any worker runs
``collect``   (where a peer has it) wait for the queued runs, then measure step latency

and prints, as the last line of ``bench`` or ``all``, a JSON object with ``engine``,
``tasks_per_second``, ``latency_ms`` (``p50``, ``p90``, ``p99``) and ``notes``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

HERE = Path(__file__).resolve().parent
CHAIN_STEPS = 4
DEFAULT_RUNS = 2000
DEFAULT_WORKERS = 2
DEFAULT_LATENCY_RUNS = 200
# Runs are started by this many concurrent clients, like bench/orchy_bench.py's START_CLIENTS.
DEFAULT_START_CLIENTS = 16
PERCENTILES = (50, 90, 99)
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
READY = "READY"
WORKER_READY_SECONDS = 60.0
WORKER_STOP_SECONDS = 10.0
BENCH_TIMEOUT_SECONDS = 600.0
T = TypeVar("T")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Expired)\b.*:")
# A step's record: (start, end), both time.time_ns() taken inside the step.
Stamp = tuple[int, int]


def stamp(start_ns: int) -> list[int]:
    """What a step returns or stores: its start and its end, wall-clock nanoseconds."""
    return [start_ns, time.time_ns()]


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 like bench/orchy_bench.py (statistics.quantiles, inclusive)."""
    if len(samples) < 2:
        return {f"p{p}": None for p in PERCENTILES}
    cuts = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return {f"p{p}": round(cuts[p - 1], 3) for p in PERCENTILES}


def step_gaps_ms(runs: Sequence[Sequence[Sequence[int]]]) -> list[float]:
    """The time from step k's end to step k+1's start, in ms, for every run and every k."""
    gaps: list[float] = []
    for run in runs:
        if len(run) != CHAIN_STEPS:
            raise RuntimeError(f"a run recorded {len(run)} steps, not {CHAIN_STEPS}: {run}")
        for previous, following in itertools.pairwise(run):
            gaps.append((following[0] - previous[1]) / NS_PER_MS)
    return gaps


def start_all(start: Callable[[], T], count: int, clients: int) -> list[T]:
    """Call ``start`` ``count`` times from ``clients`` threads; the results in call order."""
    if clients <= 1:
        return [start() for _ in range(count)]
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: start(), range(count)))


def tasks_per_second(runs: int, started_ns: int, last_end_ns: int) -> float:
    """CHAIN_STEPS * runs over the wall time from the first start to the last step's end."""
    elapsed = (last_end_ns - started_ns) / NS_PER_S
    return round(runs * CHAIN_STEPS / elapsed, 1)


def row(
    engine: str,
    tps: float | None,
    gaps: Sequence[float] | None,
    notes: str,
    **extra: Any,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "engine": engine,
        "tasks_per_second": tps,
        "latency_ms": percentiles(gaps) if gaps is not None else None,
        "notes": notes,
    }
    result.update(extra)
    return result


def failure_row(
    engine: str, error: str, *, status: str = "failed", notes: str = ""
) -> dict[str, Any]:
    """A peer that could not be measured: no numbers, and why."""
    return row(engine, None, None, notes or error, status=status, error=error)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def announce_ready() -> None:
    """A worker says it takes work; WorkerGroup waits for this line. Written to fd 1 itself,
    since engines may replace sys.stdout (Celery redirects it into its logger)."""
    os.write(1, f"{READY}\n".encode())


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM and SIGINT (worker processes)."""

    def handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@dataclass
class WorkerGroup:
    """Worker processes started from argv lists; each must print READY on stdout. Their
    output goes to log files. Stopped by SIGTERM (then SIGKILL), each by its own pid."""

    argvs: list[list[str]]
    log_dir: Path
    env: dict[str, str] | None = None
    cwd: Path = HERE
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    _logs: list[TextIO] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, timeout: float = WORKER_READY_SECONDS) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready: list[threading.Event] = []
        for index, argv in enumerate(self.argvs):
            log_file = open(self.log_dir / f"worker-{index}.log", "w")  # noqa: SIM115
            self._logs.append(log_file)
            process = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,
            )
            self.processes.append(process)
            event = threading.Event()
            ready.append(event)
            thread = threading.Thread(
                target=self._drain, args=(process, log_file, event), daemon=True
            )
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        for index, event in enumerate(ready):
            while not event.wait(0.1):
                if self.processes[index].poll() is not None:
                    raise RuntimeError(
                        f"worker {index} exited with {self.processes[index].returncode} "
                        f"before it was ready: {self.tail(index)}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {index} not ready after {timeout:.0f} s")

    @staticmethod
    def _drain(process: subprocess.Popen[str], log_file: TextIO, ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == READY:
                ready.set()
            else:
                log_file.write(line)
                log_file.flush()

    def tail(self, index: int, chars: int = 2000) -> str:
        path = self.log_dir / f"worker-{index}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, timeout: float = WORKER_STOP_SECONDS) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # The worker's own session: its children (e.g. RQ's work horses) go too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for thread in self._threads:
            thread.join(2)
        for log_file in self._logs:
            log_file.close()

    def __enter__(self) -> WorkerGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", "-n", type=int, default=DEFAULT_RUNS, help="N chain runs for throughput"
    )
    parser.add_argument("--workers", "-w", type=int, default=DEFAULT_WORKERS)
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=DEFAULT_LATENCY_RUNS,
        help="sequential runs for the step latency",
    )
    parser.add_argument(
        "--start-clients",
        type=int,
        default=DEFAULT_START_CLIENTS,
        help="threads that start the N runs (1: one after the other)",
    )


def parse(description: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "command",
        choices=["setup", "worker", "bench", "teardown", "all", "queue", "collect", "chord"],
    )
    add_common_arguments(parser)
    parser.add_argument("--index", type=int, default=0, help="worker: its number")
    return parser.parse_args(argv)


def bench_argv(
    python: str | Path, script: Path, command: str, args: argparse.Namespace
) -> list[str]:
    return [
        str(python),
        str(script),
        command,
        "--runs",
        str(args.runs),
        "--workers",
        str(args.workers),
        "--latency-runs",
        str(args.latency_runs),
        "--start-clients",
        str(args.start_clients),
    ]


def last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def run_phase(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one phase in its own session; on timeout its whole process group is killed
    (LiteFlow's bench has children of its own)."""
    process = subprocess.Popen(
        argv,
        cwd=HERE,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def run_peer(
    engine: str,
    python: str | Path,
    script: Path,
    args: argparse.Namespace,
    *,
    external_workers: bool = True,
    log_dir: Path,
    timeout: float = BENCH_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """setup, W worker processes, bench, teardown; returns the bench's row, or a failure row
    that says what went wrong. The worker processes are this process's children, stopped
    whatever happens (SIGTERM included, see ``exit_on_sigterm``)."""

    def tail(text: str | None, chars: int = 600) -> str:
        """What a phase's stderr says last: a traceback's final line (the exception) first."""
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not lines:
            return "(no output)"
        if any(line.startswith("Traceback") for line in lines):
            raised = [i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)]
            return " ".join(lines[raised[-1] if raised else -1 :])[:chars]
        return " | ".join(lines)[-chars:]

    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = run_phase(bench_argv(python, script, "setup", args), 120)
        if done.returncode != 0:
            return failure_row(engine, f"setup failed: {tail(done.stderr)}")
        argvs = [
            [str(python), str(script), "worker", "--index", str(i), "--workers", str(args.workers)]
            for i in range(args.workers if external_workers else 0)
        ]
        group = WorkerGroup(argvs, log_dir)
        try:
            group.start()
            done = run_phase(bench_argv(python, script, "bench", args), timeout)
            (log_dir / "bench.log").write_text(done.stderr or "")
        except Exception as exc:
            worker_logs = " | ".join(group.tail(i, 600) for i in range(len(argvs)))
            return failure_row(engine, f"{type(exc).__name__}: {exc}; worker logs: {worker_logs}")
        finally:
            group.stop()
        found = last_json_line(done.stdout)
        if done.returncode != 0 or found is None:
            return failure_row(engine, f"bench exited with {done.returncode}: {tail(done.stderr)}")
        return found
    except subprocess.TimeoutExpired as exc:
        return failure_row(engine, f"timed out after {exc.timeout:.0f} s: {exc.cmd}")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run_phase(bench_argv(python, script, "teardown", args), 120)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the workers."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def exit_with_parent(interval: float = 0.5, grace: float = 15.0) -> None:
    """In a worker: SIGTERM ourselves once the process that started us is gone (a driver killed
    without its cleanup must not leave workers consuming a later run's work); exit hard if that
    does not end us within ``grace`` seconds."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(
    script: str,
    engine: str,
    description: str | None,
    handlers: dict[str, Callable[[argparse.Namespace], dict[str, Any] | None]],
    *,
    external_workers: bool = True,
) -> None:
    """Dispatch a peer script's subcommand. ``all`` runs the others with this interpreter."""
    args = parse(description)
    if args.command != "all":
        exit_with_parent()
    else:
        exit_on_sigterm()
        emit(
            run_peer(
                engine,
                sys.executable,
                Path(script).resolve(),
                args,
                external_workers=external_workers,
                log_dir=Path(os.environ.get("TMPDIR", "/tmp")) / f"orchy-bench-{Path(script).stem}",
            )
        )
        return
    handler = handlers.get(args.command)
    if handler is None:
        return
    result = handler(args)
    if result is not None:
        emit(result)
