"""The tenants a server serves: per tenant (a namespace of Redis keys) an engine, the sweeper
that fires its timers and the notifier that hears its channel, over the same Redis clients,
scripts and pools as every other tenant.

A tenant's stack starts on first use by one of its principals, and the tenant is recorded in
Redis (``keys.TENANTS``, outside every namespace): every server starts the stacks of every
recorded tenant when it starts, so a tenant's timers fire after a restart before any of its
requests comes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis

from app.engine.background import stop_tasks
from app.engine.engine import Engine
from app.engine.errors import EngineError
from app.engine.notifier import Notifier
from app.engine.pools import Pools
from app.engine.search_prune import SearchPruner
from app.engine.sweeper import Sweeper
from app.engine.wakeups import Wakeups
from app.settings import Settings
from app.store import Store
from app.store.keys import NAMESPACE_RULE, TENANTS, is_namespace

log = logging.getLogger("orchy.tenants")


class TenantRefused(EngineError):
    """A principal's tenant that is not a valid name."""

    status_code = 403


class TenantUnavailable(EngineError):
    """A tenant whose keys cannot be served by this server (its runs are spread over
    another number of partitions)."""

    status_code = 503


@dataclass
class TenantStack:
    namespace: str
    engine: Engine
    sweeper: Sweeper
    notifier: Notifier
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace_seconds: float) -> None:
        await self.sweeper.stop()
        await stop_tasks(self.tasks, grace_seconds)
        self.engine.close()


def check_tenant_name(tenant: str) -> str:
    if not is_namespace(tenant):
        raise TenantRefused(f"tenant {tenant!r} is not a valid tenant name ({NAMESPACE_RULE})")
    return tenant


class Tenants:
    """Every tenant stack of this server; ``settings.namespace`` (ORCHY_NAMESPACE) is the
    namespace of principals without a tenant."""

    def __init__(self, store: Store, pubsub_client: Redis, settings: Settings) -> None:
        if settings.namespace and not is_namespace(settings.namespace):
            raise ValueError(f"ORCHY_NAMESPACE={settings.namespace!r}: {NAMESPACE_RULE}")
        self._root = store
        self._pubsub_client = pubsub_client
        self.settings = settings
        self.default_namespace = settings.namespace
        self.pools = Pools.create(settings)
        self._stacks: dict[str, TenantStack] = {}
        self._opening = asyncio.Lock()
        self._stopped = False

    # -- the stacks -------------------------------------------------------------------

    async def start(self) -> TenantStack:
        """Starts the server's own namespace and every recorded tenant; the own one's stack."""
        await self.pools.warm_up()
        default = await self._open(self.default_namespace)
        for tenant in sorted(await self._root.client.smembers(TENANTS)):
            if is_namespace(tenant) and tenant not in self._stacks:
                await self._open(tenant)
        return default

    @property
    def default(self) -> TenantStack:
        return self._stacks[self.default_namespace]

    def namespace_of(self, tenant: str | None) -> str:
        """The namespace of a principal's tenant (None or "": the server's own)."""
        return check_tenant_name(tenant) if tenant else self.default_namespace

    def running(self, tenant: str | None) -> Engine | None:
        """The engine of ``tenant`` if its stack runs (no Redis call: the worker fast path)."""
        stack = self._stacks.get(self.namespace_of(tenant))
        return None if stack is None else stack.engine

    async def engine_for(self, tenant: str | None) -> Engine:
        """The engine of ``tenant``, its stack started and the tenant recorded on first use."""
        engine = self.running(tenant)
        if engine is not None:
            return engine
        namespace = self.namespace_of(tenant)
        async with self._opening:
            if self._stopped:  # a request that came in as the server stops starts nothing
                raise TenantUnavailable(f"tenant {namespace!r}: the server is stopping")
            stack = self._stacks.get(namespace)
            if stack is None:
                try:
                    store = await self._checked_store(namespace)
                except RuntimeError as error:
                    raise TenantUnavailable(f"tenant {namespace!r}: {error}") from error
                # Recorded before it starts: a stack that runs is one a restart starts again.
                await self._root.client.sadd(TENANTS, namespace)
                stack = self._start_stack(store)
                log.info("tenant %s: started and recorded", namespace)
        return stack.engine

    def namespaces(self) -> list[str]:
        return sorted(self._stacks)

    async def _open(self, namespace: str) -> TenantStack:
        return self._start_stack(await self._checked_store(namespace))

    async def _checked_store(self, namespace: str) -> Store:
        """The store of ``namespace``, its runs spread over this server's partition count."""
        store = self._root.in_namespace(namespace)
        await store.check_partitions()
        return store

    def _start_stack(self, store: Store) -> TenantStack:
        namespace = store.keys.namespace
        wakeups = Wakeups()
        engine = Engine(store, self.settings, wakeups, self.pools)
        sweeper = Sweeper(engine, self.settings)
        notifier = Notifier(
            self._pubsub_client,
            store.keys.notify_channel,
            wakeups,
            sweeper,
            self.settings.notifier_reconnect_seconds,
            engine.telemetry,
        )
        suffix = f"-{namespace}" if namespace else ""
        stack = TenantStack(namespace, engine, sweeper, notifier)
        stack.tasks = [
            asyncio.create_task(sweeper.run(), name=f"orchy-sweeper{suffix}"),
            asyncio.create_task(notifier.run(), name=f"orchy-notifier{suffix}"),
            asyncio.create_task(
                SearchPruner(store, self.settings).run(), name=f"orchy-search-prune{suffix}"
            ),
        ]
        self._stacks[namespace] = stack
        return stack

    # -- stopping ---------------------------------------------------------------------

    def stop_polls(self) -> None:
        """The server is stopping: every tenant's long polls answer now, with no tasks."""
        for stack in self._stacks.values():
            stack.engine.wakeups.close()

    async def stop(self) -> None:
        self._stopped = True
        stacks, self._stacks = list(self._stacks.values()), {}
        grace = self.settings.shutdown_grace_seconds
        try:
            await asyncio.gather(*(stack.stop(grace) for stack in stacks))
        finally:
            self.pools.close()
