"""``POST /tasks/poll`` and ``POST /tasks/results`` ahead of FastAPI's middleware, routing
and request layers, which cost more than the rest of such a request, and every worker calls
these all the time. The body is validated with the routes' own models and answered by the
routes' own functions; a body that does not validate, or is too large, is replayed to the
FastAPI app, so that every error is answered the one way the rest of the API answers it.
Bodies are read within the routes' limits and parsed as strictly as ``json_body`` parses
every other body."""

from __future__ import annotations

import contextlib
import logging

import orjson
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import INTERNAL, UNAVAILABLE, UNPROCESSABLE, UNSTORABLE_JSON
from app.api.json_body import InvalidBody, body_limit, parse, read_within, replay
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
        most = body_limit(path, settings).most
        body, complete = await read_within(receive, most)
        request: BaseModel | None = None
        if complete and len(body) <= most:
            with contextlib.suppress(ValidationError, InvalidBody):
                request = _MODELS[path].model_validate(parse(body, settings.max_json_depth))
        if request is None:
            await self.app(scope, replay(body, complete, receive), send)
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
