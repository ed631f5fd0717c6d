"""Orchy's Python SDK: ``from orchy import Client, AsyncClient``."""

from orchy.client import AsyncClient, Client, Run, RunStatus
from orchy.errors import (
    Conflict,
    Invalid,
    NotFound,
    OrchyError,
    RunFailed,
    RunNotEnded,
    TooLarge,
    Unavailable,
)

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Invalid",
    "NotFound",
    "OrchyError",
    "Run",
    "RunFailed",
    "RunNotEnded",
    "RunStatus",
    "TooLarge",
    "Unavailable",
]
