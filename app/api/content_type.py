"""Reads every request body as JSON. ``curl -d`` sends form encoding by default and other
clients send no content type at all; this API takes nothing but JSON, so the declared type
is replaced rather than the request refused."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

CONTENT_TYPE = b"content-type"
JSON_TYPE = (CONTENT_TYPE, b"application/json")


class JSONBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = [(name, value) for name, value in scope["headers"] if name != CONTENT_TYPE]
            scope = {**scope, "headers": [*headers, JSON_TYPE]}
        await self.app(scope, receive, send)
