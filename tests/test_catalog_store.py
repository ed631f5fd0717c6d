"""The catalog over a real Redis (no server): registering workflows, their versions and
caches, and user action settings with their cache."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import orjson
import pytest
import redis.exceptions

from app.definition import DefinitionError
from app.engine.catalog import Catalog, Registration, canonical_json
from app.engine.retry import ActionSettings, RetryPolicy
from app.settings import Settings
from app.store import Store
from app.store.connection import client_for_url
from tests.helpers.http import free_port
from tests.helpers.waiting import unique, wait_until

FOR_GOOD = 3600.0


def definition(name: str, *user_actions: str, with_delay: bool = False) -> dict[str, Any]:
    actions: list[dict[str, Any]] = [
        {"id": index, "type": "user", "name": action, "next": {"default": [index + 1]}}
        for index, action in enumerate(user_actions, start=1)
    ]
    actions[-1].pop("next")
    if with_delay:
        actions[-1]["next"] = {"default": [99]}
        actions.append({"id": 99, "type": "system", "name": "delay", "delaySeconds": 1})
    return {"name": name, "rootAction": 1, "actions": actions}


class CountingStore(Store):
    """The real store, counting its reads of action settings."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings.partitions, settings.retention_seconds)
        self.action_reads = 0

    async def action_source(self, name: str) -> str | None:
        self.action_reads += 1
        return await super().action_source(name)


def catalog(store: Store, settings: Settings, **changes: Any) -> Catalog:
    return Catalog(store, settings.model_copy(update=changes))


async def test_a_new_definition_is_version_one_and_is_read_back(
    store: Store, settings: Settings
) -> None:
    name = unique("wf")
    raw = definition(name, "b-send", "a-charge", "b-send", with_delay=True)
    catalog_ = catalog(store, settings)

    registration = await catalog_.register_workflow(raw)

    assert registration == Registration(name, 1, True)
    workflow = await catalog_.workflow(name)
    assert workflow is not None
    assert (workflow.name, workflow.version, workflow.source) == (name, 1, raw)
    assert await catalog_.workflow(name, 1) is workflow
    assert await catalog_.latest_version(name) == 1
    assert name in await catalog_.workflow_names()
    assert await store.workflow_source(name, 1) == (1, canonical_json(raw))
    queues = {queue.name for queue in await store.workload.queues(0, 0)}
    assert {"a-charge", "b-send"} <= queues
    assert "delay" not in queues


async def test_the_same_definition_again_is_the_same_version(
    store: Store, settings: Settings
) -> None:
    name = unique("wf")
    catalog_ = catalog(store, settings)
    await catalog_.register_workflow(definition(name, "a"))

    again = await catalog_.register_workflow(dict(reversed(definition(name, "a").items())))
    changed = await catalog_.register_workflow(definition(name, "a", "b"))

    assert again == Registration(name, 1, False)
    assert changed == Registration(name, 2, True)
    latest = await catalog_.workflow(name)
    assert latest is not None
    assert (latest.version, len(latest.actions)) == (2, 2)
    first = await catalog_.workflow(name, 1)
    assert first is not None
    assert (first.version, len(first.actions)) == (1, 1)


async def test_a_definition_is_checked_within_the_limits(store: Store, settings: Settings) -> None:
    name = unique("wf")
    catalog_ = catalog(store, settings, max_actions=2)

    with pytest.raises(DefinitionError) as caught:
        await catalog_.register_workflow(definition(name, "a", "b", "c"))

    assert str(caught.value) == "actions: at most 2 actions (ORCHY_MAX_ACTIONS), not 3"
    assert await catalog_.workflow(name) is None
    assert await catalog_.latest_version(name) == 0


async def test_another_catalog_reads_the_stored_definition_and_caches_it(
    store: Store, settings: Settings
) -> None:
    name = unique("wf")
    raw = definition(name, "a", "b")
    await catalog(store, settings).register_workflow(raw)
    await catalog(store, settings).register_workflow(definition(name, "a"))
    reader = catalog(store, settings)

    first = await reader.workflow(name, 1)
    latest = await reader.workflow(name)

    assert first is not None
    assert latest is not None
    assert (first.name, first.version, first.source, len(first.actions)) == (name, 1, raw, 2)
    assert (latest.version, len(latest.actions)) == (2, 1)
    assert await reader.workflow(name, 1) is first
    assert await reader.workflow(name) is latest
    assert await reader.workflow(name, 2) is latest


async def test_unknown_workflows_and_versions_are_none(store: Store, settings: Settings) -> None:
    name = unique("wf")
    catalog_ = catalog(store, settings)

    assert await catalog_.workflow(name) is None
    assert await catalog_.workflow(name, 1) is None
    await catalog_.register_workflow(definition(name, "a"))
    assert await catalog_.workflow(name, 2) is None
    assert await catalog(store, settings).workflow(name, 2) is None


async def test_an_action_never_defined_has_the_default_settings(
    store: Store, settings: Settings
) -> None:
    name = unique("action")

    action = await catalog(store, settings).action(name)

    assert action == ActionSettings.defaults(name, settings)


