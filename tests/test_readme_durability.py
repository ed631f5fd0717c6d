"""The README's "Redis, durability, scaling" and retention promises, held to their word with
real servers and the Redis they share: finished runs expire after ORCHY_RETENTION_SECONDS
with everything that names them, a server with another partition count refuses to start,
and a lost pub/sub wake-up costs latency, never a task or a timer.

A lost wake-up is made for real: the test changes Redis itself (a queue entry pushed, a timer
moved) without the notification the server's scripts would publish."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store.connection import client_for_url
from app.store.embedded import EmbeddedRedis
from app.store.keys import Keys
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, ServerThread, free_port, serving
from tests.helpers.readme import MS_PER_SECOND, at_ms, redis_now_ms, timers_key
from tests.helpers.waiting import unique, wait_until

RETENTION_SECONDS = 1
# What a loaded machine may add to a recheck interval before the lost item is picked up.
RECHECK_SLACK_MS = 2000
REFUSAL_SECONDS = 30.0


@asynccontextmanager
async def api_of(thread: ServerThread) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=thread.url, timeout=30) as client:
        yield Api(client)


# -- retention -----------------------------------------------------------------------------


@pytest.fixture
def short_retention_server(
    settings: Settings, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerThread]:
    """A server whose settings read ORCHY_RETENTION_SECONDS=1 from the environment."""
    monkeypatch.setenv("ORCHY_RETENTION_SECONDS", str(RETENTION_SECONDS))
    fields = settings.model_dump(exclude={"retention_seconds"})
    with serving(Settings(**fields)) as thread:
        yield thread


async def test_a_finished_run_expires_with_its_history_events_listing_and_key(
    short_retention_server: ServerThread, redis_client: Any, settings: Settings
) -> None:
    name = unique("retention")
    action = f"{name}-a"
    keys = Keys(settings.partitions)
    assert short_retention_server.app.state.settings.retention_seconds == RETENTION_SECONDS
    async with api_of(short_retention_server) as api:
        await api.register(workflow(name, user(1, action)))
        started = await api.http.post(
            "/flow/execute", json={"name": name, "idempotencyKey": "order-1"}
        )
        assert started.status_code == 201, started.text
        flow_id = started.json()["flowId"]
        buffered = await api.http.post(f"/flow/{flow_id}/events/unheard", json={"k": 1})
        assert buffered.json() == {"status": "buffered"}
        run_keys = keys.run(flow_id)
        partition = keys.partition_of(flow_id)
        indexes = [keys.runs_index(partition), keys.runs_by_name(partition, name)]
        kept = [run_keys.run, run_keys.history, run_keys.events]
        for key in indexes:
            assert await redis_client.zscore(key, flow_id) is not None
        # A running run does not expire.
        assert [await redis_client.ttl(key) for key in kept] == [-1, -1, -1]

        assert (await api.complete((await api.poll_one(action))["taskId"], {})).status_code == 200
        await api.wait_status(flow_id, "COMPLETED")
        for key in kept:
            assert 0 < await redis_client.ttl(key) <= RETENTION_SECONDS

        async def expired() -> bool:
            return bool(await redis_client.exists(*kept) == 0)

        await wait_until(expired, what="the finished run's keys to expire")
        assert (await api.http.get(f"/flow/{flow_id}")).status_code == 404
        assert (await api.http.get(f"/flow/{flow_id}/history")).status_code == 404
        assert (await api.http.post(f"/flow/{flow_id}/events/e", json={})).status_code == 404
        listed = await api.http.get("/flow", params={"name": name})
        assert listed.status_code == 200, listed.text
        assert listed.json()["runs"] == []
        for key in indexes:
            assert await redis_client.zscore(key, flow_id) is None, key

        again = await api.http.post(
            "/flow/execute", json={"name": name, "idempotencyKey": "order-1"}
        )
        assert again.status_code == 201, again.text
        assert again.json()["created"] is True
        fresh = await api.flow(again.json()["flowId"])
        assert (fresh["status"], fresh["actions"]["1"]["status"]) == ("RUNNING", "QUEUED")
        assert [e["event"] for e in await api.history(fresh["id"])] == [
            "RUN_STARTED",
            "QUEUED",
        ]


# -- partitions ----------------------------------------------------------------------------


def test_a_server_with_another_partition_count_refuses_to_start(
    server: ServerThread, settings: Settings
) -> None:
    """The session's server stored its count; ``orchy serve`` with another one exits."""
    other = settings.partitions + 3
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "REDIS_URL" and not key.startswith("ORCHY_")
    }
    env.update({"REDIS_URL": settings.redis_url, "ORCHY_PARTITIONS": str(other)})
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())]
    try:
        ended = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=REFUSAL_SECONDS
        )
    except subprocess.TimeoutExpired as running:
        raise AssertionError(f"a server with {other} partitions started") from running

    assert ended.returncode != 0
    assert f"this Redis holds runs spread over {settings.partitions} partitions" in ended.stderr
    assert f"ORCHY_PARTITIONS={settings.partitions}" in ended.stderr


