"""The README's "User actions, workers and retries", held to its word over HTTP: the default
retry settings of a server as shipped, each retry policy's back-off as the run's history
records it, a heartbeat's lease extension, and the worker library's heartbeat interval.

Back-offs are read from the history: the time between a failed attempt (``RETRY_SCHEDULED``)
and the next attempt going back on its queue (``QUEUED``), both written with Redis's clock.
A timer never fires early, so each gap is at least its policy's delay; the upper bound only
says that it fired (a sweeper fires a due timer within milliseconds; the bound allows a
loaded machine a second more)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from typing import Any

import httpx
import pytest

from app.settings import Settings
from orchy import Worker
from tests.helpers.definitions import set_action, user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.readme import (
    MS_PER_SECOND,
    at_ms,
    readme_defaults,
    redis_now_ms,
    timers_key,
)
from tests.helpers.waiting import unique, wait_until
from tests.helpers.worker_wire import running

# A due timer fires within milliseconds; this is what a loaded machine may add.
FIRE_SLACK_MS = 1000


@pytest.fixture(scope="module")
def defaults_server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    """A server with the user action defaults it ships with."""
    with serving(readme_defaults(settings)) as thread:
        yield thread


@pytest.fixture
async def defaults_api(defaults_server: ServerThread) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=defaults_server.url, timeout=30) as client:
        yield Api(client)


async def fail_every_attempt(api: Api, action: str, attempts: int) -> str:
    """Starts a run of one ``action`` and fails each of its ``attempts``; returns the run."""
    name = unique("retries")
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    for attempt in range(1, attempts + 1):
        task = await api.poll_one(action, wait=15)
        assert task["attempt"] == attempt
        assert (await api.fail(task["taskId"], f"attempt {attempt}")).status_code == 200
    return flow_id


async def back_offs(http: httpx.AsyncClient, flow_id: str) -> list[tuple[int, int]]:
    """(delay the server scheduled, time until the attempt was queued again), in ms, of
    each retry of the run's action 1."""
    entries = await Api(http).history(flow_id)
    scheduled = {e["attempt"]: e for e in entries if e["event"] == "RETRY_SCHEDULED"}
    requeued = {e["attempt"]: e for e in entries if e["event"] == "QUEUED" and "attempt" in e}
    assert sorted(scheduled) == sorted(requeued), entries
    return [
        (scheduled[attempt]["delayMs"], at_ms(requeued[attempt]) - at_ms(scheduled[attempt]))
        for attempt in sorted(scheduled)
    ]


def assert_back_offs(observed: list[tuple[int, int]], expected_seconds: list[float]) -> None:
    expected = [round(seconds * MS_PER_SECOND) for seconds in expected_seconds]
    assert [delay for delay, _ in observed] == expected
    for (_, gap), delay in zip(observed, expected, strict=True):
        assert delay <= gap < delay + FIRE_SLACK_MS, (observed, expected)


async def test_a_server_as_shipped_gives_actions_the_readme_defaults(defaults_api: Api) -> None:
    response = await defaults_api.http.get(f"/metadata/action/{unique('never-defined')}")

    assert response.status_code == 200, response.text
    defaults = response.json()
    del defaults["name"]
    assert defaults == {
        "retryCount": 3,
        "retryAfterSeconds": 1.0,
        "retryPolicy": "EXPONENTIAL",
        "timeoutSeconds": 60.0,
        "pollTimeoutSeconds": None,
    }


async def test_default_retries_back_off_by_policy_with_fields_left_out(defaults_api: Api) -> None:
    """No definition: EXPONENTIAL 1 s, 2 s, 4 s, then the 4th failure fails the run. A
    definition naming only its policy keeps the other defaults: LINEAR 1 s, 2 s, 3 s; FIXED
    1 s each. The three runs go on together."""
    http = defaults_api.http
    exponential = unique("exp-default")
    linear = unique("linear-default")
    fixed = unique("fixed-default")
    await set_action(http, linear, retryPolicy="LINEAR")
    await set_action(http, fixed, retryPolicy="FIXED")

    flow_ids = await asyncio.gather(
        *(fail_every_attempt(defaults_api, action, 4) for action in (exponential, linear, fixed))
    )

    for flow_id in flow_ids:
        flow = await defaults_api.wait_status(flow_id, "FAILED")
        assert "after 4 attempt(s)" in flow["reason"], flow["reason"]
        assert flow["actions"]["1"]["attempts"] == 4
    assert await defaults_api.poll([exponential, linear, fixed], wait=0) == []
    expected = {exponential: [1, 2, 4], linear: [1, 2, 3], fixed: [1, 1, 1]}
    for flow_id, action in zip(flow_ids, (exponential, linear, fixed), strict=True):
        assert_back_offs(await back_offs(http, flow_id), expected[action])


async def test_set_retries_back_off_by_policy(api: Api) -> None:
    """``retryCount`` 4 and ``retryAfterSeconds`` 0.4: EXPONENTIAL doubles (0.4 to 3.2 s),
    LINEAR adds (0.4 to 1.6 s), FIXED repeats 0.4 s; a 5th failure fails the run."""
    http = api.http
    actions = {policy: unique(f"{policy.lower()}-set") for policy in ("EXPONENTIAL", "LINEAR")}
    actions["FIXED"] = unique("fixed-set")
    for policy, action in actions.items():
        await set_action(http, action, retryCount=4, retryAfterSeconds=0.4, retryPolicy=policy)

    flow_ids = await asyncio.gather(
        *(fail_every_attempt(api, action, 5) for action in actions.values())
    )

    expected = {
        "EXPONENTIAL": [0.4, 0.8, 1.6, 3.2],
        "LINEAR": [0.4, 0.8, 1.2, 1.6],
        "FIXED": [0.4, 0.4, 0.4, 0.4],
    }
    for flow_id, policy in zip(flow_ids, actions, strict=True):
        flow = await api.wait_status(flow_id, "FAILED")
        assert "after 5 attempt(s)" in flow["reason"], flow["reason"]
        assert_back_offs(await back_offs(http, flow_id), expected[policy])


