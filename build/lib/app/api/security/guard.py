"""Roles checked on every request: ``install_auth`` builds the application's ``RouteTable``
(which refuses a route that declares no permission) and, when the settings configure
authentication, adds ``AuthenticationMiddleware``, which checks the role of every request
against the permission of the route it reaches, worker routes included, before the request
is read. ``require_actions`` is for the routes that name actions (a worker token may be
limited to some)."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from starlette.types import Scope

from app.api.security.authenticate import AuthenticationMiddleware, Authenticator
from app.api.security.principal import principal_of
from app.api.security.refusals import Forbidden, names
from app.api.security.route_table import RouteTable
from app.settings import Settings


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Refuses an application with a route that declares no permission; when the settings
    configure authentication, adds the middleware that checks every request. Call it once
    every route is in place."""
    table = RouteTable.of(app)
    authenticator = Authenticator.of(settings)
    if authenticator is not None:  # else every request is ANONYMOUS (principal.py)
        app.add_middleware(AuthenticationMiddleware, authenticator=authenticator, table=table)


def require_actions(scope: Scope, actions: Iterable[str], what: str) -> None:
    """Forbidden, naming them, if the request's principal is limited to some action names
    and ``actions`` has others."""
    allowed = principal_of(scope).actions
    if allowed is None:
        return
    others = set(actions) - allowed
    if others:
        raise Forbidden(
            f"{what}: this token may not work on {names(others)} (it may on: {names(allowed)})"
        )
