"""Orchy's own benchmark workloads, against a server started here, with `orchy worker`
processes over HTTP. Prints numbers; asserts nothing.

    python -m bench.orchy_bench --redis embedded --workload chain --runs 2000
    python -m bench.orchy_bench --redis redis://127.0.0.1:6379/5 --workload all
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from bench import report

ROOT = Path(__file__).resolve().parent.parent
WORKER_FILE = ROOT / "bench" / "noop_worker.py"
HEALTH_DEADLINE_SECONDS = 30.0
STEP_SECONDS = 0.05
START_CLIENTS = 16
START_BATCH = 200
START_BATCH_CLIENTS = 2
CHAIN_STEPS = 4
LATENCY_RUNS = 200
WORKER_SERVING = " serving "  # in the line a worker logs once it polls
TIMED_DONE_KEY = "bench:timed-done"  # the latency workload's last step pushes here
FAN_OUT = 1000
GROWTH_WARM_UP_RUNS = 200
GROWTH_TRIALS = 3  # of each size, in turn
NS_PER_MS = 1_000_000
DEFAULT_WORKERS = 2
DEFAULT_CONCURRENCY = 64
RUN_DEADLINE_SECONDS = 1800.0
PERCENTILES = (50, 90, 99)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """A server and its workers; ``redis_url`` is where both the server state and the
    benchmark counters live."""

    url: str
    redis_url: str
    server: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HEALTH_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(STEP_SECONDS)
    raise RuntimeError("the server did not become healthy")


def _watch_for_serving(process: subprocess.Popen[str]) -> threading.Event:
    """Set once the worker logs that it is serving; its log is read (and dropped) on."""
    serving = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if WORKER_SERVING in line:
                serving.set()

    threading.Thread(target=drain, daemon=True).start()
    return serving


def _wait_serving(process: subprocess.Popen[str], serving: threading.Event) -> None:
    deadline = time.monotonic() + HEALTH_DEADLINE_SECONDS
    while not serving.wait(STEP_SECONDS):
        if process.poll() is not None:
            raise RuntimeError("a worker exited before it served")
        if time.monotonic() > deadline:
            raise RuntimeError("a worker did not start serving")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _launch_quiet(port: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORCHY_DATA_DIR": data_dir}
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@asynccontextmanager
async def quiet_server(prefix: str) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``orchy serve`` on the embedded Redis in a temporary folder named ``prefix…``, its
    output dropped, once healthy: its url and process, stopped at the end if it still runs."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        server = _launch_quiet(port, data_dir)
        try:
            await asyncio.to_thread(_wait_healthy, url, server)
            yield url, server
        finally:
            _stop(server)


@contextmanager
def stack(
    redis_target: str, workers: int, concurrency: int, env: dict[str, str]
) -> Iterator[Stack]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="orchy-bench-") as data_dir:
        server_env = {**os.environ, **env, "ORCHY_DATA_DIR": data_dir}
        server_env.pop("REDIS_URL", None)
        if redis_target != "embedded":
            server_env["REDIS_URL"] = redis_target
            redis.Redis.from_url(redis_target).flushdb()
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=server_env,
            stdout=None if os.environ.get("BENCH_SERVER_OUT") else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, server)
            redis_url = (
                redis_target if redis_target != "embedded" else f"unix://{data_dir}/redis.sock"
            )
            current = Stack(url=url, redis_url=redis_url, server=server)
            worker_env = {"ORCHY_WORKER_CONCURRENCY": str(concurrency), **env}
            library = [sys.executable, "-m", "app.cli", "worker", str(WORKER_FILE), "--server", url]
            spawn_workers(current, [library] * workers, worker_env)
            yield current
        finally:
            for process in [*current.workers] if "current" in locals() else []:
                _stop(process)
            _stop(server)


def spawn_workers(current: Stack, commands: list[list[str]], env: dict[str, str]) -> None:
    """Starts a worker process per command and waits until each says it is serving, as the
    peers' benchmarks wait for their workers' READY. ``env`` adds to the benchmark's own."""
    worker_env = {
        **os.environ,
        "BENCH_COUNTER_URL": current.redis_url,
        "BENCH_TIMED_DONE_KEY": TIMED_DONE_KEY,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    ready = []
    for command in commands:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        current.workers.append(process)
        ready.append(_watch_for_serving(process))
    for process, serving in zip(current.workers[-len(commands) :], ready, strict=True):
        _wait_serving(process, serving)


def chain_definition(name: str) -> dict[str, Any]:
    actions = []
    for index in range(1, CHAIN_STEPS + 1):
        action: dict[str, Any] = {
            "id": index,
            "type": "user",
            "name": "bench-last" if index == CHAIN_STEPS else "bench-step",
            "parameters": {"i": index},
        }
        if index < CHAIN_STEPS:
            action["next"] = {"default": [index + 1]}
        actions.append(action)
    return {"name": name, "rootAction": 1, "actions": actions}


def timed_definition(name: str) -> dict[str, Any]:
    actions = []
    for index in range(1, CHAIN_STEPS + 1):
        params: dict[str, Any] = {"t": f"{{$.{index - 1}.output.t}}"} if index > 1 else {}
        if index == CHAIN_STEPS:
            params["last"] = True
        action: dict[str, Any] = {
            "id": index,
            "type": "user",
            "name": "bench-timed",
            "parameters": params,
        }
        if index < CHAIN_STEPS:
            action["next"] = {"default": [index + 1]}
        actions.append(action)
    return {"name": name, "rootAction": 1, "actions": actions}


def fan_out_definition(name: str, width: int) -> dict[str, Any]:
    branch_ids = list(range(2, width + 2))
    join_id = width + 2
    actions: list[dict[str, Any]] = [
        {
            "id": 1,
            "type": "system",
            "name": "switch",
            "expression": "go",
            "next": {"default": branch_ids},
        }
    ]
    actions += [
        {"id": i, "type": "user", "name": "bench-step", "next": {"default": [join_id]}}
        for i in branch_ids
    ]
    actions.append({"id": join_id, "type": "system", "name": "join", "joinOn": branch_ids})
    return {"name": name, "rootAction": 1, "actions": actions}


async def start_runs(url: str, name: str, count: int, clients: int = START_CLIENTS) -> float:
    """Starts ``count`` runs with ``clients`` concurrent clients; returns starts per second."""
    remaining = iter(range(count))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for _ in remaining:
                response = await http.post("/flow/execute", json={"name": name, "input": {}})
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return count / (time.perf_counter() - started)


async def start_runs_batched(url: str, name: str, count: int, batch: int = START_BATCH) -> float:
    """Starts ``count`` runs through POST /flow/execute/many; returns starts per second."""
    sizes = [min(batch, count - done) for done in range(0, count, batch)]
    pending = iter(sizes)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for size in pending:
                body = {"name": name, "inputs": [{}] * size}
                response = await http.post("/flow/execute/many", json=body)
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(START_BATCH_CLIENTS)))
    return count / (time.perf_counter() - started)


