"""How long a stopped worker (``Worker.run`` given a stop event) takes to return: with a
long poll in flight (it is hung up, not waited for), and with a task that outlives the
shutdown grace (abandoned once the grace is over). Against ``orchy serve`` on the embedded
Redis. Prints numbers; asserts nothing.

    python -m bench.worker_stop_time [--trials 3] [--grace 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.orchy_bench import quiet_server
from orchy import Worker, WorkerSettings

POLL_WAIT_SECONDS = 30.0
STEP_SECONDS = 0.01
DEADLINE_SECONDS = 60.0


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not get there")
        await asyncio.sleep(STEP_SECONDS)


async def stop_seconds(worker: Worker, ready: Callable[[], Awaitable[bool]]) -> float:
    """Runs ``worker`` until ``ready``, stops it: seconds from the stop to ``run``'s return."""
    stop = asyncio.Event()
    job = asyncio.create_task(worker.run(stop, handle_signals=False))
    await until(ready)
    started = time.monotonic()
    stop.set()
    await job
    return time.monotonic() - started


async def long_poll(url: str, http: httpx.AsyncClient) -> float:
    name = f"idle-{uuid.uuid4().hex[:8]}"
    worker = Worker(url, settings=WorkerSettings(worker_poll_wait_seconds=POLL_WAIT_SECONDS))
    worker.action(name)(lambda input: None)

    async def polled() -> bool:
        queues = (await http.get("/tasks/queues")).json()["queues"]
        return any(queue["action"] == name and queue["lastPollAt"] for queue in queues)

    return await stop_seconds(worker, polled)


async def past_the_grace(url: str, http: httpx.AsyncClient, grace: float) -> float:
    name = f"hung-{uuid.uuid4().hex[:8]}"
    entered = asyncio.Event()
    worker = Worker(url, settings=WorkerSettings(worker_shutdown_grace_seconds=grace))

    @worker.action(name)
    async def hung(input: dict[str, Any]) -> None:
        entered.set()
        await asyncio.Event().wait()

    action = {"id": 1, "type": "user", "name": name}
    definition = {"name": name, "rootAction": 1, "actions": [action]}
    (await http.post("/metadata/workflow", json=definition)).raise_for_status()
    (await http.post("/flow/execute", json={"name": name, "input": {}})).raise_for_status()

    async def in_hand() -> bool:
        return entered.is_set()

    return await stop_seconds(worker, in_hand)


async def trial(grace: float) -> tuple[float, float]:
    async with (
        quiet_server("orchy-worker-stop-") as (url, _),
        httpx.AsyncClient(base_url=url, timeout=POLL_WAIT_SECONDS) as http,
    ):
        return await long_poll(url, http), await past_the_grace(url, http, grace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--grace", type=float, default=1.0)
    arguments = parser.parse_args()
    polls, graces = [], []
    for number in range(1, arguments.trials + 1):
        poll, grace = asyncio.run(trial(arguments.grace))
        polls.append(poll)
        graces.append(grace)
        print(
            f"trial {number}: {poll:.3f} s with a {POLL_WAIT_SECONDS:.0f} s poll in flight, "
            f"{grace:.3f} s with a task past a grace of {arguments.grace} s"
        )
    print(
        f"median: {statistics.median(polls):.3f} s (long poll), "
        f"{statistics.median(graces):.3f} s (past the grace)"
    )


if __name__ == "__main__":
    main()
