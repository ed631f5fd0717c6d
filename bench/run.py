"""The whole benchmark in one command: Orchy's workloads on the embedded Redis and on the
local Redis, then the peers (Celery, RQ, DBOS, LiteFlow) doing the same chain and step
latency work with the same number of worker processes. Prints one table and writes it to
bench/results/latest.md with a PNG chart beside it.

    python -m bench.run                    # chain + latency everywhere, then the peers
    python -m bench.run --full             # also start rate, growth (1k/10k/100k), fan-out
    python -m bench.run --no-peers --runs 500
    python -m bench.run --workload worker-routes   # raw worker, worker library, Celery
    python -m bench.run --workload for-each        # one forEach of 10,000 no-op items

Chain and latency are measured in ``--trials`` rounds (3 by default), each round every engine
once, one after the other: a slow moment of this shared machine then falls on one round of
each engine rather than on one engine. Each engine's row is the median of its rounds
(bench/report.py's ``median_row``); the other workloads run once, in the first round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import for_each, orchy_bench, report, worker_routes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOCAL_REDIS = "redis://127.0.0.1:6379/5"
TARGETS = (("embedded redis", "embedded"), ("redis 6379", LOCAL_REDIS))
START_RATE_RUNS = 5000
NO_TAKE_NEXT = {"ORCHY_WORKER_TAKE_NEXT": "false"}
DEFAULT_TRIALS = 3


def orchy_rows(args: argparse.Namespace, full: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chain and latency on each target; with ``full``, the other workloads too."""
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for label, target in TARGETS:
        with orchy_bench.stack(target, args.workers, args.concurrency, {}) as current:
            chain = orchy_bench.chain(current, args.runs)
            latency = orchy_bench.latency(current)
            row = {
                "engine": f"orchy ({label})",
                "tasks_per_second": chain["tasks_per_second"],
                "latency_ms": {key: latency[key] for key in ("p50", "p90", "p99")},
                "notes": f"cpu ms/task {chain['cpu_ms_per_task']}",
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if full:
                extra[f"start rate ({label})"] = orchy_bench.start_rate(current, START_RATE_RUNS)
                extra[f"fan-out ({label})"] = orchy_bench.fan_out(current)
        if not full:
            continue
        # The same latency with the worker's take-next offer off: each step goes through its
        # queue and a long poll woken by the notification.
        with orchy_bench.stack(target, args.workers, args.concurrency, NO_TAKE_NEXT) as current:
            extra[f"step latency ms, take-next off ({label})"] = orchy_bench.latency(current)
        # Each size on its own stack, once the one above is down: on the local Redis they
        # would share a database, and the idle stack's workers would take tasks.
        extra[f"growth ({label})"] = orchy_bench.growth(
            target, args.workers, args.concurrency, args.sizes
        )
    return rows, extra


def peer_rows(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    command = [
        sys.executable,
        str(ROOT / "bench" / "peers" / "run_peers.py"),
        "--runs",
        str(args.runs),
        "--workers",
        str(args.workers),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return report.read_rows(out.read_text().splitlines()) if out.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=orchy_bench.DEFAULT_WORKERS)
    parser.add_argument("--concurrency", type=int, default=orchy_bench.DEFAULT_CONCURRENCY)
    parser.add_argument("--full", action="store_true", help="also start rate, growth, fan-out")
    parser.add_argument("--sizes", default="1000,10000,100000", help="growth sizes")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument(
        "--trials", type=int, default=DEFAULT_TRIALS, help="rounds of chain+latency"
    )
    parser.add_argument(
        "--workload",
        choices=["engines", "worker-routes", "for-each"],
        default="engines",
        help="engines: the table above; worker-routes: bench/worker_routes.py; "
        "for-each: bench/for_each.py",
    )
    args = parser.parse_args()
    if args.workload == "worker-routes":
        worker_routes.main(["--runs", str(args.runs), "--rounds", str(args.trials)])
        return
    if args.workload == "for-each":
        for_each.main(["--trials", str(args.trials)])
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not args.no_peers:
        subprocess.run([sys.executable, str(ROOT / "bench" / "peers" / "setup.py")], check=True)
    trials: dict[str, list[dict[str, Any]]] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="orchy-bench-peers-") as scratch:
        for trial in range(args.trials):
            rows, more = orchy_rows(args, full=args.full and trial == 0)
            extra.update(more)
            if not args.no_peers:
                rows += peer_rows(args, Path(scratch) / f"peers-{trial}.jsonl")
            for row in rows:
                trials.setdefault(str(row.get("engine")), []).append({**row, "trial": trial})
    all_trials = [row for engine_trials in trials.values() for row in engine_trials]
    (RESULTS / "trials.jsonl").write_text("".join(json.dumps(row) + "\n" for row in all_trials))
    rows = [report.median_row(engine_trials) for engine_trials in trials.values()]
    table = report.render(rows)
    lines = [
        "# Benchmark results",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"N={args.runs} runs of a 4-step chain, {args.workers} worker processes each, "
        f"median of {args.trials} rounds; "
        f"load average at the end {os.getloadavg()[0]:.2f}; "
        f"{time.monotonic() - started:.0f} s in all.",
        "",
        table,
    ]
    for title, figures in extra.items():
        lines += [f"## {title}", "", "```json", json.dumps(figures, indent=2), "```", ""]
    text = "\n".join(lines)
    (RESULTS / "latest.md").write_text(text)
    report.chart(rows, RESULTS / "latest.png")
    print(text)


if __name__ == "__main__":
    main()
