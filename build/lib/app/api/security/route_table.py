"""Which permission a request needs, known before the request is read: the application's
routes in the router's order, each with the permission it declares, answering for a method
and path what the router will reach (the first route that matches both). A path without
parameters is one dict lookup (``/tasks/poll``, ``/tasks/results``); the others are matched
in order, as the router does.

Building the table refuses an application with a route that declares no permission."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI

from app.api.security.permissions import Permission, permission_of


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method (a mount)
    permission: Permission
    literal: str | None  # the path, when it has no parameters

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and bool(self.pattern.match(path))


class RouteTable:
    """The permission of each route of an application, found as the router finds routes."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self.rules = [_rule(route) for route in routes]
        # Paths without parameters: (method, path) -> the permission of the route the router
        # picks for them, which is not always theirs (an earlier route may match too).
        self.exact: dict[tuple[str, str], Permission | None] = {}
        for rule in self.rules:
            if rule.literal is None or rule.methods is None:
                continue
            for method in rule.methods:
                self.exact[method, rule.literal] = self._scan(method, rule.literal)

    @classmethod
    def of(cls, app: FastAPI) -> RouteTable:
        return cls(_flat(app.router.routes))

    def permission(self, method: str, path: str) -> Permission | None:
        """The permission of the route ``method path`` reaches; None when none does (the
        router answers 404 or 405)."""
        key = (method, path)
        if key in self.exact:
            return self.exact[key]
        return self._scan(method, path)

    def _scan(self, method: str, path: str) -> Permission | None:
        for rule in self.rules:
            if rule.matches(method, path):
                return rule.permission
        return None


def _rule(route: Any) -> _Rule:
    methods = getattr(route, "methods", None)
    params = getattr(route, "param_convertors", None)
    return _Rule(
        pattern=route.path_regex,
        methods=frozenset(methods) if methods else None,
        permission=permission_of(route),
        literal=None if params else route.path,
    )


def _flat(routes: list[Any]) -> list[Any]:
    """Every route, those of included routers too, in the router's order (FastAPI 0.165
    keeps included routers whole; earlier versions copy their routes)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(routes) if iterate is None else list(iterate(routes))
