"""The fast path of the routes workers call all the time: ``/tasks/poll``, ``/tasks/results``,
``/tasks/{id}/complete``, ``/fail`` and ``/heartbeat``.

Each is a ``WorkerRoute``: an ``APIRoute`` that FastAPI documents from its endpoint like any
other, but that the router runs as a raw ASGI app, the way starlette runs any ASGI endpoint.
The routes therefore sit inside the application's middleware stack, so that whatever is
added for every route (authentication, metrics, tracing) covers them too, and their errors
are raised to the application's own handlers (``app/api/errors.py``). What they skip is
FastAPI's request layer (dependency solving, and validating and serializing each answer
through its model), which costs more than the rest of a worker's request.

The endpoint is called with its path parameters, its body validated with its own model as
FastAPI does it (so a bad body gets the same 422), and the request. The body is the value
``JSONBodyMiddleware`` parsed already (``content_type.PARSED_BODY``); it is parsed here only
when the middleware left it unread."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.content_type import parsed_body

BAD_REQUEST = 400
UNREADABLE_BODY = "There was an error parsing the body"  # FastAPI's words, kept the same


@dataclass(frozen=True)
class _Signature:
    """What a worker endpoint takes, by parameter name."""

    request: str | None
    body: tuple[str, type[BaseModel]] | None
    path: frozenset[str]

    @classmethod
    def of(cls, endpoint: Callable[..., Any], path_params: set[str]) -> _Signature:
        hints = typing.get_type_hints(endpoint)
        request: str | None = None
        body: tuple[str, type[BaseModel]] | None = None
        for name in inspect.signature(endpoint).parameters:
            hint = hints.get(name)
            if hint is Request:
                request = name
            elif isinstance(hint, type) and issubclass(hint, BaseModel) and body is None:
                body = (name, hint)
            elif name not in path_params:
                raise TypeError(
                    f"{endpoint.__name__}: a worker endpoint takes its path parameters, "
                    f"one body model and the Request; {name!r} is none of them"
                )
        return cls(request, body, frozenset(path_params))


class WorkerRoute(APIRoute):
    """An ``APIRoute`` served by the fast path (see the module's docstring). Its endpoint
    answers a ``Response``, which the route sends as it is."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.signature = _Signature.of(endpoint, set(self.param_convertors))
        self.app = self.serve

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        arguments: dict[str, Any] = {
            name: scope["path_params"][name] for name in self.signature.path
        }
        if self.signature.request is not None:
            arguments[self.signature.request] = request
        if self.signature.body is not None:
            name, model = self.signature.body
            read, document = parsed_body(scope)
            if not read:
                document = _document(await request.body())
            arguments[name] = _validate(model, document)
        response: Response = await self.endpoint(**arguments)
        await response(scope, receive, send)


def _document(body: bytes) -> Any:
    """The body's JSON value as FastAPI reads a JSON body, with the same errors: an empty
    body is None, bad JSON is named by its position."""
    if not body:
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ]
        ) from error
    except ValueError as error:  # not UTF-8
        raise HTTPException(BAD_REQUEST, UNREADABLE_BODY) from error


def _validate(model: type[BaseModel], document: Any) -> BaseModel:
    """The body's value in its model as FastAPI validates it: None is a missing body, every
    field error is under ``body``."""
    if document is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate(document, from_attributes=True)  # as FastAPI does
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()]
        ) from error


def serve_first(app: FastAPI, router: APIRouter) -> None:
    """Puts ``router``'s worker routes at the head of ``app``'s routes, so that they are
    matched first. Not ``include_router``: that would wrap each route in FastAPI's request
    layer again."""
    routes = [route for route in router.routes if isinstance(route, WorkerRoute)]
    if len(routes) != len(router.routes):
        raise TypeError("serve_first takes a router of WorkerRoutes only")
    app.router.routes[:0] = routes
