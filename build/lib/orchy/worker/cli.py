"""``orchy worker TARGET``, free of any CLI framework: ``app/cli.py`` parses the options."""

from __future__ import annotations

import logging
import os
import sys

from orchy.credentials import Credentials
from orchy.worker.loader import load_worker

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CHATTY_LOGGERS = ("aiohttp.access", "aiohttp.client")


def run_worker_command(
    target: str,
    server_url: str | None,
    concurrency: int | None,
    credentials: Credentials | None = None,
) -> None:
    """Load the Worker named by ``target`` and run it until SIGINT/SIGTERM; the fields of
    ``credentials`` that are set win over the worker's own.

    Exits with a one-line message (``SystemExit``) when the target or an option is wrong.
    """
    # Console scripts do not put the current folder on sys.path; ``module:attr`` targets
    # are written relative to it, as with ``python -m``.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
        # A line per poll would drown the worker's own log.
        for noisy in _CHATTY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        worker = load_worker(target)
        if server_url is not None:
            worker.server_url = server_url
        if concurrency is not None:
            worker.concurrency = concurrency
        if credentials is not None:
            worker.credentials = credentials.over(worker.credentials)
            worker.credentials.over(worker.settings.credentials).ssl_context()
    except ValueError as exc:
        raise SystemExit(f"orchy worker: {exc}") from None
    worker.run_sync()
