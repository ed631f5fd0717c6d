"""Workflow and user action definitions, read through small in-process caches.

A workflow version never changes once stored, so versions are cached for good; action
settings can be changed by any client and are cached for ``action_cache_seconds``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, replace

import orjson

from app.definition import ActionType, ItemBody, WorkflowDef
from app.engine.retry import ActionSettings, RetryPolicy
from app.engine.validate import Limits, check_action_settings, parse_workflow
from app.jsontypes import JSON, JSONObject
from app.settings import Settings
from app.store import Store


@dataclass(frozen=True)
class Registration:
    name: str
    version: int
    created: bool


def canonical_json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class Catalog:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.limits = Limits.of(settings)
        self._workflows: dict[tuple[str, int], WorkflowDef] = {}
        self._actions: dict[str, tuple[float, ActionSettings]] = {}
        self._reading: dict[str, asyncio.Future[ActionSettings]] = {}

    # -- workflows ------------------------------------------------------------------

    async def register_workflow(self, raw: object) -> Registration:
        """Validates and stores ``raw``; raises DefinitionError naming what is wrong."""
        # Off the event loop: checking a script's syntax is a round trip to a script process.
        workflow = await asyncio.get_running_loop().run_in_executor(
            None, parse_workflow, raw, self.limits
        )
        source = canonical_json(raw)
        digest = hashlib.sha256(source.encode()).hexdigest()
        queues = sorted(
            {action.name for action in workflow.actions.values() if action.type is ActionType.USER}
            | {
                action.for_each.body.name
                for action in workflow.actions.values()
                if action.for_each is not None and isinstance(action.for_each.body, ItemBody)
            }
        )
        version, created = await self.store.register_workflow(workflow.name, digest, source, queues)
        self._workflows[(workflow.name, version)] = replace(workflow, version=version)
        return Registration(workflow.name, version, created)

    async def workflow(self, name: str, version: int | None = None) -> WorkflowDef | None:
        if version is None:
            # One small read for the latest version number; the definition is cached.
            version = await self.store.workflow_versions(name) or None
            if version is None:
                return None
        if (name, version) in self._workflows:
            return self._workflows[(name, version)]
        found = await self.store.workflow_source(name, version)
        if found is None:
            return None
        stored_version, source = found
        cached = self._workflows.get((name, stored_version))
        if cached is None:
            parsed = await asyncio.get_running_loop().run_in_executor(
                None, parse_workflow, orjson.loads(source)
            )
            cached = replace(parsed, version=stored_version)
            self._workflows[(name, stored_version)] = cached
        return cached

    async def workflow_names(self) -> list[str]:
        return await self.store.workflow_names()

    async def latest_version(self, name: str) -> int:
        return await self.store.workflow_versions(name)

    # -- user actions ---------------------------------------------------------------

    async def put_action(self, action: ActionSettings) -> None:
        """Stores ``action``; raises DefinitionError when it is beyond the limits."""
        check_action_settings(action, self.limits)
        await self.store.put_action(action.name, canonical_json(action_to_json(action)))
        self._actions[action.name] = (time.monotonic(), action)

    async def action(self, name: str) -> ActionSettings:
        cached = self._actions.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.settings.action_cache_seconds:
            return cached[1]
        # The requests that find the copy out of date together wait for one read of it,
        # rather than each sending its own.
        reading = self._reading.get(name)
        if reading is None:
            reading = asyncio.ensure_future(self._read_action(name))
            self._reading[name] = reading
            reading.add_done_callback(lambda _: self._read_done(name))
        return await asyncio.shield(reading)

    def _read_done(self, name: str) -> None:
        reading = self._reading.pop(name)
        if not reading.cancelled():
            reading.exception()  # its waiters were told; none may be left to hear it

    async def _read_action(self, name: str) -> ActionSettings:
        source = await self.store.action_source(name)
        action = (
            ActionSettings.defaults(name, self.settings)
            if source is None
            else action_from_json(orjson.loads(source))
        )
        self._actions[name] = (time.monotonic(), action)
        return action

    async def actions(self) -> list[ActionSettings]:
        sources = await self.store.action_sources()
        return [action_from_json(orjson.loads(source)) for _, source in sorted(sources.items())]


def action_to_json(action: ActionSettings) -> JSONObject:
    return {
        "name": action.name,
        "retryCount": action.retry_count,
        "retryAfterSeconds": action.retry_after_seconds,
        "retryPolicy": action.retry_policy.value,
        "timeoutSeconds": action.timeout_seconds,
        "pollTimeoutSeconds": action.poll_timeout_seconds,
    }


def action_from_json(data: JSONObject) -> ActionSettings:
    return ActionSettings(
        name=data["name"],
        retry_count=int(data["retryCount"]),
        retry_after_seconds=float(data["retryAfterSeconds"]),
        retry_policy=RetryPolicy(data["retryPolicy"]),
        timeout_seconds=float(data["timeoutSeconds"]),
        poll_timeout_seconds=_optional_float(data.get("pollTimeoutSeconds")),
    )


def _optional_float(value: JSON) -> float | None:
    return None if value is None else float(value)