# -- timers with several servers ---------------------------------------------------------


async def test_every_server_sweeps_and_each_timer_fires_once(api: Api, settings: Settings) -> None:
    """Three servers share the Redis and sweep the same timers: each run's delay fires once
    and its next action is queued once."""
    name = unique("fire-once")
    after = f"{name}-after"
    runs = 30
    await api.register(
        workflow(name, system(1, "delay", {"default": [2]}, delaySeconds=0.3), user(2, after))
    )
    with serving(settings) as second, serving(settings) as third:
        async with api_of(second) as on_second, api_of(third) as on_third:
            starters = [api, on_second, on_third]
            flow_ids = [await starters[i % 3].start(name) for i in range(runs)]
            tasks: list[dict[str, Any]] = []

            async def all_queued() -> bool:
                for each in starters:
                    tasks.extend(await each.poll([after], most=runs, wait=0))
                return len(tasks) >= runs

            await wait_until(all_queued, what=f"the {runs} tasks after the delays")
            assert await api.poll([after], most=runs, wait=0.5) == []
            for task in tasks:
                assert (await api.complete(task["taskId"], {})).status_code == 200

    assert sorted(task["flowId"] for task in tasks) == sorted(flow_ids)
    for flow_id in flow_ids:
        entries = await api.history(flow_id)
        fired = [e for e in entries if e["event"] == "COMPLETED" and e.get("action") == 1]
        queued = [e for e in entries if e["event"] == "QUEUED" and e.get("action") == 2]
        assert (len(fired), len(queued)) == (1, 1), entries


