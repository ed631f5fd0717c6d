"""The worker routes' workload: the 4-step chain run by a worker written against the raw HTTP
protocol (``bench/raw_worker.py``: batch poll of 16, one ``/complete`` per task, no
``next``), by the worker library as a user runs it (``orchy worker bench/noop_worker.py``,
default settings), and by Celery, in the same run. Each side has 2 worker processes (Celery:
one worker, prefork 2) on the same Redis (the local one; Orchy in one database, Celery in
another), all chains queued before the workers start, timed from the first task taken to
the last chain finished; then the step latency, one chain at a time, with the same workers.
Each round measures the three in turn; the table gives each one's median, and the medians
of the ratios to Celery within each round.

    python -m bench.run --workload worker-routes        # or: python -m bench.worker_routes
    python -m bench.worker_routes --runs 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import orchy_bench

ROOT = orchy_bench.ROOT
PEERS = ROOT / "bench" / "peers"
CELERY_SCRIPT = PEERS / "celery_bench.py"
CELERY_PYTHON = ROOT / "bench" / ".venvs" / "celery" / "bin" / "python"
ORCHY_REDIS = "redis://127.0.0.1:6379/6"
CELERY_REDIS = "redis://127.0.0.1:6379/3"
WORKERS = 2
DEFAULT_RUNS = 2000
DEFAULT_ROUNDS = 3
LATENCY_RUNS = 200
FIRST_KEY = "bench:first"
END_KEY = "bench:end"
PHASE_SECONDS = 600.0
NS_PER_S = 1_000_000_000

sys.path.insert(0, str(PEERS))
import _common  # noqa: E402  (bench/peers is a folder of scripts, not a package)


def orchy_row(kind: str, runs: int, redis_url: str) -> dict[str, Any]:
    """``kind`` is ``raw`` or ``library``: a fresh server, the runs queued, then the workers."""
    with orchy_bench.stack(redis_url, 0, orchy_bench.DEFAULT_CONCURRENCY, {}) as current:
        name = f"bench-routes-{time.time_ns()}"
        orchy_bench.register(current.url, orchy_bench.chain_definition(name))
        client = current.redis()
        client.delete(FIRST_KEY, END_KEY, "bench:done")
        asyncio.run(orchy_bench.start_runs_batched(current.url, name, runs))
        server = psutil.Process(current.server.pid)
        redis_process = psutil.Process(int(client.info("server")["process_id"]))
        cpu_before = _cpu(server), _cpu(redis_process)
        if kind == "raw":
            command = [sys.executable, "-m", "bench.raw_worker", "--server", current.url]
        else:
            command = [sys.executable, "-m", "app.cli", "worker", str(orchy_bench.WORKER_FILE)]
            command += ["--server", current.url]
        orchy_bench.spawn_workers(current, [command] * WORKERS, {"BENCH_RUNS": str(runs)})
        end = _wait_end(client, kind)
        first = min(int(value) for value in client.lrange(FIRST_KEY, 0, -1))
        tasks = runs * orchy_bench.CHAIN_STEPS
        cpu_ms = {
            "server": round((_cpu(server) - cpu_before[0]) * 1000 / tasks, 3),
            "redis": round((_cpu(redis_process) - cpu_before[1]) * 1000 / tasks, 3),
            "workers (with start-up)": round(
                sum(_cpu(psutil.Process(worker.pid)) for worker in current.workers) * 1000 / tasks,
                3,
            ),
        }
        latency = orchy_bench.latency(current)
    seconds = (end - first) / NS_PER_S
    return {
        "engine": f"orchy {kind} worker",
        "tasks_per_second": round(tasks / seconds, 1),
        "latency_ms": {key: latency[key] for key in ("p50", "p90", "p99")},
        "seconds": round(seconds, 2),
        "cpu_ms_per_task": cpu_ms,
    }


def _wait_end(client: Any, kind: str) -> int:
    """The time the last run finished, pushed by the worker that finished it."""
    deadline = time.monotonic() + orchy_bench.RUN_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        # Short waits: the client's socket times out before a long BLPOP would end.
        ended = client.blpop([END_KEY], timeout=1)
        if ended is not None:
            return int(ended[1])
    raise RuntimeError(f"{kind}: the runs did not finish")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def celery_row(runs: int, log_dir: Path) -> dict[str, Any]:
    """Celery: one worker, prefork 2, started once its N chains are queued."""
    subprocess.run([sys.executable, str(PEERS / "setup.py"), "celery"], check=True)
    env = {
        **os.environ,
        "CELERY_BENCH_REDIS_URL": CELERY_REDIS,
        "CELERY_BENCH_POOL": "prefork",
        "CELERY_BENCH_CONCURRENCY": str(WORKERS),
    }
    args = ["--runs", str(runs), "--workers", "1", "--latency-runs", str(LATENCY_RUNS)]

    def phase(command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(CELERY_PYTHON), str(CELERY_SCRIPT), command, *args],
            cwd=PEERS,
            env=env,
            capture_output=True,
            text=True,
            timeout=PHASE_SECONDS,
        )
        if done.returncode != 0:
            raise RuntimeError(f"celery {command} failed: {done.stderr[-1500:]}")
        return done

    phase("setup")
    try:
        phase("queue")
        worker = [str(CELERY_PYTHON), str(CELERY_SCRIPT), "worker", "--index", "0"]
        with _common.WorkerGroup([worker], log_dir, env=env, cwd=PEERS):
            row = _common.last_json_line(phase("collect").stdout)
    finally:
        phase("teardown")
    if row is None:
        raise RuntimeError("celery collect printed no row")
    return row


def measure(runs: int, rounds: int, redis_url: str) -> dict[str, Any]:
    """``rounds`` rounds of the three, each in turn; every round's rows, and the medians."""
    measured: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="orchy-bench-routes-") as scratch:
        for round_number in range(rounds):
            for label, row_of in (
                ("raw", lambda: orchy_row("raw", runs, redis_url)),
                ("library", lambda: orchy_row("library", runs, redis_url)),
                ("celery", lambda: celery_row(runs, Path(scratch) / "celery")),
            ):
                row = {**row_of(), "round": round_number, "load_average": _load()}
                measured.setdefault(label, []).append(row)
                print(json.dumps(row), flush=True)
    medians = {label: _median(rows) for label, rows in measured.items()}
    # Ratios within each round (the same minutes of this shared machine), and their medians.
    per_round = [
        {
            "round": index,
            **{
                f"{label} / celery": {
                    "tasks_per_second": _ratio(measured, label, index, "tasks_per_second"),
                    "p50_latency": _ratio(measured, label, index, "p50"),
                }
                for label in ("raw", "library")
            },
        }
        for index in range(rounds)
    ]
    ratios = {
        f"{label} / celery": {
            key: round(statistics.median(entry[f"{label} / celery"][key] for entry in per_round), 2)
            for key in ("tasks_per_second", "p50_latency")
        }
        for label in ("raw", "library")
    }
    return {"rows": measured, "medians": medians, "ratios": ratios, "ratios_by_round": per_round}


