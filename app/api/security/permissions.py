"""What each route needs (its permission) and what each role may (its permissions).

Every route declares its permission: an ``APIRoute`` in its ``openapi_extra`` (``needs``, which
also documents it in the OpenAPI schema as ``x-orchy-permission``), a route FastAPI or
Starlette adds itself (``/openapi.json``, the files of ``/docs``) in ``PUBLIC_PATHS``.
``guard.RouteTable`` refuses an application with a route that declares none, so that no route
is ever open by accident."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from app.api.security.principal import Role

# The OpenAPI extension naming an operation's permission.
PERMISSION_EXTENSION = "x-orchy-permission"


class Permission(StrEnum):
    # No token needed.
    PUBLIC = "public"
    # Runs, their history and executions, workflow definitions, queues.
    READ = "read"
    # Action definitions (a worker limited to some action names reads only those).
    READ_ACTIONS = "read-actions"
    # Registering workflow definitions.
    DEFINE = "define"
    # Writing action definitions (a worker limited to some action names writes only those).
    DEFINE_ACTIONS = "define-actions"
    # Starting runs.
    START = "start"
    # Sending events, to one run or correlated.
    SEND_EVENTS = "send-events"
    # Pausing, resuming and terminating runs.
    LIFECYCLE = "lifecycle"
    # Polling for tasks and answering them (results, heartbeats).
    WORK = "work"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(Permission) - {Permission.WORK},
    Role.CLIENT: frozenset(
        {
            Permission.PUBLIC,
            Permission.READ,
            Permission.READ_ACTIONS,
            Permission.START,
            Permission.SEND_EVENTS,
        }
    ),
    Role.WORKER: frozenset(
        {
            Permission.PUBLIC,
            Permission.READ_ACTIONS,
            Permission.DEFINE_ACTIONS,
            Permission.WORK,
        }
    ),
    Role.VIEWER: frozenset({Permission.PUBLIC, Permission.READ, Permission.READ_ACTIONS}),
}

# Routes FastAPI or Starlette make themselves, which cannot declare their permission: the
# OpenAPI schema, and the files of /docs and of the dashboard (/ui).
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs/static", "/ui/static"})


class UndeclaredPermission(TypeError):
    """A route declares no permission (or an unknown one)."""


def needs(permission: Permission, openapi_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that needs ``permission``, with ``openapi_extra``."""
    return {**(openapi_extra or {}), PERMISSION_EXTENSION: permission.value}


def roles_with(permission: Permission) -> frozenset[Role]:
    return frozenset(role for role, allowed in ROLE_PERMISSIONS.items() if permission in allowed)


def permission_of(route: Any) -> Permission:
    """The permission ``route`` (a route, or FastAPI's view of an included one) declares;
    UndeclaredPermission if none."""
    extra = getattr(route, "openapi_extra", None)
    declared = extra.get(PERMISSION_EXTENSION) if isinstance(extra, dict) else None
    if declared is not None:
        try:
            return Permission(declared)
        except ValueError:
            raise UndeclaredPermission(
                f"{describe(route)}: unknown permission {declared!r}"
            ) from None
    if getattr(route, "path", None) in PUBLIC_PATHS:
        return Permission.PUBLIC
    raise UndeclaredPermission(
        f"{describe(route)} declares no permission: give it openapi_extra=needs(Permission.X)"
    )


def describe(route: Any) -> str:
    methods = sorted(getattr(route, "methods", None) or [])
    path = getattr(route, "path", repr(route))
    return f"{' '.join(methods)} {path}".strip()
