"""Reads every request body as JSON, within its route's size limit, and refuses what the
server could not keep (see ``json_body``) before any route sees it: 413 or 422, naming the
limit or the field. The value read is handed on in the scope (``PARSED_BODY``), so that a
route that takes it (the worker routes) does not parse the body again.

``curl -d`` sends form encoding by default and other clients send no content type at all;
this API takes nothing but JSON, so the declared type is replaced rather than the request
refused."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import UNPROCESSABLE, error_response
from app.api.json_body import BodyLimits, InvalidBody, drain, parse, read_within, replay
from app.engine.errors import TooLarge
from app.settings import Settings

CONTENT_TYPE = b"content-type"
CONTENT_LENGTH = b"content-length"
JSON_TYPE = (CONTENT_TYPE, b"application/json")
WITH_BODY = frozenset(("POST", "PUT", "PATCH"))
# The scope key of the body's JSON value, when the body was read whole and is not empty.
PARSED_BODY = "orchy.parsed_body"


def parsed_body(scope: Scope) -> tuple[bool, Any]:
    """(True, the body's JSON value) when the middleware read it; (False, None) if not."""
    if PARSED_BODY in scope:
        return True, scope[PARSED_BODY]
    return False, None


class JSONBodyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limits = BodyLimits(settings)
        self.max_depth = settings.max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = b""
        headers = []
        for header in scope["headers"]:
            name = header[0]
            if name == CONTENT_TYPE:
                continue
            if name == CONTENT_LENGTH:
                declared = header[1]
            headers.append(header)
        headers.append(JSON_TYPE)
        scope = {**scope, "headers": headers}
        limit = self.limits.of(scope["path"])
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
                scope[PARSED_BODY] = parse(body, self.max_depth)
            except InvalidBody as error:
                await error_response(UNPROCESSABLE, str(error))(scope, receive, send)
                return
        await self.app(scope, replay(body, complete, receive), send)
