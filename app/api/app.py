"""The ASGI application: routes, error handlers, and the engine's background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import flows, health, metadata, tasks
from app.api.content_type import JSONBodyMiddleware
from app.api.errors import install_error_handlers
from app.api.worker_routes import serve_first
from app.engine.engine import Engine
from app.engine.notifier import Notifier
from app.engine.sweeper import Sweeper
from app.engine.wakeups import Wakeups
from app.settings import Settings, get_settings
from app.store import Store
from app.store.connection import open_connection


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection = open_connection(settings)
        client = connection.client(settings.redis_timeout_seconds)
        pubsub_client = connection.pubsub_client(settings.redis_timeout_seconds)
        store = Store(client, settings.partitions, settings.retention_seconds)
        await store.check_partitions()
        wakeups = Wakeups()
        engine = Engine(store, settings, wakeups)
        await engine.warm_up()
        sweeper = Sweeper(engine, settings)
        notifier = Notifier(
            pubsub_client,
            store.keys.notify_channel,
            wakeups,
            sweeper,
            settings.notifier_reconnect_seconds,
        )
        background = [
            asyncio.create_task(sweeper.run(), name="orchy-sweeper"),
            asyncio.create_task(notifier.run(), name="orchy-notifier"),
        ]
        app.state.settings = settings
        app.state.engine = engine
        app.state.sweeper = sweeper
        app.state.notifier = notifier
        app.state.connection = connection
        try:
            yield
        finally:
            await sweeper.stop()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine.close()
            await client.aclose()
            await pubsub_client.aclose()
            connection.close()

    app = FastAPI(
        title="Orchy for Python",
        version=__version__,
        description="Workflow orchestration over HTTP: JSON DAGs of actions, "
        "HTTP-polling workers, all state in Redis.",
        lifespan=lifespan,
    )
    app.add_middleware(JSONBodyMiddleware)
    install_error_handlers(app)
    # The workers' routes first: they are matched on every poll and result.
    serve_first(app, tasks.router)
    for module in (flows, metadata, health):
        app.include_router(module.router)
    return app