def register(url: str, definition: dict[str, Any]) -> None:
    httpx.post(f"{url}/metadata/workflow", json=definition, timeout=30).raise_for_status()


def wait_counter(client: redis.Redis, key: str, target: int) -> None:
    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    while int(client.get(key) or 0) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {client.get(key)} of {target} runs finished")
        time.sleep(STEP_SECONDS)


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    totals = {}
    for role, role_pids in pids.items():
        total = 0.0
        for pid in role_pids:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        totals[role] = total
    return totals


def stack_pids(current: Stack) -> dict[str, list[int]]:
    redis_pid = int(current.redis().info("server")["process_id"])
    return {
        "server": [current.server.pid],
        "workers": [worker.pid for worker in current.workers],
        "redis": [redis_pid] if psutil.pid_exists(redis_pid) else [],
    }


def chain(current: Stack, runs: int) -> dict[str, Any]:
    """N runs of the 4-step chain started up front; user tasks per second, and where the
    CPU went (ms of CPU per user task, per process role)."""
    name = f"bench-chain-{time.time_ns()}"
    register(current.url, chain_definition(name))
    client = current.redis()
    client.delete("bench:done")
    pids = stack_pids(current)
    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    start_rate = asyncio.run(start_runs_batched(current.url, name, runs))
    wait_counter(client, "bench:done", runs)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(pids)
    tasks = runs * CHAIN_STEPS
    return {
        "runs": runs,
        "tasks_per_second": round(tasks / elapsed, 1),
        "seconds": round(elapsed, 2),
        "start_rate_during": round(start_rate, 1),
        "cpu_ms_per_task": {
            role: round((cpu_after[role] - cpu_before[role]) * 1000 / tasks, 3) for role in pids
        },
    }


def latency(current: Stack, runs: int = LATENCY_RUNS) -> dict[str, Any]:
    """One run at a time; the time from step k's end to step k+1's start."""
    name = f"bench-timed-{time.time_ns()}"
    register(current.url, timed_definition(name))
    client = current.redis()
    client.delete("bench:latency")
    client.delete(TIMED_DONE_KEY)
    with httpx.Client(base_url=current.url, timeout=30) as http:
        for _ in range(runs):
            flow_id = http.post("/flow/execute", json={"name": name, "input": {}}).json()["flowId"]
            # Told by the last step, rather than by polling the server while steps are timed.
            assert client.blpop([TIMED_DONE_KEY], timeout=30) is not None
            while http.get(f"/flow/{flow_id}").json()["status"] == "RUNNING":
                time.sleep(0.001)
    samples = sorted(int(value) / NS_PER_MS for value in client.lrange("bench:latency", 0, -1))
    return {"samples": len(samples), **percentiles(samples)}


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {f"p{p}": float("nan") for p in PERCENTILES}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {f"p{p}": round(cuts[p - 1], 3) for p in PERCENTILES}


