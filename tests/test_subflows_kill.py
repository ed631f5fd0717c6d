"""Sub-workflow hand-offs survive a server killed with SIGKILL mid-stream: real ``orchy
serve`` processes on a private redis-server; the first handles the spawn, cend and step
timers of many parents until it is killed, the second takes the timers it had claimed once
their claims expire. Every parent completes with its child's output, every child started
once, every end delivered once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.helpers.definitions import sub_workflow, system, workflow
from tests.helpers.http import Api, api_of
from tests.helpers.processes import Processes, RedisProcess, clean_env
from tests.helpers.waiting import unique, wait_until

PARENTS = 300
CLAIM_SECONDS = "1"  # a killed server's claimed timers are taken over after this
FINISH_SECONDS = 60.0


async def statuses(api: Api, flow_ids: list[str]) -> dict[str, str]:
    flows = await asyncio.gather(*(api.flow(flow_id) for flow_id in flow_ids))
    return {flow["id"]: flow["status"] for flow in flows}


def count(history: list[dict[str, Any]], event: str, **fields: Any) -> int:
    return sum(
        1
        for entry in history
        if entry["event"] == event and all(entry.get(k) == v for k, v in fields.items())
    )


async def test_hand_offs_survive_a_server_killed_mid_stream(
    tmp_path: Path, processes: Processes
) -> None:
    redis_server = RedisProcess(tmp_path / "redis")
    processes.redises.append(redis_server)
    await redis_server.start()
    env = clean_env(ORCHY_REDIS_URL=redis_server.url, ORCHY_TIMER_CLAIM_SECONDS=CLAIM_SECONDS)
    first = processes.server(env, tmp_path / "first.log")
    await first.start()
    name, child = unique("killed-parent"), unique("killed-child")
    done = {"status": "COMPLETED", "output": {"n": "{$.input.n}"}}
    async with api_of(first.url) as api:
        await api.register(workflow(child, system(1, "terminate", parameters=done)))
        await api.register(
            workflow(name, sub_workflow(1, child, n="{$.input.n}"), output="{$.1.output}")
        )
        response = await api.http.post(
            "/flow/execute/many",
            json={"name": name, "inputs": [{"n": n} for n in range(PARENTS)]},
        )
        assert response.status_code == 201, response.text
        parents: list[str] = response.json()["flowIds"]

        async def first_done() -> bool:
            return bool((await api.flow(parents[0]))["status"] == "COMPLETED")

        await wait_until(first_done, step=0.005, what="the first parent to complete")
    await first.kill()
    # Killed mid-stream: the first server saw some parents complete, not all (each server
    # logs every run's end).
    log = first.log_tail(None)
    ended_first = sum(f"run {parent} COMPLETED" in log for parent in parents)
    assert 0 < ended_first < PARENTS, ended_first

    second = processes.server(env, tmp_path / "second.log")
    await second.start()
    async with api_of(second.url) as api:

        async def all_done() -> bool:
            return set((await statuses(api, parents)).values()) == {"COMPLETED"}

        await wait_until(all_done, FINISH_SECONDS, step=0.2, what="every parent to complete")
        for n, parent_id in enumerate(parents):
            parent = await api.flow(parent_id)
            assert parent["output"] == {"n": n}, parent
            [link] = parent["children"]
            history = await api.history(parent_id)
            assert count(history, "CHILD_STARTED") <= 1, history
            assert count(history, "CHILD_ENDED") == 1, history
            assert count(history, "COMPLETED", action=1) == 1, history
            child_history = await api.history(link["flowId"])
            assert count(child_history, "RUN_STARTED") == 1, child_history
            assert count(child_history, "RUN_COMPLETED") == 1, child_history
    await second.terminate()