# -- heartbeats ---------------------------------------------------------------------------


async def lease_due_ms(redis_client: Any, settings: Settings, task: dict[str, Any]) -> int | None:
    """When the lease of ``task`` ends (Redis clock, ms), or None when it has none."""
    flow_id, seq, attempt, _ = str(task["taskId"]).split(".")
    member = f"lease|{flow_id}|{seq}|{attempt}"
    score = await redis_client.zscore(timers_key(settings, flow_id), member)
    return None if score is None else int(score)


async def test_a_heartbeat_extends_the_lease_by_the_actions_timeout(
    api: Api, redis_client: Any, settings: Settings
) -> None:
    """The lease then ends ``timeoutSeconds`` after the heartbeat: the attempt is retried once
    that time passes with no more heartbeats."""
    name = unique("heartbeat-extends")
    action = f"{name}-a"
    timeout_ms = 1500
    await set_action(
        api.http, action, timeoutSeconds=timeout_ms / MS_PER_SECOND, retryAfterSeconds=0
    )
    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    task = await api.poll_one(action)

    before = await redis_now_ms(redis_client)
    assert (await api.http.post(f"/tasks/{task['taskId']}/heartbeat")).status_code == 200
    after = await redis_now_ms(redis_client)

    due = await lease_due_ms(redis_client, settings, task)
    assert due is not None
    assert before + timeout_ms <= due <= after + timeout_ms
    retried = await api.poll_one(action, wait=15)
    assert (retried["flowId"], retried["attempt"]) == (flow_id, 2)
    entries = await api.history(flow_id)
    [expired] = [e for e in entries if e["event"] == "RETRY_SCHEDULED"]
    assert at_ms(expired) >= due


async def beat_gaps(
    api: Api,
    server: ServerThread,
    redis_client: Any,
    settings: Settings,
    timeout_seconds: float,
    beats: int,
) -> list[int]:
    """Runs a task of an action with ``timeout_seconds`` in a real worker with ``settings``,
    holding it until the server has seen ``beats`` heartbeats (each moves the lease's end in
    Redis); returns the times between them (ms, sorted). Checks that the attempt kept its
    lease through them and completed."""
    name = unique("worker-beats")
    action = f"{name}-slow"
    worker = Worker(
        server_url=server.url, concurrency=1, worker_id=unique("beating"), settings=settings
    )
    release = threading.Event()

    @worker.action(action, timeout_seconds=timeout_seconds, retry_count=0)
    def hold(input: dict[str, Any]) -> dict[str, Any]:
        release.wait(60)
        return {"held": True}

    await api.register(workflow(name, user(1, action)))
    flow_id = await api.start(name)
    dues: list[int] = []

    async def beats_seen() -> bool:
        assert (await api.flow(flow_id))["actions"]["1"]["attempts"] == 1
        lease = await lease_of_run(redis_client, settings, flow_id)
        if lease is not None and (not dues or lease != dues[-1]):
            dues.append(lease)
        return len(dues) > beats

    async with running(worker):
        try:
            await wait_until(beats_seen, timeout=30, what=f"{beats} heartbeats")
        finally:
            release.set()
        flow = await api.wait_status(flow_id, "COMPLETED")

    assert flow["actions"]["1"]["attempts"] == 1
    assert flow["actions"]["1"]["output"] == {"held": True}
    return sorted(later - earlier for earlier, later in pairwise(dues))


async def test_the_worker_beats_every_third_of_a_short_timeout(
    api: Api, server: ServerThread, redis_client: Any, settings: Settings
) -> None:
    """``timeout_seconds`` 3 with the default interval (10 s): the worker beats every 1 s, so
    a task held past its lease keeps it."""
    timeout_seconds = 3.0
    default = Settings.model_fields["worker_heartbeat_seconds"].default
    assert default > timeout_seconds
    worker_settings = settings.model_copy(update={"worker_heartbeat_seconds": default})

    gaps = await beat_gaps(api, server, redis_client, worker_settings, timeout_seconds, 5)

    # Held past the end of its first lease: without the heartbeats it would have been retried.
    assert sum(gaps) >= timeout_seconds * MS_PER_SECOND
    third_ms = timeout_seconds / 3 * MS_PER_SECOND
    assert gaps[0] >= 0.9 * third_ms, gaps
    assert gaps[len(gaps) // 2] <= 1.4 * third_ms, gaps


async def test_the_worker_beats_every_interval_when_that_is_shorter(
    api: Api, server: ServerThread, redis_client: Any, settings: Settings
) -> None:
    """``ORCHY_WORKER_HEARTBEAT_SECONDS`` 0.5 and ``timeout_seconds`` 30: every 0.5 s."""
    interval_ms = 500
    worker_settings = settings.model_copy(
        update={"worker_heartbeat_seconds": interval_ms / MS_PER_SECOND}
    )

    gaps = await beat_gaps(api, server, redis_client, worker_settings, 30.0, 5)

    assert gaps[0] >= 0.9 * interval_ms, gaps
    assert gaps[len(gaps) // 2] <= 1.4 * interval_ms, gaps


async def lease_of_run(redis_client: Any, settings: Settings, flow_id: str) -> int | None:
    """The end of the lease of the run's first attempt of action 1, if leased."""
    score = await redis_client.zscore(timers_key(settings, flow_id), f"lease|{flow_id}|1|1")
    return None if score is None else int(score)