def start_rate(current: Stack, runs: int) -> dict[str, Any]:
    name = f"bench-start-{time.time_ns()}"
    # A workflow whose root waits for ever: starting is all that is measured.
    register(
        current.url,
        {
            "name": name,
            "rootAction": 1,
            "actions": [{"id": 1, "type": "system", "name": "wait", "event": "never"}],
        },
    )
    pids = stack_pids(current)
    cpu_before = cpu_seconds(pids)
    rate = asyncio.run(start_runs(current.url, name, runs))
    cpu_after = cpu_seconds(pids)
    return {
        "runs": runs,
        "starts_per_second": round(rate, 1),
        "server_cpu_ms_per_start": round(
            (cpu_after["server"] - cpu_before["server"]) * 1000 / runs, 3
        ),
    }


def fan_out(current: Stack, width: int = FAN_OUT) -> dict[str, Any]:
    name = f"bench-fan-{time.time_ns()}"
    register(current.url, fan_out_definition(name, width))
    started = time.perf_counter()
    with httpx.Client(base_url=current.url, timeout=30) as http:
        flow_id = http.post("/flow/execute", json={"name": name, "input": {}}).json()["flowId"]
        while http.get(f"/flow/{flow_id}").json()["status"] == "RUNNING":
            time.sleep(STEP_SECONDS)
        status = http.get(f"/flow/{flow_id}").json()["status"]
    return {"width": width, "status": status, "seconds": round(time.perf_counter() - started, 2)}


def memory(current: Stack, runs_done: int, used_before: int) -> dict[str, Any]:
    used = int(current.redis().info("memory")["used_memory"])
    rss = psutil.Process(current.server.pid).memory_info().rss
    return {
        "server_rss_mb": round(rss / 2**20, 1),
        "redis_bytes_per_run": round((used - used_before) / max(runs_done, 1)),
    }


def growth(redis_target: str, workers: int, concurrency: int, sizes: str) -> list[dict[str, Any]]:
    """The chain at growing sizes, each on a fresh server and database: tasks/s should stay
    flat; also the server's RSS and Redis memory per finished run. Each size is timed after
    a warm-up of the same chain (its runs are not counted), so that what a fresh server
    pays once (connections, caches) does not weigh on the small sizes alone. Each size is
    measured ``GROWTH_TRIALS`` times, the sizes in turn (1k, 10k, 100k, 1k, ...), each trial
    on a fresh stack, and its median trial kept: the host's speed drifts over minutes, and
    in turn, no size has all its trials in one slow or fast spell."""
    wanted = [int(part) for part in sizes.split(",")]
    measured: dict[int, list[dict[str, Any]]] = {size: [] for size in wanted}
    for _ in range(GROWTH_TRIALS):
        for size in wanted:
            measured[size].append(_growth_trial(redis_target, workers, concurrency, size))
    return [report.median_row(measured[size]) for size in wanted]


def _growth_trial(redis_target: str, workers: int, concurrency: int, size: int) -> dict[str, Any]:
    with stack(redis_target, workers, concurrency, {}) as current:
        chain(current, GROWTH_WARM_UP_RUNS)
        before = int(current.redis().info("memory")["used_memory"])
        row = {"size": size, **chain(current, size)}
        row.update(memory(current, size, before))
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="embedded", help="embedded, or a redis:// URL")
    parser.add_argument(
        "--workload",
        default="chain",
        choices=["chain", "latency", "start", "growth", "fanout", "all"],
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--sizes", default="1000,10000,100000", help="growth sizes")
    args = parser.parse_args()
    results: dict[str, Any] = {"redis": args.redis, "workers": args.workers}
    with stack(args.redis, args.workers, args.concurrency, {}) as current:
        if args.workload in ("chain", "all"):
            results["chain"] = chain(current, args.runs)
        if args.workload in ("latency", "all"):
            results["latency_ms"] = latency(current)
        if args.workload in ("start", "all"):
            results["start"] = start_rate(current, args.runs)
        if args.workload in ("fanout", "all"):
            results["fan_out"] = fan_out(current)
    if args.workload in ("growth", "all"):
        results["growth"] = growth(args.redis, args.workers, args.concurrency, args.sizes)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
