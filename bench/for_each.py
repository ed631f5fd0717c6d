"""The for-each workload: one run whose forEach starts 10,000 no-op items (``bench-step``),
answered by ``orchy worker bench/noop_worker.py`` processes over HTTP, on a fresh server and
embedded Redis. The time runs from ``POST /flow/execute`` to the end of the action after the
for-each (``bench-last``, which pushes the time when it runs). Also Redis bytes per finished
item: the run hash and history (MEMORY USAGE) over the items, and the growth of
``used_memory``. Then, in the same run, Celery's peer of it (``--celery``): a chord of as
many no-op tasks and a callback, with one Celery worker (prefork 2, as two processes),
on an embedded Redis of its own (the same redis-server binary), timed from sending the
chord to the callback's end.

    python -m bench.run --workload for-each          # or: python -m bench.for_each
    python -m bench.for_each --items 10000 --concurrency 1000 --trials 3 --celery
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from app.store.embedded import EmbeddedRedis
from bench import orchy_bench

PEERS = orchy_bench.ROOT / "bench" / "peers"
CELERY_SCRIPT = PEERS / "celery_bench.py"
CELERY_PYTHON = orchy_bench.ROOT / "bench" / ".venvs" / "celery" / "bin" / "python"
CELERY_WORKER_PROCESSES = 2
REDIS_START_SECONDS = 10.0

sys.path.insert(0, str(PEERS))
import _common  # noqa: E402  (bench/peers is a folder of scripts, not a package)

DEFAULT_ITEMS = 10_000
DEFAULT_CONCURRENCY = 1000  # items open at once (ORCHY_MAX_FOR_EACH_CONCURRENCY's default)
DEFAULT_TRIALS = 3
END_KEY = "bench:end"
RUN_DEADLINE_SECONDS = 600.0
NS_PER_S = 1_000_000_000


def definition(name: str, concurrency: int) -> dict[str, Any]:
    return {
        "name": name,
        "rootAction": 1,
        "actions": [
            {
                "id": 1,
                "type": "system",
                "name": "forEach",
                "items": "{$.input.items}",
                "concurrency": concurrency,
                "body": {"type": "user", "name": "bench-step", "parameters": {"n": "{$.item}"}},
                "next": {"default": [2]},
            },
            {"id": 2, "type": "user", "name": "bench-last"},
        ],
    }


def trial(items: int, concurrency: int, workers: int, worker_concurrency: int) -> dict[str, Any]:
    env = {"BENCH_RUNS": "1"}
    with orchy_bench.stack("embedded", workers, worker_concurrency, env) as current:
        # No socket timeout: BLPOP waits for the whole for-each.
        client = redis.Redis.from_url(
            current.redis_url, decode_responses=True, socket_timeout=RUN_DEADLINE_SECONDS + 10
        )
        client.delete(END_KEY, "bench:done")
        name = f"bench-for-each-{time.time_ns()}"
        orchy_bench.register(current.url, definition(name, concurrency))
        before = int(client.info("memory")["used_memory"])
        with httpx.Client(base_url=current.url, timeout=60) as http:
            started = time.time_ns()
            answer = http.post(
                "/flow/execute", json={"name": name, "input": {"items": list(range(items))}}
            )
            flow_id = answer.json()["flowId"]
            popped = client.blpop([END_KEY], timeout=RUN_DEADLINE_SECONDS)
            if popped is None:
                raise RuntimeError(f"the for-each of {items} items did not end in time")
            seconds = (int(popped[1]) - started) / NS_PER_S
            flow = http.get(f"/flow/{flow_id}").json()
            while flow["status"] == "RUNNING":  # bench-last pushes the time, then completes
                time.sleep(orchy_bench.STEP_SECONDS)
                flow = http.get(f"/flow/{flow_id}").json()
        used = int(client.info("memory")["used_memory"])
        run_key = next(iter(client.scan_iter(match=f"*:run:{flow_id}")))
        hist_key = next(iter(client.scan_iter(match=f"*:hist:{flow_id}")))
        run_bytes = int(client.memory_usage(run_key, samples=0) or 0)
        hist_bytes = int(client.memory_usage(hist_key, samples=0) or 0)
        outputs = flow["actions"]["1"]["output"]
        return {
            "items": items,
            "concurrency": concurrency,
            "status": flow["status"],
            "outputs": len(outputs) if isinstance(outputs, list) else None,
            "seconds": round(seconds, 2),
            "items_per_second": round(items / seconds),
            "run_hash_bytes_per_item": round(run_bytes / items),
            "history_bytes_per_item": round(hist_bytes / items),
            "used_memory_bytes_per_item": round((used - before) / items),
        }


def celery_chord(tasks: int) -> dict[str, Any]:
    """Celery's chord of ``tasks`` no-op tasks, with its worker already running."""
    subprocess.run([sys.executable, str(PEERS / "setup.py"), "celery"], check=True)
    with tempfile.TemporaryDirectory(prefix="orchy-bench-celery-") as folder:
        server = EmbeddedRedis(Path(folder))
        server.start(REDIS_START_SECONDS)
        try:
            env = {
                **os.environ,
                "CELERY_BENCH_REDIS_URL": server.url,
                "CELERY_BENCH_CELERY_URL": f"redis+socket://{server.socket_path}",
                "CELERY_BENCH_POOL": "prefork",
                "CELERY_BENCH_CONCURRENCY": str(CELERY_WORKER_PROCESSES),
            }
            worker = [str(CELERY_PYTHON), str(CELERY_SCRIPT), "worker", "--index", "0"]
            with _common.WorkerGroup([worker], Path(folder) / "logs", env=env, cwd=PEERS):
                done = subprocess.run(
                    [str(CELERY_PYTHON), str(CELERY_SCRIPT), "chord", "--runs", str(tasks)],
                    cwd=PEERS,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=RUN_DEADLINE_SECONDS,
                )
            if done.returncode != 0:
                raise RuntimeError(f"celery chord failed: {done.stderr[-1500:]}")
            row = _common.last_json_line(done.stdout)
            if row is None:
                raise RuntimeError("celery chord printed no row")
            return row
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--workers", type=int, default=orchy_bench.DEFAULT_WORKERS)
    parser.add_argument("--worker-concurrency", type=int, default=orchy_bench.DEFAULT_CONCURRENCY)
    parser.add_argument("--celery", action="store_true", help="also Celery's chord, in turn")
    args = parser.parse_args(argv)
    rows = []
    chords = []
    for _ in range(args.trials):
        row = trial(args.items, args.concurrency, args.workers, args.worker_concurrency)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.celery:
            chords.append(celery_chord(args.items))
            print(json.dumps(chords[-1]), flush=True)
    seconds = statistics.median(row["seconds"] for row in rows)
    print(
        f"for-each of {args.items} no-op items, {args.workers} worker processes: "
        f"median {seconds:.2f} s ({args.items / seconds:.0f} items/s) over {len(rows)} trials"
    )
    if chords:
        chord_seconds = statistics.median(row["seconds"] for row in chords)
        print(
            f"celery chord of {args.items} no-op tasks, {CELERY_WORKER_PROCESSES} worker "
            f"processes: median {chord_seconds:.2f} s ({args.items / chord_seconds:.0f} "
            f"tasks/s); Orchy / Celery time: {seconds / chord_seconds:.2f}"
        )


if __name__ == "__main__":
    main()