async def test_each_server_logs_every_runs_end(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The session's server and a second one on the same Redis: a run started and finished
    on the second is logged as finished by both."""
    caplog.set_level(logging.INFO, logger="orchy.runs")
    name = unique("logged-end")
    await api.register(workflow(name, system(1, "delay", delaySeconds=0)))
    with serving(settings) as second:
        async with api_of(second) as on_second:
            flow_id = await on_second.start(name)
            await on_second.wait_status(flow_id, "COMPLETED")
            line = f"run {flow_id} COMPLETED"

            async def logged_twice() -> bool:
                return [r.getMessage() for r in caplog.records].count(line) >= 2

            await wait_until(logged_twice, what="both servers to log the run's end")


# -- lost wake-ups -------------------------------------------------------------------------


async def subscribed(thread: ServerThread) -> None:
    """Waits until the server listens to the notify channel: its first look at everything,
    on subscribing, is behind it."""
    notifier = thread.app.state.notifier

    async def listening() -> bool:
        return bool(notifier.subscribed.is_set())

    await wait_until(listening, what="the server's notifier to subscribe")


def shipped_rechecks(settings: Settings) -> Settings:
    """``settings`` with the recheck intervals the server ships with."""
    names = ("poll_recheck_seconds", "timer_idle_recheck_seconds")
    return settings.model_copy(update={n: Settings.model_fields[n].default for n in names})


async def test_a_long_poll_gets_a_task_whose_wake_up_was_lost(
    api: Api, redis_client: Any, settings: Settings
) -> None:
    """A task is queued (by another server) before this server starts, so it never hears of
    it, and its queue entry is held out by the test until this server's long poll has looked
    everywhere once. Pushed back without a notification, it is leased within
    ORCHY_POLL_RECHECK_SECONDS, far before the poll's own end."""
    name = unique("lost-poll")
    action = f"{name}-a"
    keys = Keys(settings.partitions)
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    queue = keys.queue(keys.partition_of(flow_id), action)
    [entry] = await redis_client.lrange(queue, 0, -1)
    assert await redis_client.lrem(queue, 1, entry) == 1
    poll_seconds = 20

    with serving(shipped_rechecks(settings)) as quiet:
        engine = quiet.app.state.engine
        recheck_ms = quiet.app.state.settings.poll_recheck_seconds * MS_PER_SECOND
        await subscribed(quiet)
        async with api_of(quiet) as on_quiet:
            polling = asyncio.create_task(on_quiet.poll([action], most=1, wait=poll_seconds))

            async def looked_everywhere() -> bool:
                assert not polling.done(), polling
                return not engine.wakeups.full_scan_due([action], recheck_ms / MS_PER_SECOND)

            await wait_until(looked_everywhere, what="the long poll's first look")
            pushed_at = await redis_now_ms(redis_client)
            await redis_client.rpush(queue, entry)
            [task] = await polling
            assert (await on_quiet.complete(task["taskId"], {})).status_code == 200

    assert task["flowId"] == flow_id
    [leased] = [e for e in await api.history(flow_id) if e["event"] == "RUNNING"]
    assert at_ms(leased) - pushed_at < recheck_ms + RECHECK_SLACK_MS
    assert recheck_ms + RECHECK_SLACK_MS < poll_seconds * MS_PER_SECOND


async def test_a_timer_whose_wake_up_was_lost_fires_within_the_idle_recheck(
    settings: Settings, tmp_path: Path
) -> None:
    """A delay of an hour, whose timer the test then moves to now without the notification
    that tells the sweepers: it fires within ORCHY_TIMER_IDLE_RECHECK_SECONDS. On a Redis of
    its own, so that no other timer due meanwhile makes a sweeper look by chance."""
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start(timeout_seconds=settings.embedded_start_timeout_seconds)
    client = client_for_url(redis.url)
    name = unique("lost-timer")
    try:
        with serving(
            shipped_rechecks(settings).model_copy(update={"redis_url": redis.url})
        ) as quiet:
            recheck_ms = quiet.app.state.settings.timer_idle_recheck_seconds * MS_PER_SECOND
            await subscribed(quiet)
            async with api_of(quiet) as on_quiet:
                await on_quiet.register(workflow(name, system(1, "delay", delaySeconds=3600)))
                flow_id = await on_quiet.start(name)
                timers = timers_key(settings, flow_id)
                member = f"fire|{flow_id}|1|1"
                assert await client.zscore(timers, member) is not None

                moved_at = await redis_now_ms(client)
                assert await client.zadd(timers, {member: moved_at}, xx=True, ch=True) == 1
                flow = await on_quiet.wait_status(flow_id, "COMPLETED")
                entries = await on_quiet.history(flow_id)
    finally:
        await client.aclose()
        redis.stop()

    assert flow["actions"]["1"]["status"] == "COMPLETED"
    [fired] = [e for e in entries if e["event"] == "COMPLETED"]
    assert at_ms(fired) - moved_at < recheck_ms + RECHECK_SLACK_MS
