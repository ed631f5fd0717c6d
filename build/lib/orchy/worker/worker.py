"""The public ``Worker``: declare actions with a decorator, then ``run`` it."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from orchy.credentials import Credentials
from orchy.worker.client import OrchyClient
from orchy.worker.registry import ActionOptions, ActionRegistry, F, RetryPolicy
from orchy.worker.runner import RunConfig, WorkerRun
from orchy.worker.settings import WorkerSettings, get_worker_settings
from orchy.worker.threads import DaemonThreadPool

logger = logging.getLogger("orchy.worker")

_WORKER_ID_RANDOM_BYTES = 3
"""Tells apart two workers started with the same pid on one host (containers)."""

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_URL_SCHEMES = ("http", "https")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(_WORKER_ID_RANDOM_BYTES)}"


class Worker:
    """Runs Python functions as Orchy user actions, polling the server over HTTP.

    ``server_url`` and ``concurrency`` default to the ``ORCHY_WORKER_*`` settings, read when
    :meth:`run` starts; both may be changed until then (the CLI does). ``token`` (sent as
    ``Authorization: Bearer`` with every request), ``ca_bundle``, ``client_cert`` and
    ``client_key`` default to ``ORCHY_TOKEN``, ``ORCHY_CA_BUNDLE``, ``ORCHY_CLIENT_CERT`` and
    ``ORCHY_CLIENT_KEY``; ``credentials`` holds those given here.
    """

    def __init__(
        self,
        server_url: str | None = None,
        concurrency: int | None = None,
        worker_id: str | None = None,
        *,
        token: str | None = None,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.server_url = server_url
        self.credentials = Credentials(token, ca_bundle, client_cert, client_key)
        self.concurrency = concurrency
        self.worker_id = worker_id or default_worker_id()
        self._settings = settings
        self._registry = ActionRegistry()
        self._running = False

    @property
    def concurrency(self) -> int | None:
        """How many tasks this worker runs at once (None: the settings' default)."""
        return self._concurrency

    @concurrency.setter
    def concurrency(self, value: int | None) -> None:
        if value is not None:
            _check_concurrency(value)
        self._concurrency = value

    @property
    def settings(self) -> WorkerSettings:
        """The worker's settings: those it was given, else the ``ORCHY_*`` environment's."""
        return self._settings if self._settings is not None else get_worker_settings()

    @property
    def registry(self) -> ActionRegistry:
        """The actions registered with ``action``, by name."""
        return self._registry

    @property
    def action_names(self) -> list[str]:
        """The names of the actions this worker serves."""
        return self._registry.names

    def action(
        self,
        name: str,
        *,
        retry_count: int | None = None,
        retry_after_seconds: float | None = None,
        retry_policy: RetryPolicy | str | None = None,
        timeout_seconds: float | None = None,
        poll_timeout_seconds: float | None = None,
    ) -> Callable[[F], F]:
        """Serve the decorated function as the user action ``name``.

        The function takes the task's input (the resolved parameters) and returns the
        output; ``async def`` functions run on the event loop, others in a thread. The
        settings given here are sent to the server as the action's definition at start;
        ``poll_timeout_seconds`` fails a queued attempt that no worker takes within it.
        """
        if callable(name):
            raise TypeError('give the action name: @worker.action("name"), not @worker.action')
        options = ActionOptions.build(
            name,
            retry_count=retry_count,
            retry_after_seconds=retry_after_seconds,
            retry_policy=retry_policy,
            timeout_seconds=timeout_seconds,
            poll_timeout_seconds=poll_timeout_seconds,
        )

        def register(func: F) -> F:
            self._registry.add(name, func, options)
            return func

        return register

    async def run(
        self, stop_event: asyncio.Event | None = None, *, handle_signals: bool = True
    ) -> None:
        """Serve until ``stop_event`` is set or SIGINT/SIGTERM arrives, then drain.

        Tasks in hand get ``worker_shutdown_grace_seconds`` to finish and report; a second
        signal abandons them at once. Signal handlers are installed only when
        ``handle_signals`` and running in the main thread.
        """
        if not self._registry:
            raise ValueError('this worker has no actions: declare them with @worker.action("name")')
        if self._running:
            raise RuntimeError("this worker is already running")
        settings = self.settings
        concurrency = (
            self.concurrency if self.concurrency is not None else settings.worker_concurrency
        )
        _check_concurrency(concurrency)
        server_url = self.server_url or settings.worker_server_url
        _check_server_url(server_url)
        credentials = self.credentials.over(settings.credentials)
        ssl_context = credentials.ssl_context()
        config = RunConfig(
            worker_id=self.worker_id,
            concurrency=concurrency,
            poll_wait_seconds=settings.worker_poll_wait_seconds,
            poll_max_tasks=settings.poll_max_tasks,
            heartbeat_seconds=settings.worker_heartbeat_seconds,
            backoff_seconds=settings.worker_http_backoff_seconds,
            max_backoff_doublings=settings.worker_http_retries,
            shutdown_grace_seconds=settings.worker_shutdown_grace_seconds,
            take_next=settings.worker_take_next,
        )
        stop, force = asyncio.Event(), asyncio.Event()
        relay = asyncio.create_task(_relay(stop_event, stop)) if stop_event is not None else None
        loop = asyncio.get_running_loop()
        replaced = _install_signal_handlers(loop, stop, force) if handle_signals else {}
        pool = DaemonThreadPool(concurrency, name="orchy-worker")
        self._running = True
        logger.info(
            "worker %s serving %s from %s, concurrency %d",
            self.worker_id,
            ", ".join(self._registry.names),
            server_url,
            concurrency,
        )
        try:
            async with OrchyClient(
                server_url,
                timeout_seconds=settings.worker_http_timeout_seconds,
                retries=settings.worker_http_retries,
                backoff_seconds=settings.worker_http_backoff_seconds,
                headers=credentials.headers(),
                ssl_context=ssl_context,
            ) as client:
                run = WorkerRun(self._registry, client, pool, config, stop=stop, force=force)
                await run.serve()
        finally:
            self._running = False
            pool.shutdown()
            _restore_signal_handlers(loop, replaced)
            if relay is not None:
                relay.cancel()
        logger.info("worker %s stopped", self.worker_id)

    def run_sync(self) -> None:
        """Runs until SIGINT/SIGTERM, on uvloop when it is installed (the full install has it
        through uvicorn[standard]; the light one on Linux and macOS), else on asyncio's loop."""
        _run_loop(self.run())


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _check_concurrency(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"concurrency must be an int >= 1, not {value!r}")


def _check_server_url(url: str) -> None:
    try:
        parsed = urlsplit(url)
        scheme = parsed.scheme
        if scheme in _URL_SCHEMES and not parsed.hostname:
            raise ValueError("no host")
    except ValueError as exc:
        raise ValueError(f"invalid server URL {url!r}: {exc}") from None
    if scheme not in _URL_SCHEMES:
        raise ValueError(f"the server URL must start with http:// or https://: {url!r}")


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, force: asyncio.Event
) -> dict[signal.Signals, _SignalHandler]:
    """Route SIGINT/SIGTERM to ``stop`` then ``force``; returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("%s again: abandoning the tasks in hand", sig.name)
            force.set()
        else:
            logger.info("%s: stopping (send it again to abandon the tasks in hand)", sig.name)
            stop.set()

    replaced: dict[signal.Signals, _SignalHandler] = {}
    for sig in _STOP_SIGNALS:
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not on this platform or loop: stopping is left to ``stop_event``.
            continue
        replaced[sig] = previous
    return replaced


def _restore_signal_handlers(
    loop: asyncio.AbstractEventLoop, replaced: dict[signal.Signals, _SignalHandler]
) -> None:
    # ``remove_signal_handler`` resets to the default, not to what the host program had.
    for sig, previous in replaced.items():
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)
