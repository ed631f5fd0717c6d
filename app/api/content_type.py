"""Reads every request body as JSON: ``curl -d`` sends form encoding by default, and this API
takes no forms, so a form content type is read as JSON rather than refused."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

FORM = b"application/x-www-form-urlencoded"
JSON_TYPE = b"application/json"


class JSONBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [
                (name, JSON_TYPE if name == b"content-type" and value.startswith(FORM) else value)
                for name, value in scope["headers"]
            ]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
