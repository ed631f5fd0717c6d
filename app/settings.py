"""Every tunable number of the server, read from ``ORCHY_*`` variables; the worker
library's are in ``orchy/worker/settings.py``, which ``Settings`` extends."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from orchy.worker.settings import WorkerSettings


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def default_data_dir() -> str:
    """``$XDG_DATA_HOME/orchy``, else ``~/.local/share/orchy``: the same folder whatever
    the directory the server is started from."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "orchy")


class Settings(WorkerSettings):
    """The server's settings, and the worker library's (inherited)."""

    model_config = SettingsConfigDict(env_prefix="ORCHY_", extra="ignore")

    # Where state lives. Empty: an embedded Redis keeping its files in ``data_dir``.
    redis_url: str = Field(
        default="", validation_alias=AliasChoices("ORCHY_REDIS_URL", "REDIS_URL")
    )
    data_dir: str = Field(default_factory=default_data_dir)
    # A rediss:// server's CA (PEM), and a client certificate and key if it asks for one.
    redis_ca_certs: str = ""
    redis_client_cert: str = ""
    redis_client_key: str = ""
    # A Redis call that takes longer fails (the request answers 503) instead of hanging.
    redis_timeout_seconds: float = 5.0
    # Connections the server's Redis client opens at most; a request that finds them all busy
    # waits for one (up to redis_timeout_seconds) instead of failing.
    redis_max_connections: int = 100
    embedded_start_timeout_seconds: float = 10.0
    # The embedded redis-server's malloc: "auto" (jemalloc when the system has it, else
    # libc's), "libc", or the path of a malloc library to preload. See store/embedded.py.
    embedded_allocator: str = "auto"

    health_timeout_seconds: float = 1.0

    host: str = "127.0.0.1"
    access_log: bool = False
    port: int = 8080
    # A line per run started and finished and per failed task attempt (never per poll).
    log_runs: bool = True
    # On SIGINT/SIGTERM long polls end at once; other requests in flight get this long.
    shutdown_grace_seconds: int = 3

    # Runs are spread over this many Redis hash tags; fixed for the life of a database.
    partitions: int = 16

    # Timers (delays, wait timeouts, retry back-off, lease expiry, queued steps).
    timer_interval_seconds: float = 0.02
    timer_batch: int = 200
    timer_claim_seconds: float = 10.0
    # Safety net: a partition is swept at least this often even with no notification.
    timer_idle_recheck_seconds: float = 1.0
    timer_concurrency: int = 64
    # A timer whose handling raises is tried again after ``timer_retry_seconds``; after
    # ``timer_max_attempts`` failed attempts its execution and the run FAIL with the error.
    timer_retry_seconds: float = 1.0
    timer_max_attempts: int = 5
    notifier_reconnect_seconds: float = 0.5

    # Task polling.
    poll_max_wait_seconds: float = 30.0
    poll_recheck_seconds: float = 1.0

    # Waiting for a run's end (GET /flow/{id}?waitSeconds=): the longest one request
    # waits, and how often a wait reads the run again in case an end message was lost.
    max_run_wait_seconds: float = 30.0
    run_wait_recheck_seconds: float = 5.0
    # Each server process writes an action's last poll time, and a worker's record (see
    # worker_seen_seconds), at most this often.
    poll_record_seconds: float = 1.0
    # A worker is listed (GET /workers, and counted for its actions in GET /tasks/queues)
    # this long after its last poll; then its record expires. Each server process writes a
    # worker's record at most every ``poll_record_seconds``.
    worker_seen_seconds: float = 60.0

    # Defaults for user actions that have no definition.
    default_retry_count: int = 3
    default_retry_after_seconds: float = 1.0
    default_retry_policy: str = "EXPONENTIAL"
    default_timeout_seconds: float = 60.0
    action_cache_seconds: float = 1.0
    # Runs whose next task a worker took at once are kept in memory as of that transition,
    # so that the next result plans without reading the run again; 0 turns this off.
    run_cache_size: int = 4096

    # A run's data document at least this large (characters of JSON) is read, and JSONPath
    # run over it, in one of ``document_processes`` processes rather than on the event loop.
    large_document_bytes: int = 64 * 1024
    document_processes: int = 2

    # JavaScript system action.
    js_timeout_seconds: float = 1.0
    js_max_memory_bytes: int = 64 * 1024 * 1024
    # A script's output (the keys of $ it changed, and its result) as JSON, and its nesting.
    js_max_result_bytes: int = 1024 * 1024
    js_max_result_depth: int = 64
    # A step keeps the data document it ran on as its input, in the run, up to this size.
    js_max_recorded_input_bytes: int = 64 * 1024
    # Scripts run in this many child processes (killed on timeout, capped in memory); the
    # engine keeps as many threads to wait on them.
    js_processes: int = 4
    js_threads: int = 4

    # GET /flow examines at most this many runs for one page.
    list_scan_max: int = 10_000
    # Search (GET /flow filters, app/store/search.py): a definition's searchable paths, at
    # most this many, each at most this long; values longer than this many bytes are not
    # indexed; a page examines at most ``list_scan_max`` runs (then answers what it found,
    # with a cursor to go on). Index entries of ended runs are pruned this often, and this
    # long before their keys expire (at most half the retention).
    search_max_paths: int = 8
    search_max_path_length: int = 200
    search_max_value_bytes: int = 256
    search_prune_interval_seconds: float = 30.0
    search_prune_lead_seconds: float = 300.0
    search_prune_batch: int = 1000
    # GET /flow/{id}/actions/{id}/executions: at most this many executions per page.
    executions_page_max: int = 500

    # Limits on what clients send (the README's "Limits" lists them). Request body sizes,
    # by route: a definition, a run's input (each input of /flow/execute/many too), a
    # result (/complete, /fail, each result of a batch), an event's data, a batch (of
    # results or of starts), and every other body (polls, action definitions...).
    max_definition_bytes: int = 4 * 1024 * 1024
    max_input_bytes: int = 1024 * 1024
    max_output_bytes: int = 1024 * 1024
    # Rounds of planning a result again when its run changed under a transition that must
    # not apply to a changed run (one writing workflow variables).
    moved_retry_rounds: int = 20
    max_event_bytes: int = 1024 * 1024
    max_batch_bytes: int = 16 * 1024 * 1024
    max_body_bytes: int = 64 * 1024
    max_starts_per_request: int = 1000
    # JSON in any body: arrays and objects nested at most this deep (orjson, which stores
    # everything, writes at most 254 levels, and a run's document wraps what it is given).
    max_json_depth: int = 64
    # A workflow definition: actions, and ids in one branch of a ``next``.
    max_actions: int = 20_000
    max_next_ids: int = 10_000
    # delaySeconds, timeoutSeconds and retryAfterSeconds; and retryCount.
    max_duration_seconds: float = 365 * 24 * 3600
    max_retry_count: int = 100
    # Executions one run may create (a loop that never ends FAILS when it reaches this).
    max_run_executions: int = 100_000

    # forEach: items open at once when the definition gives no concurrency, and the most it
    # may give; items in one list; bytes of all the items' resolved parameters.
    for_each_concurrency: int = 10
    max_for_each_concurrency: int = 1000
    max_for_each_items: int = 100_000
    max_for_each_payload_bytes: int = 64 * 1024 * 1024

    # Correlated events (POST /events/{event}): an event that finds no waiting run is kept
    # this long when it names no ttlSeconds, and at most ``event_ttl_max_seconds``. A kept
    # event's record outlives its TTL by ``event_grace_seconds``, so that a run that took it
    # while its server died still gets it when its timer is handled again. A publication's
    # delivery is resumed by a timer after ``event_delivery_retry_seconds`` if the server
    # that began it did not finish it.
    event_ttl_seconds: float = 60.0
    event_ttl_max_seconds: float = 7 * 24 * 3600
    event_grace_seconds: float = 600.0
    event_delivery_retry_seconds: float = 10.0
    # Sub-workflows: a run started by a subWorkflow action is one level deeper than its
    # parent (a run started by a client is at depth 0); a subWorkflow action that would
    # start a run deeper than this fails instead.
    max_subworkflow_depth: int = 10
    # GET /flow/{id} lists at most this many of a run's child runs in ``children`` (a
    # for-each of 10,000 sub-workflow items starts 10,000); ``childrenCount`` counts them all.
    view_max_children: int = 100

    # -- security (README: Security) ----------------------------------------------------
    # The tenant of a single-tenant server: every Redis key lives under this namespace.
    # Empty: the default namespace (keys ``orchy:{p<N>}:...``, as before namespaces).
    namespace: str = ""
    # API keys: a file of hashed keys (re-read when it changes, so keys rotate without a
    # restart), and/or the same entries inline as JSON (a list of objects).
    api_keys_file: str = ""
    api_keys: str = ""
    # The keys file is read again (when a request comes) at most this often.
    api_keys_reload_seconds: float = 1.0
    # OAuth/OIDC access tokens (JWT): the issuer (``iss``), the audience (``aud``), where
    # its keys are (default: the issuer's /.well-known/openid-configuration jwks_uri), and
    # the claims that carry the role, the tenant and a worker's action names.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_role_claim: str = "orchy_role"
    oidc_tenant_claim: str = "orchy_tenant"
    oidc_actions_claim: str = "orchy_actions"
    oidc_jwks_cache_seconds: float = 300.0
    # A token signed with a key id the server does not know fetches the keys again (the
    # issuer rotated them), at most this often.
    oidc_jwks_refresh_min_seconds: float = 10.0
    oidc_fetch_timeout_seconds: float = 5.0
    oidc_leeway_seconds: float = 30.0
    # Verified tokens kept (until they expire) so that each is checked once.
    oidc_token_cache_size: int = 10_000
    # Browsers: origins allowed to call the API (exact ``scheme://host[:port]``, comma
    # separated); a request with another Origin is refused. Hosts a loopback server answers.
    allowed_origins: str = ""
    allowed_hosts: str = ""
    # How long a browser may keep the answer to a CORS preflight of an allowed origin.
    cors_max_age_seconds: int = 600
    # Serve without authentication on a non-loopback address (``orchy serve --insecure``).
    insecure: bool = False
    # TLS of the HTTP server; with ``ssl_ca_certs`` every client must show a certificate.
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_ca_certs: str = ""

    @property
    def auth_configured(self) -> bool:
        """Whether the server checks credentials (API keys or OIDC tokens)."""
        return bool(self.api_keys_file or self.api_keys or self.oidc_issuer)

    # Finished runs (and their history) expire after this long.
    retention_seconds: int = 7 * 24 * 3600

    # -- metrics, traces and logs (README: Metrics and tracing) ---------------------------
    # Server logs: "text" (uvicorn's lines) or "json" (one JSON object per line).
    log_format: LogFormat = LogFormat.TEXT
    # OpenTelemetry traces of runs (needs the ``orchy[otel]`` extra), and where they go
    # when the application set up no tracer provider: "otlp" (OTEL_EXPORTER_OTLP_*) or
    # "console".
    otel: bool = False
    otel_exporter: str = "otlp"
    # Lease times a server process remembers (one per task in hand, for the queue-wait and
    # execution-time histograms and spans); the oldest are forgotten beyond this.
    lease_clock_size: int = 100_000
    # The worker library's settings (worker_*, poll_max_tasks) come from WorkerSettings.


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
