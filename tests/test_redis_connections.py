"""A burst of concurrent requests larger than the server's Redis connections: each waits for
a connection (``ORCHY_REDIS_MAX_CONNECTIONS``) rather than failing with 503."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.settings import Settings
from app.store.connection import client_for_url
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, serving
from tests.helpers.waiting import unique

CONNECTIONS = 4
BURST = 300


async def test_a_burst_of_reads_waits_for_the_few_connections_there_are(
    settings: Settings, redis_client: Any
) -> None:
    few = settings.model_copy(update={"redis_max_connections": CONNECTIONS})
    with serving(few) as server:
        limits = httpx.Limits(max_connections=BURST)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            api = Api(http)
            name = unique("burst")
            await api.register(workflow(name, user(1, f"{name}-task")))
            flow_id = await api.start(name, {})
            answers = await asyncio.gather(*(http.get(f"/flow/{flow_id}") for _ in range(BURST)))
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200] * BURST, {answer.text for answer in answers if answer.is_error}


async def test_a_client_waits_for_a_free_connection_when_all_are_busy(redis_url: str) -> None:
    """More concurrent calls than connections: every call is answered, none is refused with
    redis-py's "Too many connections"."""
    client = client_for_url(redis_url)
    try:
        key = unique("burst-key")
        await client.set(key, "1")
        # BLPOP on a missing key holds a connection for its timeout: the calls overlap.
        holds = [client.blpop([unique("burst-empty")], timeout=0.2) for _ in range(CONNECTIONS)]
        reads = [client.get(key) for _ in range(BURST)]
        answers = await asyncio.gather(*holds, *reads)
        assert answers[CONNECTIONS:] == ["1"] * BURST
        await client.delete(key)
    finally:
        await client.aclose()
