"""The worker library's tunable numbers, read from ``ORCHY_*`` variables.

The server's ``app.settings.Settings`` extends this class, so one ``ORCHY_WORKER_*`` variable
means the same thing to a worker run from the full install and from the light one.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from orchy.credentials import CredentialSettings


class WorkerSettings(CredentialSettings):
    """Settings of a :class:`orchy.Worker` (environment variables ``ORCHY_<FIELD>``); the
    token and TLS files (``ORCHY_TOKEN``, ``ORCHY_CA_BUNDLE``...) are the client's."""

    model_config = SettingsConfigDict(env_prefix="ORCHY_", extra="ignore")

    # The most tasks one poll asks for (and the most the server hands out in one answer).
    poll_max_tasks: int = 500

    worker_server_url: str = "http://127.0.0.1:8080"
    # Tasks one worker process holds at once. Each step of a chain costs a round trip, so
    # a worker moves at most this many tasks per round trip; more slots also put more
    # results in each request.
    worker_concurrency: int = 32
    worker_poll_wait_seconds: float = 10.0
    worker_heartbeat_seconds: float = 10.0
    worker_http_retries: int = 5
    worker_http_backoff_seconds: float = 0.2
    worker_http_timeout_seconds: float = 10.0
    worker_shutdown_grace_seconds: float = 30.0
    # Offer each result's slot to the tasks it starts, leased in the answer to the result.
    worker_take_next: bool = True


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The settings read from the environment once per process."""
    return WorkerSettings()
