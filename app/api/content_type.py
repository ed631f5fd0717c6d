"""Reads every request body as JSON, within its route's size limit, and refuses what the
server could not keep (see ``json_body``) before any route sees it: 413 or 422, naming the
limit or the field.

``curl -d`` sends form encoding by default and other clients send no content type at all;
this API takes nothing but JSON, so the declared type is replaced rather than the request
refused."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import UNPROCESSABLE, error_response
from app.api.json_body import InvalidBody, body_limit, drain, parse, read_within, replay
from app.engine.errors import TooLarge
from app.settings import Settings

CONTENT_TYPE = b"content-type"
CONTENT_LENGTH = b"content-length"
JSON_TYPE = (CONTENT_TYPE, b"application/json")
WITH_BODY = ("POST", "PUT", "PATCH")


class JSONBodyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = [(name, value) for name, value in scope["headers"] if name != CONTENT_TYPE]
        scope = {**scope, "headers": [*headers, JSON_TYPE]}
        limit = body_limit(scope["path"], self.settings)
        declared = dict(headers).get(CONTENT_LENGTH, b"")
        if declared.isdigit() and int(declared) > limit.most:
            refusal = limit.refusal(int(declared))
            await error_response(TooLarge.status_code, refusal)(scope, receive, send)
            return
        body, complete = await read_within(receive, limit.most)
        if len(body) > limit.most:
            if not complete:
                await drain(receive)
            refusal = limit.refusal(None if not complete else len(body))
            await error_response(TooLarge.status_code, refusal)(scope, receive, send)
            return
        if complete and body:
            try:
                parse(body, self.settings.max_json_depth)
            except InvalidBody as error:
                await error_response(UNPROCESSABLE, str(error))(scope, receive, send)
                return
        await self.app(scope, replay(body, complete, receive), send)