async def test_defined_settings_are_stored_and_read_back(store: Store, settings: Settings) -> None:
    name = unique("action")
    action = ActionSettings(name, 5, 0.5, RetryPolicy.LINEAR, 9.0, 3.0)

    await catalog(store, settings).put_action(action)

    assert await catalog(store, settings).action(name) == action
    stored = await store.action_source(name)
    assert stored is not None
    assert orjson.loads(stored)["retryPolicy"] == "LINEAR"
    assert stored == canonical_json(orjson.loads(stored))


async def test_settings_beyond_the_limits_are_refused_and_not_stored(
    store: Store, settings: Settings
) -> None:
    name = unique("action")
    catalog_ = catalog(store, settings, max_retry_count=4)

    with pytest.raises(DefinitionError):
        await catalog_.put_action(ActionSettings(name, 5, 0.5, RetryPolicy.LINEAR, 9.0))

    assert await store.action_source(name) is None
    assert await catalog_.action(name) == ActionSettings.defaults(name, catalog_.settings)


async def test_settings_are_cached_for_the_action_cache_time(
    store: Store, settings: Settings
) -> None:
    name = unique("action")
    writer = catalog(store, settings)
    cached = catalog(store, settings, action_cache_seconds=FOR_GOOD)
    uncached = catalog(store, settings, action_cache_seconds=0)
    first = ActionSettings(name, 1, 1.0, RetryPolicy.FIXED, 1.0)
    second = ActionSettings(name, 2, 2.0, RetryPolicy.FIXED, 2.0)

    default = await cached.action(name)
    await uncached.action(name)
    await writer.put_action(first)

    assert default == ActionSettings.defaults(name, cached.settings)
    assert await cached.action(name) == default
    assert await uncached.action(name) == first
    await cached.put_action(second)  # a catalog sees its own changes at once
    assert await cached.action(name) == second
    assert await writer.action(name) == first  # its own cached copy
    assert await uncached.action(name) == second


async def test_every_defined_action_is_listed_by_name(store: Store, settings: Settings) -> None:
    prefix = unique("list")
    catalog_ = catalog(store, settings)
    second = ActionSettings(f"{prefix}-b", 2, 2.0, RetryPolicy.FIXED, 2.0)
    first = ActionSettings(f"{prefix}-a", 1, 1.0, RetryPolicy.LINEAR, 1.0, 7.0)
    await catalog_.put_action(second)
    await catalog_.put_action(first)

    listed = [action for action in await catalog_.actions() if action.name.startswith(prefix)]

    assert listed == [first, second]


async def test_requests_for_settings_out_of_date_share_one_read(
    redis_client: Any, settings: Settings
) -> None:
    counting = CountingStore(redis_client, settings)
    name = unique("action")
    defined = ActionSettings(name, 2, 2.0, RetryPolicy.FIXED, 2.0)
    await catalog(counting, settings).put_action(defined)
    reader = catalog(counting, settings, action_cache_seconds=0)

    together = await asyncio.gather(*(reader.action(name) for _ in range(3)))
    later = await reader.action(name)

    assert together == [defined] * 3
    assert later == defined
    assert counting.action_reads == 2


async def test_a_request_that_gives_up_leaves_the_shared_read_to_the_others(
    redis_client: Any, settings: Settings
) -> None:
    counting = CountingStore(redis_client, settings)
    name = unique("action")
    reader = catalog(counting, settings, action_cache_seconds=0)
    leaving = asyncio.ensure_future(reader.action(name))
    staying = asyncio.ensure_future(reader.action(name))
    await asyncio.sleep(0)  # both are waiting for the one read

    leaving.cancel()

    assert await staying == ActionSettings.defaults(name, reader.settings)
    assert leaving.cancelled()
    assert counting.action_reads == 1


async def test_a_failed_read_fails_every_request_sharing_it_and_the_next_reads_again(
    settings: Settings,
) -> None:
    away = client_for_url(f"redis://127.0.0.1:{free_port()}", timeout_seconds=5)
    counting = CountingStore(away, settings)
    reader = catalog(counting, settings)
    try:
        together = await asyncio.gather(
            reader.action("a"), reader.action("a"), return_exceptions=True
        )
        with pytest.raises(redis.exceptions.ConnectionError):
            await reader.action("a")
    finally:
        await away.aclose()

    assert [type(outcome) for outcome in together] == [redis.exceptions.ConnectionError] * 2
    assert counting.action_reads == 2


async def test_a_failed_read_nobody_waits_for_any_more_logs_no_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    away = client_for_url(f"redis://127.0.0.1:{free_port()}", timeout_seconds=5)
    reader = catalog(CountingStore(away, settings), settings)
    try:
        leaving = asyncio.ensure_future(reader.action("a"))
        await asyncio.sleep(0)  # the read has started
        leaving.cancel()

        async def read_over() -> bool:
            return "a" not in reader._reading

        await wait_until(read_over, what="the read to fail")
    finally:
        await away.aclose()
    del leaving
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()

    assert [record.getMessage() for record in caplog.records if record.name == "asyncio"] == []
