"""The client's settings: arguments of ``Client``/``AsyncClient`` win, else ``ORCHY_*``
environment variables, else these defaults."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from orchy.credentials import CredentialSettings


class ClientSettings(CredentialSettings):
    """Where the server is and how hard to try.

    - ``ORCHY_URL``: the server's base URL.
    - ``ORCHY_TIMEOUT_SECONDS``: the timeout of one request (a wait adds its own time).
    - ``ORCHY_CLIENT_RETRIES``: how many times a call that is safe to repeat is tried again
      after a 503 or a connection error.
    - ``ORCHY_CLIENT_BACKOFF_SECONDS``: the first pause between tries, doubled at each try
      up to ``ORCHY_CLIENT_MAX_BACKOFF_SECONDS``.
    - ``ORCHY_TOKEN``, ``ORCHY_CA_BUNDLE``, ``ORCHY_CLIENT_CERT``, ``ORCHY_CLIENT_KEY``: the
      bearer token and the TLS files (``orchy.credentials``).
    """

    model_config = SettingsConfigDict(env_prefix="ORCHY_", extra="ignore")

    url: str = "http://127.0.0.1:8080"
    timeout_seconds: float = 30.0
    client_retries: int = 5
    client_backoff_seconds: float = 0.2
    client_max_backoff_seconds: float = 5.0


__all__ = ["ClientSettings"]
