"""The caller of a request: its name, role, tenant and (for workers) the action names it may
work on. The authentication middleware puts it in the request's scope; routes read it with
``principal_of``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The scope key of the request's Principal.
PRINCIPAL_SCOPE_KEY = "orchy.principal"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    CLIENT = "client"
    WORKER = "worker"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Principal:
    """``tenant`` None is the server's own namespace (``ORCHY_NAMESPACE``). ``actions`` None
    is every action name; a set limits a worker to those names."""

    name: str
    role: Role
    tenant: str | None = None
    actions: frozenset[str] | None = None


# The caller of a server that runs without authentication (loopback, or --insecure).
ANONYMOUS = Principal(name="anonymous", role=Role.ADMIN)
# The caller of a public route (/health, /docs) of a server that checks credentials: no
# token was looked at, so it may read at most, whatever the route does with it.
PUBLIC_CALLER = Principal(name="public", role=Role.VIEWER)


def principal_of(scope: Any) -> Principal:
    """The request's principal; ANONYMOUS when the server checks no credentials."""
    principal: Principal = scope.get(PRINCIPAL_SCOPE_KEY, ANONYMOUS)
    return principal