def _figure(row: dict[str, Any], key: str) -> float:
    value = row["latency_ms"]["p50"] if key == "p50" else row[key]
    return float(value)


def _ratio(measured: dict[str, list[dict[str, Any]]], label: str, index: int, key: str) -> float:
    ours, celery = measured[label][index], measured["celery"][index]
    return round(_figure(ours, key) / _figure(celery, key), 2)


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tasks_per_second": round(
            statistics.median(_figure(row, "tasks_per_second") for row in rows), 1
        ),
        "p50": round(statistics.median(_figure(row, "p50") for row in rows), 3),
    }


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def render(result: dict[str, Any], runs: int, rounds: int) -> str:
    medians, ratios = result["medians"], result["ratios"]
    lines = [
        f"worker routes: N={runs} runs of the 4-step chain, {WORKERS} worker processes each, "
        f"median of {rounds} rounds; load average now {_load()}",
        "",
        "| worker | tasks/s | p50 step ms | tasks/s vs Celery | p50 vs Celery "
        "(medians of the rounds' ratios) |",
        "|---|---|---|---|---|",
    ]
    for label in ("raw", "library", "celery"):
        ratio = ratios.get(f"{label} / celery")
        versus = f"{ratio['tasks_per_second']}x | {ratio['p50_latency']}x" if ratio else "1x | 1x"
        lines.append(
            f"| {label} | {medians[label]['tasks_per_second']} | {medians[label]['p50']} | "
            f"{versus} |"
        )
    lines += ["", "by round:"]
    lines += [json.dumps(entry) for entry in result["ratios_by_round"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--redis", default=ORCHY_REDIS, help="Orchy's Redis (a redis:// URL)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = measure(args.runs, args.rounds, args.redis)
    print(render(result, args.runs, args.rounds))
    print(f"{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
