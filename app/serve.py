"""``orchy serve``: the server process around uvicorn.

It binds its port before anything else starts, so that a port in use ends the command at
once with one line and nothing left running (uvicorn would start the application first:
the embedded Redis and the script processes). When it stops, it first ends the long polls
in flight, so that connected workers never hold a stop for the rest of their poll's wait.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from app.http_protocol import OneWriteHttpToolsProtocol
from app.settings import LogFormat, Settings
from app.store.embedded import DataDirInUse, check_folder_free, data_dir_path

APP_PATH = "app.main:app"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's; see metrics_folder
log = logging.getLogger("orchy.serve")


class ServeError(Exception):
    """The server cannot start; the message is the one line the command prints."""


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's bound socket, or ServeError naming the address and the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = (error.strerror or str(error)).lower()
        raise ServeError(
            f"cannot listen on {host}:{port}: {reason} (choose another with --port or ORCHY_PORT)"
        ) from None
    sock.set_inheritable(True)  # for the worker processes of --workers
    return sock


def log_config(log_format: LogFormat = LogFormat.TEXT) -> dict[str, Any]:
    """uvicorn's logging, with Orchy's own loggers (``orchy.*``) on the same stream; every
    line a JSON object with ``LogFormat.JSON``."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["orchy"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    if log_format is LogFormat.JSON:
        json_lines = {"()": "app.telemetry.json_logs.JsonFormatter"}
        config["formatters"] = {"default": json_lines, "access": json_lines}
    return config


@contextlib.contextmanager
def metrics_folder(workers: int) -> Iterator[None]:
    """With several server processes, a folder where each keeps its metrics, so that any of
    them answers ``/metrics`` for all (prometheus-client's multiprocess mode; the processes
    read ``PROMETHEUS_MULTIPROC_DIR`` when they start). One given in the environment is
    used as it is."""
    if workers <= 1 or os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="orchy-metrics-") as folder:
        os.environ[MULTIPROCESS_DIR] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def _orchy_app(app: Any) -> Any:
    """The Orchy application inside uvicorn's middleware wrappers (each keeps ``app``)."""
    while app is not None and not hasattr(app, "stop_polls"):
        app = getattr(app, "app", None)
    return app


class OrchyServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("listening on http://%s:%d", self.config.host, self.config.port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = _orchy_app(self.config.loaded_app)
        if app is not None:
            app.stop_polls()
        await super().shutdown(sockets)


def run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Runs the server until SIGINT/SIGTERM; ServeError if it cannot start."""
    if workers > 1 and not settings.redis_url:
        raise ServeError(
            "--workers above 1 needs REDIS_URL: the embedded Redis belongs to one process"
        )
    if not settings.redis_url:
        try:
            check_folder_free(data_dir_path(settings.data_dir))
        except DataDirInUse as error:
            raise ServeError(str(error)) from None
    sock = listen_socket(host, port)
    config = uvicorn.Config(
        APP_PATH,
        host=host,
        port=port,
        workers=workers,
        http=OneWriteHttpToolsProtocol,
        log_config=log_config(settings.log_format),
        log_level="info",
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    if workers > 1:
        log.info("listening on http://%s:%d with %d server processes", host, port, workers)
        with metrics_folder(workers):
            Multiprocess(config, sockets=[sock]).run()
        return
    server = OrchyServer(config)
    server.run(sockets=[sock])
    if not server.started:
        raise ServeError("the server did not start (see the lines above)")
