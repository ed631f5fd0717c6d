"""A worker written against the raw HTTP protocol, as a user of any language would write
one, without Orchy's worker library: poll a batch of up to 16 tasks, run them, send one
``POST /tasks/{id}/complete`` per task (no ``next`` offer), poll again. One aiohttp session
with keep-alive connections.

It serves the benchmark's actions as ``bench/noop_worker.py`` does: ``bench-step`` does
nothing; ``bench-last`` counts finished runs in Redis once its result is accepted, and the
result that finishes the ``BENCH_RUNS``-th run pushes the time to ``BENCH_END_KEY``;
``bench-timed`` records step-to-step latency. The first task a process takes pushes the
time to ``BENCH_FIRST_KEY``.

    python -m bench.raw_worker --server http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from typing import Any

import aiohttp
import orjson
import redis.asyncio as redis
import uvloop

BATCH = 16
POLL_WAIT_SECONDS = 5.0
ACTIONS = ["bench-step", "bench-last", "bench-timed"]
COUNTER_KEY = os.environ.get("BENCH_COUNTER_KEY", "bench:done")
LATENCY_KEY = os.environ.get("BENCH_LATENCY_KEY", "bench:latency")
TIMED_DONE_KEY = os.environ.get("BENCH_TIMED_DONE_KEY", "bench:timed-done")
FIRST_KEY = os.environ.get("BENCH_FIRST_KEY", "bench:first")
END_KEY = os.environ.get("BENCH_END_KEY", "bench:end")
RUNS = int(os.environ.get("BENCH_RUNS", "0"))

BACKOFF_SECONDS = 0.5


class RawWorker:
    def __init__(self, server: str, counter: redis.Redis) -> None:
        self.server = server
        self.counter = counter
        self.worker_id = f"raw-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.first_taken = False
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            # The line bench/orchy_bench.py waits for.
            print(f"raw worker {self.worker_id} serving {self.server}", file=sys.stderr, flush=True)
            while not self.stopping.is_set():
                try:
                    tasks = await self.poll(http)
                except (aiohttp.ClientError, TimeoutError) as error:
                    print(f"poll failed: {error}", file=sys.stderr, flush=True)
                    await asyncio.sleep(BACKOFF_SECONDS)
                    continue
                if tasks and not self.first_taken:
                    self.first_taken = True
                    await self.counter.rpush(FIRST_KEY, time.time_ns())
                await asyncio.gather(*(self.run_task(http, task) for task in tasks))

    async def poll(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        body = {
            "workerId": self.worker_id,
            "actions": ACTIONS,
            "max": BATCH,
            "waitSeconds": POLL_WAIT_SECONDS,
        }
        async with http.post(f"{self.server}/tasks/poll", data=orjson.dumps(body)) as reply:
            answer = orjson.loads(await reply.read())
            if reply.status != 200:
                raise aiohttp.ClientError(f"poll answered {reply.status}: {answer}")
            tasks: list[dict[str, Any]] = answer["tasks"]
            return tasks

    async def run_task(self, http: aiohttp.ClientSession, task: dict[str, Any]) -> None:
        name, data = task["name"], task["input"]
        output: dict[str, Any] = {}
        if name == "bench-timed":
            previous_end = data.get("t")
            if previous_end:
                await self.counter.rpush(LATENCY_KEY, time.time_ns() - int(previous_end))
            if data.get("last"):
                await self.counter.rpush(TIMED_DONE_KEY, 1)
            output = {"t": time.time_ns()}
        body = orjson.dumps({"output": output})
        url = f"{self.server}/tasks/{task['taskId']}/complete"
        async with http.post(url, data=body) as reply:
            await reply.read()
            if reply.status != 200:
                print(f"complete answered {reply.status}", file=sys.stderr, flush=True)
                return
        if name == "bench-last":
            done = await self.counter.incr(COUNTER_KEY)
            if done == RUNS:
                await self.counter.rpush(END_KEY, time.time_ns())


async def main(server: str) -> None:
    # A few connections, not one per task in hand (as bench/noop_worker.py).
    counter = redis.Redis(
        connection_pool=redis.BlockingConnectionPool.from_url(
            os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/5"), max_connections=4
        )
    )
    worker = RawWorker(server.rstrip("/"), counter)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stopping.set)
    runner = asyncio.create_task(worker.run())
    await worker.stopping.wait()
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    await counter.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    uvloop.run(main(parser.parse_args().server))
