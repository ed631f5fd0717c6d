"""Run the peer engines' benchmarks, each in its own virtualenv, and collect their rows.

From the project's venv (standard library only here; each peer runs in bench/.venvs/<peer>):

    python bench/peers/run_peers.py                          # all peers, N=2000, W=2
    python bench/peers/run_peers.py --runs 200 --peers celery,rq
    python bench/peers/run_peers.py --out peers.jsonl --chart peers.png

For each peer: install it if its venv lacks it (bench/peers/setup.py), run the script's
``setup``, start W worker processes in the peer's venv and wait until each says READY, run
``bench`` (which prints one JSON row), stop the workers, run ``teardown``. A peer that fails
at any point gets a row with ``status`` and ``error`` instead of numbers. Rows go to stdout as
JSON lines (and to ``--out``); a markdown table (bench/report.py) goes to stderr at the end.
Worker and bench logs: bench/.venvs/logs/<peer>/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common
import setup

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


# peer -> (script, whether W worker processes are started from outside the bench)
PEERS: dict[str, tuple[str, bool]] = {
    "celery": ("celery_bench.py", True),
    "rq": ("rq_bench.py", True),
    "dbos": ("dbos_bench.py", True),
    "liteflow": ("liteflow_bench.py", False),
}


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def run_one(peer: str, args: argparse.Namespace) -> dict[str, Any]:
    script, external_workers = PEERS[peer]
    try:
        python = setup.ensure(peer)
    except Exception as exc:
        return _common.failure_row(
            peer, f"could not install: {type(exc).__name__}: {exc}", status="unavailable"
        )
    before = load_average()
    started = time.monotonic()
    result = _common.run_peer(
        peer,
        python,
        HERE / script,
        args,
        external_workers=external_workers,
        log_dir=setup.VENVS_DIR / "logs" / peer,
        timeout=args.timeout,
    )
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    # Another load on this machine skews every figure: keep what it was next to them.
    result["load_average"] = f"{before} -> {load_average()}"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common.add_common_arguments(parser)
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated, from {', '.join(PEERS)} (default: all)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=_common.BENCH_TIMEOUT_SECONDS,
        help="seconds one peer's bench may take",
    )
    parser.add_argument("--out", type=Path, help="also write the rows here, one JSON per line")
    parser.add_argument("--chart", type=Path, help="write a PNG bar chart here")
    args = parser.parse_args(argv)
    peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in peers if name not in PEERS]
    if unknown:
        parser.error(f"unknown peers: {', '.join(unknown)}")

    _common.exit_on_sigterm()
    rows: list[dict[str, Any]] = []
    for peer in peers:
        _common.log(f"== {peer}: N={args.runs}, W={args.workers}, load {load_average()}")
        result = run_one(peer, args)
        rows.append(result)
        _common.emit(result)
        if args.out:
            with args.out.open("a" if len(rows) > 1 else "w") as out:
                out.write(json.dumps(result) + "\n")

    sys.path.insert(0, str(ROOT))
    report = importlib.import_module("bench.report")
    _common.log("\n" + report.render(rows))
    if args.chart:
        _common.log(f"chart: {report.chart(rows, args.chart)}")
    return 0 if all(row.get("tasks_per_second") is not None for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
