"""The ASGI application: routes, error handlers, and the engine's background tasks."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from app import __version__
from app.api import (
    events,
    executions,
    flows,
    health,
    metadata,
    metrics,
    queues,
    tasks,
    workers,
)
from app.api.content_type import JSONBodyMiddleware
from app.api.dashboard import install_dashboard
from app.api.errors import install_error_handlers
from app.api.openapi_docs import install_docs, operation_id
from app.api.security.browsers import BrowserGuard
from app.api.security.guard import install_auth
from app.api.worker_routes import serve_first
from app.engine import run_log
from app.engine.tenants import Tenants
from app.settings import Settings, get_settings
from app.store import Store
from app.store.connection import Connection, check_usable, open_connection, redacted

log = logging.getLogger("orchy.server")
# The data folder's default before it moved to the user's data directory.
LEGACY_DATA_DIR = ".orchy-data"


def log_where_state_lives(connection: Connection) -> None:
    embedded = connection.embedded
    if embedded is None:
        log.info("Redis: %s (REDIS_URL)", redacted(connection.url))
        return
    how = "reusing the one left running" if embedded.adopted else "started"
    log.info(
        "data folder %s (ORCHY_DATA_DIR); embedded Redis %s, pid %s, %s",
        embedded.data_dir,
        embedded.url,
        embedded.pid,
        how,
    )
    legacy = Path(LEGACY_DATA_DIR).resolve()
    if legacy.is_dir() and legacy != embedded.data_dir:
        log.warning(
            "%s holds the data of an earlier default; to use it: ORCHY_DATA_DIR=%s",
            legacy,
            legacy,
        )


class OrchyAPI(FastAPI):
    """FastAPI, with a way for the server to end its long polls when it stops."""

    def stop_polls(self) -> None:
        """The server is stopping: long polls in flight (of every tenant) answer now, with
        no tasks."""
        tenants: Tenants | None = getattr(self.state, "tenants", None)
        if tenants is not None:
            tenants.stop_polls()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What is started is stopped, in reverse order, whether the start got to the end
        # or failed half-way (a start that fails must leave no Redis or script behind).
        run_log.enable(settings.log_runs)
        async with contextlib.AsyncExitStack() as started:
            connection = open_connection(settings)
            started.callback(connection.close)
            log_where_state_lives(connection)
            client = connection.client(
                settings.redis_timeout_seconds, settings.redis_max_connections
            )
            started.push_async_callback(client.aclose)
            pubsub_client = connection.pubsub_client(settings.redis_timeout_seconds)
            started.push_async_callback(pubsub_client.aclose)
            await check_usable(client, connection.url)
            store = Store(client, settings.partitions, settings.retention_seconds)
            tenants = Tenants(store, pubsub_client, settings)
            started.push_async_callback(tenants.stop)
            own = await tenants.start()
            app.state.settings = settings
            app.state.tenants = tenants
            # The server's own namespace (ORCHY_NAMESPACE): principals without a tenant.
            app.state.engine = own.engine
            app.state.sweeper = own.sweeper
            app.state.notifier = own.notifier
            app.state.connection = connection
            # What the start built (modules, routes, models, scripts) lives as long as the
            # process: out of the collector's sight, a full collection under load scans
            # only what requests made since, not the whole application every time.
            gc.collect()
            gc.freeze()
            yield
            log.info("stopping")

    app = OrchyAPI(
        title="Orchy for Python",
        version=__version__,
        description="Workflow orchestration over HTTP: JSON DAGs of actions, "
        "HTTP-polling workers, all state in Redis.",
        lifespan=lifespan,
        # /docs is served from the package's Swagger UI files (install_docs), not a CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.add_middleware(JSONBodyMiddleware, settings=settings)
    install_error_handlers(app)
    # The workers' routes first: they are matched on every poll and result.
    serve_first(app, tasks.router)
    for module in (queues, workers, flows, executions, events, metadata, health, metrics):
        app.include_router(module.router)
    install_docs(app)
    install_dashboard(app)
    # Every route is in place; the authentication middleware goes outside the others.
    install_auth(app, settings)
    # Added last, so outermost: a web page's request is refused before anything reads it
    # (authentication included: a CORS preflight carries no token).
    app.add_middleware(BrowserGuard, settings=settings)
    return app
