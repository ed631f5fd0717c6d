"""/health latency under load. Prints numbers; asserts nothing (the target is under 100 ms
for every answer).

By default, while one run's big data document is resolved: a run keeps four outputs of
about 0.8 MB each, and completing its next step plans a user action whose parameter is
``{$..*}`` (JSONPath over the whole document). /health is asked over and over, one request
at a time, until that completion is answered.

With ``--scripts N``, while N runs of ``while(true){}`` are started at once: each holds a
script thread until its time limit, and they queue for the ``js_threads`` threads. /health
is asked until every start is answered.

    python -m bench.health_under_load [--redis embedded|redis://...] [--outputs 4] [--rows 18000]
    python -m bench.health_under_load --scripts 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from bench.orchy_bench import percentiles, stack

MS_PER_SECOND = 1000
POLL_SECONDS = 10.0
NAME = "bench-health-under-load"
SCRIPTS_NAME = "bench-health-under-scripts"
HEALTH_PAUSE_SECONDS = 0.05


def definition(outputs: int) -> dict[str, Any]:
    actions: list[dict[str, Any]] = [
        {"id": index, "type": "user", "name": "bench-big", "next": {"default": [index + 1]}}
        for index in range(1, outputs + 1)
    ]
    actions += [
        {
            "id": outputs + 1,
            "type": "user",
            "name": "bench-trigger",
            "next": {"default": [outputs + 2]},
        },
        {"id": outputs + 2, "type": "user", "name": "bench-all", "parameters": {"all": "{$..*}"}},
    ]
    return {"name": NAME, "rootAction": 1, "actions": actions}


async def take(client: httpx.AsyncClient, action: str) -> str:
    body = {"workerId": "bench", "actions": [action], "max": 1, "waitSeconds": POLL_SECONDS}
    tasks = (await client.post("/tasks/poll", json=body)).json()["tasks"]
    if not tasks:
        raise RuntimeError(f"no {action} task came")
    task_id: str = tasks[0]["taskId"]
    return task_id


async def measure(url: str, outputs: int, rows: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        (await client.post("/metadata/workflow", json=definition(outputs))).raise_for_status()
        (await client.post("/flow/execute", json={"name": NAME, "input": {}})).raise_for_status()
        for producer in range(outputs):
            output = {"rows": [{"id": i, "by": producer, "tags": ["a", "b"]} for i in range(rows)]}
            task_id = await take(client, "bench-big")
            response = await client.post(f"/tasks/{task_id}/complete", json={"output": output})
            response.raise_for_status()
        idle = [await health_ms(client) for _ in range(20)]
        task_id = await take(client, "bench-trigger")
        started = time.perf_counter()
        completing = asyncio.ensure_future(
            client.post(f"/tasks/{task_id}/complete", json={"output": {}})
        )
        loaded = []
        while not completing.done():
            loaded.append(await health_ms(client))
        (await completing).raise_for_status()
        planned_ms = (time.perf_counter() - started) * MS_PER_SECOND
        await take(client, "bench-all")
    print(f"document: {outputs} outputs of {rows} rows; planning took {planned_ms:.0f} ms")
    print(f"/health idle:   p50 {statistics.median(idle):.1f} ms, max {max(idle):.1f} ms")
    if len(loaded) >= 2:  # enough for percentiles
        marks = ", ".join(f"{cut} {value:.1f} ms" for cut, value in percentiles(loaded).items())
        print(f"/health loaded: {len(loaded)} answers, {marks}, max {max(loaded):.1f} ms")
    else:
        print(f"/health loaded: {len(loaded)} answer(s) while the run was planned: {loaded}")


async def measure_scripts(url: str, runs: int) -> None:
    definition = {
        "name": SCRIPTS_NAME,
        "rootAction": 1,
        "actions": [
            {"id": 1, "type": "system", "name": "javascript", "expression": "while(true){}"}
        ],
    }
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        (await client.post("/metadata/workflow", json=definition)).raise_for_status()
        idle = [await health_ms(client) for _ in range(20)]
        body = {"name": SCRIPTS_NAME, "input": {}}
        started = time.perf_counter()
        starts = asyncio.gather(*(client.post("/flow/execute", json=body) for _ in range(runs)))
        loaded = []
        while not starts.done():
            loaded.append(await health_ms(client))
            await asyncio.sleep(HEALTH_PAUSE_SECONDS)
        for response in await starts:
            response.raise_for_status()
        took_ms = (time.perf_counter() - started) * MS_PER_SECOND
    print(f"{runs} runs of while(true){{}} started at once; all answered in {took_ms:.0f} ms")
    print(f"/health idle:   p50 {statistics.median(idle):.1f} ms, max {max(idle):.1f} ms")
    if len(loaded) >= 2:
        marks = ", ".join(f"{cut} {value:.1f} ms" for cut, value in percentiles(loaded).items())
        print(f"/health loaded: {len(loaded)} answers, {marks}, max {max(loaded):.1f} ms")
    else:
        print(f"/health loaded: {len(loaded)} answer(s) while the scripts ran: {loaded}")


async def health_ms(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    (await client.get("/health")).raise_for_status()
    return (time.perf_counter() - started) * MS_PER_SECOND


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="embedded")
    parser.add_argument("--outputs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=18_000)
    parser.add_argument("--scripts", type=int, default=0, help="runs of while(true){} instead")
    args = parser.parse_args()
    with stack(args.redis, workers=0, concurrency=1, env={}) as current:
        if args.scripts:
            asyncio.run(measure_scripts(current.url, args.scripts))
        else:
            asyncio.run(measure(current.url, args.outputs, args.rows))


if __name__ == "__main__":
    main()
