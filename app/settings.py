"""Every tunable number of the server and the worker, read from ``ORCHY_*`` variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHY_", extra="ignore")

    # Where state lives. Empty: an embedded Redis keeping its files in ``data_dir``.
    redis_url: str = Field(
        default="", validation_alias=AliasChoices("ORCHY_REDIS_URL", "REDIS_URL")
    )
    data_dir: str = ".orchy-data"
    # A Redis call that takes longer fails (the request answers 503) instead of hanging.
    redis_timeout_seconds: float = 5.0
    embedded_start_timeout_seconds: float = 10.0
    # The embedded redis-server's malloc: "auto" (jemalloc when the system has it, else
    # libc's), "libc", or the path of a malloc library to preload. See store/embedded.py.
    embedded_allocator: str = "auto"

    health_timeout_seconds: float = 1.0

    host: str = "127.0.0.1"
    access_log: bool = False
    port: int = 8080

    # Runs are spread over this many Redis hash tags; fixed for the life of a database.
    partitions: int = 16

    # Timers (delays, wait timeouts, retry back-off, lease expiry, queued steps).
    timer_interval_seconds: float = 0.02
    timer_batch: int = 200
    timer_claim_seconds: float = 10.0
    # Safety net: a partition is swept at least this often even with no notification.
    timer_idle_recheck_seconds: float = 1.0
    timer_concurrency: int = 64
    notifier_reconnect_seconds: float = 0.5

    # Task polling.
    poll_max_wait_seconds: float = 30.0
    poll_max_tasks: int = 500
    poll_recheck_seconds: float = 1.0

    # Defaults for user actions that have no definition.
    default_retry_count: int = 3
    default_retry_after_seconds: float = 1.0
    default_retry_policy: str = "EXPONENTIAL"
    default_timeout_seconds: float = 60.0
    action_cache_seconds: float = 1.0
    # Runs whose next task a worker took at once are kept in memory as of that transition,
    # so that the next result plans without reading the run again; 0 turns this off.
    run_cache_size: int = 4096

    # JavaScript system action.
    js_timeout_seconds: float = 1.0
    js_max_memory_bytes: int = 64 * 1024 * 1024
    # Scripts run in this many child processes (killed on timeout, capped in memory); the
    # engine keeps as many threads to wait on them.
    js_processes: int = 4
    js_threads: int = 4

    # GET /flow with a status filter looks at this many newest runs.
    list_scan_max: int = 10_000

    # Limits on what clients send.
    max_output_bytes: int = 1024 * 1024
    max_event_bytes: int = 1024 * 1024
    max_batch_bytes: int = 16 * 1024 * 1024
    max_starts_per_request: int = 1000

    # Finished runs (and their history) expire after this long.
    retention_seconds: int = 7 * 24 * 3600

    # Worker library.
    worker_server_url: str = "http://127.0.0.1:8080"
    # Tasks one worker process holds at once. Each step of a chain costs a round trip, so
    # a worker moves at most this many tasks per round trip; more slots also put more
    # results in each request.
    worker_concurrency: int = 16
    worker_poll_wait_seconds: float = 10.0
    worker_heartbeat_seconds: float = 10.0
    worker_http_retries: int = 5
    worker_http_backoff_seconds: float = 0.2
    worker_http_timeout_seconds: float = 10.0
    worker_shutdown_grace_seconds: float = 30.0
    # Offer each result's slot to the tasks it starts, leased in the answer to the result.
    worker_take_next: bool = True


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
