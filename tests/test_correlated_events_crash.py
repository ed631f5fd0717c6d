"""A correlated event's delivery survives kill -9 of the server that was delivering it: a
real ``orchy serve`` is killed while its delivery record exists (after it took the waiters
off the index, before it finished), and another server resumes the delivery from the
record's timer: every waiting run gets the event exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx

from app.store.keys import Keys
from tests.conftest import TEST_PARTITIONS
from tests.helpers.definitions import system, workflow
from tests.helpers.http import api_of
from tests.helpers.processes import Processes, clean_env
from tests.helpers.waiting import unique, wait_until

RUNS = 500
DELIVERY_RETRY_SECONDS = "1"
CHECKS_AT_ONCE = 16


async def test_a_delivery_cut_by_kill_9_is_finished_by_another_server(
    tmp_path: Path, processes: Processes, redis_url: str, redis_client: Any
) -> None:
    env = clean_env(REDIS_URL=redis_url, ORCHY_EVENT_DELIVERY_RETRY_SECONDS=DELIVERY_RETRY_SECONDS)
    keys = Keys(TEST_PARTITIONS)
    name, event, key = unique("corr-crash"), unique("paid"), unique("order")
    index = keys.correlation(event, key)
    records = f"{keys.delivery(index.partition, '')}*"
    first = processes.server(env, tmp_path / "first.log")
    await first.start()
    async with api_of(first.url) as api:
        await api.register(workflow(name, system(1, "wait", event=event, correlationKey=key)))
        started = await api.http.post(
            "/flow/execute/many", json={"name": name, "inputs": [{}] * RUNS}
        )
        assert started.status_code == 201, started.text
        flows: list[str] = started.json()["flowIds"]

        async def registered() -> bool:
            return int(await redis_client.zcard(index.waiters)) == RUNS

        await wait_until(registered, what="every run registered in the index")

        async def recorded() -> bool:
            return bool(await redis_client.keys(records))

        async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
            posting = asyncio.create_task(
                http.post(f"/events/{event}", json={"key": key, "data": {"paid": 1}})
            )
            await wait_until(recorded, step=0.001, what="the delivery to be recorded")
            await first.kill()
            with contextlib.suppress(httpx.HTTPError):
                await posting
    # Killed midway: the record of the delivery is still there, and its timer.
    [record] = await redis_client.keys(records)
    assert await redis_client.zcard(index.timers) >= 1
    delivered_before = sum(
        [(await redis_client.hget(keys.run(flow).run, "x:1:n")) == "2" for flow in flows]
    )
    assert delivered_before < RUNS

    second = processes.server(env, tmp_path / "second.log")
    await second.start()
    async with api_of(second.url) as api:
        checking = asyncio.Semaphore(CHECKS_AT_ONCE)

        async def received_once(flow: str) -> None:
            async with checking:
                done = await api.wait_status(flow, "COMPLETED")
                assert done["actions"]["1"]["output"] == {"paid": 1}
                history = await api.history(flow)
                assert [entry["event"] for entry in history].count("EVENT_RECEIVED") == 1

        await asyncio.gather(*(received_once(flow) for flow in flows))
    assert await redis_client.exists(record) == 0
    assert await redis_client.zcard(index.waiters) == 0
