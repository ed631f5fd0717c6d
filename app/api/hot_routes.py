"""``POST /tasks/poll`` and ``POST /tasks/results`` ahead of FastAPI's middleware, routing
and request layers, which cost more than the rest of such a request, and every worker calls
these all the time. The body is validated with the routes' own models and answered by the
routes' own functions; a body that does not validate, or is too large, is replayed to the
FastAPI app, so that every error is answered the one way the rest of the API answers it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import INTERNAL, UNAVAILABLE, UNPROCESSABLE, UNSTORABLE_JSON
from app.api.models import PollRequest, ResultsRequest
from app.api.tasks import answer_poll, answer_results
from app.engine.engine import Engine
from app.engine.errors import EngineError
from app.settings import Settings

log = logging.getLogger("orchy.api")

POLL_PATH = "/tasks/poll"
RESULTS_PATH = "/tasks/results"
OK = 200
JSON_HEADERS = [(b"content-type", b"application/json")]


class HotRoutes:
    """Answers the two routes from ``state`` (the application's, with its engine and
    settings) and hands every other request to ``app``."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in _MODELS:
            await self.app(scope, receive, send)
            return
        engine: Engine = self.state.engine
        settings: Settings = self.state.settings
        body, complete = await _read_within(receive, settings.max_batch_bytes)
        request: BaseModel | None = None
        if complete:
            with contextlib.suppress(ValidationError):
                request = _MODELS[path].model_validate_json(body)
        if request is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        status, answer = await _answer(engine, settings, request, receive)
        headers = [*JSON_HEADERS, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


async def _answer(
    engine: Engine, settings: Settings, request: BaseModel, receive: Receive
) -> tuple[int, bytes]:
    """The status and body, with errors mapped as ``app/api/errors.py`` maps them."""
    try:
        if isinstance(request, PollRequest):
            return OK, await answer_poll(engine, settings, request, receive)
        assert isinstance(request, ResultsRequest)
        return OK, await answer_results(engine, settings, request)
    except EngineError as error:
        return error.status_code, _error(error.message)
    except orjson.JSONEncodeError as error:
        return UNPROCESSABLE, _error(f"{UNSTORABLE_JSON}: {error}")
    except (RedisConnectionError, RedisTimeoutError) as error:
        return UNAVAILABLE, _error(f"redis unavailable: {error}")
    except Exception as error:
        log.exception("unexpected error on a worker call")
        return INTERNAL, _error(f"internal error: {type(error).__name__}")


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


_MODELS: dict[str, type[BaseModel]] = {POLL_PATH: PollRequest, RESULTS_PATH: ResultsRequest}


async def _read_within(receive: Receive, most: int) -> tuple[bytes, bool]:
    """The body and True; or, once it passes ``most`` bytes or the client hangs up, what was
    read and False."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > most:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that gives what was read first, then the rest of the request."""
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return receive_again
