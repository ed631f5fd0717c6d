"""Search: a filtered page of 50 among 100,000 runs. Prints numbers; asserts nothing (the
target is under 20 ms of server time).

A real ``orchy serve`` on the embedded Redis (REDIS_URL unset). The runs are started over
HTTP (``POST /flow/execute/many``, 200 per request), so they go through the engine's real
start and its indexing: four workflows (``bench-search-0..3``), whose root switch on
``$.input.kind`` sets the searchable variable ``orderId`` and ends the run at once as
COMPLETED (60 %) or FAILED (20 %), or leaves it RUNNING on a wait (20 %); 10,000 distinct
searchable ``$.input.email`` values (10 runs each). Then each query is asked ``--requests``
times, one at a time; the server time is the handler's own measure (its ``Server-Timing``
header, ``search;dur=``), the client time the request's round trip. Last, Redis bytes per
run of the indexes: ``MEMORY USAGE`` of every index key, over the number of runs.

    python -m bench.search [--runs 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import httpx
import redis

from bench.orchy_bench import stack

WORKFLOWS = 4
EMAILS = 10_000
BATCH = 200
PAGE = 50
SEARCHABLE = ["$.input.email", "$.vars.orderId"]


def definition(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "rootAction": 1,
        "vars": {"orderId": None},
        "searchable": SEARCHABLE,
        "actions": [
            {
                "id": 1,
                "type": "system",
                "name": "switch",
                "expression": "{$.input.kind}",
                "setVars": [{"var": "orderId", "op": "assign", "value": "{$.input.order}"}],
                "next": {"done": [2], "failed": [3], "default": [4]},
            },
            {"id": 2, "type": "system", "name": "terminate", "parameters": {"status": "COMPLETED"}},
            {
                "id": 3,
                "type": "system",
                "name": "terminate",
                "parameters": {"status": "FAILED", "reason": "declined"},
            },
            {"id": 4, "type": "system", "name": "wait", "event": "never"},
        ],
    }


def run_input(number: int) -> dict[str, Any]:
    kind = ("done", "done", "done", "failed", "waiting")[number % 5]
    return {"email": f"user{number % EMAILS}@example.com", "kind": kind, "order": f"O-{number}"}


async def load(client: httpx.AsyncClient, runs: int) -> float:
    """Starts ``runs`` runs; returns how many per second."""
    started = time.perf_counter()
    slots = asyncio.Semaphore(8)

    async def batch(first: int) -> None:
        numbers = range(first, min(first + BATCH, runs))
        name = f"bench-search-{first // BATCH % WORKFLOWS}"
        body = {"name": name, "inputs": [run_input(number) for number in numbers]}
        async with slots:
            response = await client.post("/flow/execute/many", json=body)
        response.raise_for_status()

    await asyncio.gather(*(batch(first) for first in range(0, runs, BATCH)))
    return runs / (time.perf_counter() - started)


def server_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]
    return float(timing.split("dur=")[1])


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):6.2f} ms, p95 {p95:6.2f} ms"


async def measure(client: httpx.AsyncClient, label: str, params: dict[str, Any], n: int) -> None:
    server: list[float] = []
    wall: list[float] = []
    found = 0
    for _ in range(n):
        began = time.perf_counter()
        response = await client.get("/flow", params={**params, "limit": PAGE})
        wall.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        server.append(server_ms(response))
        found = len(response.json()["runs"])
    print(f"  {label:<46} {found:>3} runs  server {summary(server)}  client {summary(wall)}")


def index_bytes(redis_url: str, runs: int) -> None:
    client = redis.Redis.from_url(redis_url)
    groups: dict[str, list[bytes]] = {"new indexes (ix:*)": [], "all-runs and by-name": []}
    for key in client.scan_iter(match="orchy:{p*}:*", count=10_000):
        text = key.decode()
        if ":ix:" in text:
            groups["new indexes (ix:*)"].append(key)
        elif text.split(":", 2)[2].startswith("runs"):
            groups["all-runs and by-name"].append(key)
    totals = {}
    for group, keys in groups.items():
        total = 0
        for first in range(0, len(keys), 1000):
            pipe = client.pipeline(transaction=False)
            for key in keys[first : first + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(size or 0) for size in pipe.execute())
        totals[group] = total
    run_keys = client.scan(0, match="orchy:{p*}:run:*", count=5000)[1][:1000]
    pipe = client.pipeline(transaction=False)
    for key in run_keys:
        pipe.hget(key, "ix")
    ix_lengths = [len(value) for value in pipe.execute() if value]
    count = sum(len(keys) for keys in groups.values())
    print(f"Redis bytes per run ({runs} runs, {count} index keys, MEMORY USAGE ... SAMPLES 0):")
    for group, total in totals.items():
        print(f"  {group:<32} {total / runs:8.1f}")
    print(f"  {'sum':<32} {sum(totals.values()) / runs:8.1f}")
    if ix_lengths:
        print(f"  plus each run hash's `ix` field: {statistics.mean(ix_lengths):.0f} bytes of JSON")


async def bench(url: str, redis_url: str, runs: int, requests: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for index in range(WORKFLOWS):
            response = await client.post(
                "/metadata/workflow", json=definition(f"bench-search-{index}")
            )
            response.raise_for_status()
        window_start = int(time.time() * 1000)
        rate = await load(client, runs)
        window_end = int(time.time() * 1000)
        print(f"{runs} runs started over HTTP at {rate:.0f} runs/s")
        middle = (window_start + window_end) // 2
        quarter = (window_end - window_start) // 4
        failed = (await client.get("/flow", params={"status": "FAILED", "limit": PAGE})).json()
        queries: list[tuple[str, dict[str, Any]]] = [
            ("no filter", {}),
            ("status=FAILED", {"status": "FAILED"}),
            (
                "status=FAILED, second page (cursor)",
                {"status": "FAILED", "cursor": failed["nextCursor"]},
            ),
            ("status=RUNNING,FAILED", {"status": "RUNNING,FAILED"}),
            ("where email (10 runs)", {"where": "$.input.email=user4242@example.com"}),
            ("where vars.orderId (1 run)", {"where": f"$.vars.orderId=O-{runs // 2}"}),
            (
                "name+version+started range",
                {
                    "name": "bench-search-2",
                    "version": 1,
                    "startedAfter": middle - quarter,
                    "startedBefore": middle + quarter,
                },
            ),
            (
                "status=COMPLETED+name+email",
                {
                    "status": "COMPLETED",
                    "name": "bench-search-1",
                    "where": "$.input.email=user4201@example.com",
                },
            ),
            (
                "status=COMPLETED+ended range",
                {"status": "COMPLETED", "endedAfter": middle, "endedBefore": middle + quarter},
            ),
        ]
        print(f"GET /flow, limit {PAGE}, {requests} requests each, one at a time:")
        for label, params in queries:
            await measure(client, label, params, requests)
    index_bytes(redis_url, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with stack("embedded", 0, 1, {}) as current:
        asyncio.run(bench(current.url, current.redis_url, args.runs, args.requests))
    print(f"load average after: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
