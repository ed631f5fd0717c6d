"""``orchy serve``: the server process around uvicorn.

It binds its port before anything else starts, so that a port in use ends the command at
once with one line and nothing left running (uvicorn would start the application first:
the embedded Redis and the script processes). When it stops, it first ends the long polls
in flight, so that connected workers never hold a stop for the rest of their poll's wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from app import safe_defaults
from app.http_protocol import OneWriteHttpToolsProtocol
from app.settings import LogFormat, Settings, get_settings
from app.store.connection import RedisUnusable, check_redis_url
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


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options from ``ORCHY_SSL_*`` (none: plain HTTP), checked here so that a
    missing or wrong file ends the command with one line naming it. A CA (``ssl_ca_certs``)
    makes every client show a certificate it signed (mTLS)."""
    certfile, keyfile, ca_certs = settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs
    if not certfile:
        if keyfile or ca_certs:
            raise ServeError("--ssl-keyfile and --ssl-ca-certs need --ssl-certfile")
        return {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile or None)
    except (OSError, ssl.SSLError) as error:
        raise ServeError(f"cannot use --ssl-certfile {certfile}: {_reason(error)}") from None
    options: dict[str, Any] = {"ssl_certfile": certfile, "ssl_keyfile": keyfile or None}
    if ca_certs:
        try:
            context.load_verify_locations(ca_certs)
        except (OSError, ssl.SSLError) as error:
            raise ServeError(f"cannot use --ssl-ca-certs {ca_certs}: {_reason(error)}") from None
        options |= {"ssl_ca_certs": ca_certs, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def _reason(error: OSError | ssl.SSLError) -> str:
    return (error.strerror or str(error)) if isinstance(error, OSError) else str(error)


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


def scheme(config: uvicorn.Config) -> str:
    return "https" if config.ssl_certfile else "http"


def mutual(config: uvicorn.Config) -> str:
    return ", client certificates required" if config.ssl_cert_reqs == ssl.CERT_REQUIRED else ""


class OrchyServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info(
                "listening on %s://%s:%d%s",
                scheme(self.config),
                self.config.host,
                self.config.port,
                mutual(self.config),
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = _orchy_app(self.config.loaded_app)
        if app is not None:
            app.stop_polls()
        await super().shutdown(sockets)


def publish_address(host: str) -> None:
    """The application is imported by uvicorn (in each server process of ``--workers``) and
    reads its settings from the environment: it learns the address it is bound to here, so
    that a server on loopback checks the ``Host`` of its requests (README: Browsers)."""
    os.environ["ORCHY_HOST"] = host
    get_settings.cache_clear()


def run_server(settings: Settings, host: str, port: int, workers: int) -> None:
    """Runs the server until SIGINT/SIGTERM; ServeError if it cannot start."""
    settings = settings.model_copy(update={"host": host, "port": port})
    unsafe = safe_defaults.refusal(settings)
    if unsafe is not None:
        raise ServeError(unsafe)
    if workers > 1 and not settings.redis_url:
        raise ServeError(
            "--workers above 1 needs REDIS_URL: the embedded Redis belongs to one process"
        )
    if not settings.redis_url:
        try:
            check_folder_free(data_dir_path(settings.data_dir))
        except DataDirInUse as error:
            raise ServeError(str(error)) from None
    tls = tls_options(settings)
    sock = listen_socket(host, port)
    if settings.redis_url:
        try:
            asyncio.run(check_redis_url(settings))
        except RedisUnusable as error:
            sock.close()
            raise ServeError(str(error)) from None
    publish_address(host)
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
        **tls,
    )
    open_notice = safe_defaults.notice(settings)  # logged once uvicorn set the logging up
    if open_notice is not None:
        log.warning(open_notice)
    if workers > 1:
        log.info(
            "listening on %s://%s:%d with %d server processes%s",
            scheme(config),
            host,
            port,
            workers,
            mutual(config),
        )
        with metrics_folder(workers):
            Multiprocess(config, sockets=[sock]).run()
        return
    server = OrchyServer(config)
    server.run(sockets=[sock])
    if not server.started:
        raise ServeError("the server did not start (see the lines above)")
