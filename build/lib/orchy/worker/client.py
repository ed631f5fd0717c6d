"""The worker's half of the HTTP protocol (SPEC section 5), over one aiohttp session: a
worker makes many small requests, and aiohttp's are the cheapest of the Python clients.

Results, heartbeats and action definitions are retried on connection errors and 5xx
answers: repeating them is safe because the server answers a duplicate result with 409.
A poll is sent exactly once: a repeated poll could lease tasks whose answer is then lost,
leaving them stuck until their lease expires, so the caller backs off and sends a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self
from urllib.parse import quote

import aiohttp
import orjson

from orchy.worker.jsontypes import JSON, JSONObject

logger = logging.getLogger("orchy.worker")

_MAX_LOGGED_BODY_CHARS = 500
"""An error answer without an ``error`` field is logged cut to this length."""


class ReplyStatus(StrEnum):
    OK = "ok"
    STALE = "stale"  # 409: the attempt is no longer the current one, or already answered
    NOT_FOUND = "not_found"  # 404
    REJECTED = "rejected"  # any other 3xx/4xx: the request itself is wrong
    UNREACHABLE = "unreachable"  # connection errors or 5xx, retries spent


@dataclass(frozen=True)
class Reply:
    """How the server answered a retried request, once retries are over."""

    status: ReplyStatus
    http_status: int | None
    message: str

    @property
    def ok(self) -> bool:
        return self.status is ReplyStatus.OK


@dataclass(frozen=True)
class Task:
    """One leased attempt of a user action, as ``POST /tasks/poll`` delivers it."""

    task_id: str
    flow_id: str
    action_id: int | str
    name: str
    attempt: int
    input: JSON
    # The W3C trace context of the attempt's span, when the server traces runs.
    traceparent: str | None = None

    @classmethod
    def from_json(cls, data: JSON) -> Task:
        if not isinstance(data, dict):
            raise ValueError(f"a task must be an object, not {type(data).__name__}")
        task_id, name = data.get("taskId"), data.get("name")
        if not isinstance(task_id, str | int) or isinstance(task_id, bool) or task_id == "":
            raise ValueError(f"task without a usable taskId: {task_id!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"task {task_id} has no action name")
        attempt = data.get("attempt", 1)
        action_id = data.get("actionId", "")
        return cls(
            task_id=str(task_id),
            flow_id=str(data.get("flowId", "")),
            action_id=action_id if isinstance(action_id, int | str) else str(action_id),
            name=name,
            attempt=attempt if isinstance(attempt, int) else 1,
            input=data.get("input", {}),
            traceparent=traceparent
            if isinstance(traceparent := data.get("traceparent"), str)
            else None,
        )

    @property
    def label(self) -> str:
        """How logs name the task: its id, action name, run and attempt."""
        return f"task {self.task_id} ({self.name}, flow {self.flow_id}, attempt {self.attempt})"


class PollError(Exception):
    """A poll that did not deliver tasks; never to be replayed."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class UnencodableBodyError(ValueError):
    """A body (an action's output) that cannot be written as JSON."""


def encode_json(body: JSON) -> bytes:
    """Strict JSON: NaN and infinities are refused, as the server's parser refuses them."""
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UnencodableBodyError(f"not JSON serialisable: {exc}") from exc
    return text.encode()


def describe_error(exc: BaseException) -> str:
    """``ExcType: message``, the shape of every error the worker logs or reports."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole."""

    status_code: int
    content: bytes

    def json(self) -> JSON:
        try:
            value: JSON = orjson.loads(self.content)
        except orjson.JSONDecodeError:
            return json.loads(self.content)  # its reading, and its errors, as before
        return value

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
OK = 200
NOT_FOUND = 404
CONFLICT = 409
SERVER_ERROR = 500
JSON_HEADERS = {"Content-Type": "application/json"}


def _is_success(code: int) -> bool:
    return OK <= code < 300


def _answer_message(response: Answer) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "detail"):
            if key in data:
                value = data[key]
                return value if isinstance(value, str) else json.dumps(value)
    return response.text[:_MAX_LOGGED_BODY_CHARS]


class OrchyClient:
    def __init__(
        self,
        server_url: str,
        *,
        timeout_seconds: float,
        retries: int,
        backoff_seconds: float,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``headers`` go with every request (the bearer token); ``ssl_context`` verifies an
        HTTPS server (and holds the client certificate); None: the system's CAs."""
        self._timeout_seconds = timeout_seconds
        self._headers = {**JSON_HEADERS, **(headers or {})}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._retries = retries
        self._backoff_seconds = backoff_seconds
        self._base_url = server_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop it is made on.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # The worker's own concurrency bounds the connections: a poll, and per task
                # in hand a heartbeat and a result.
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                headers=self._headers,
            )
        return self._session

    async def _post(self, path: str, content: bytes, timeout: float | None = None) -> Answer:
        limit = aiohttp.ClientTimeout(total=timeout or self._timeout_seconds)
        async with self._http().post(self._base_url + path, data=content, timeout=limit) as reply:
            return Answer(reply.status, await reply.read())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def register_action(self, definition: JSONObject) -> Reply:
        return await self._post_with_retries("/metadata/action", definition)

    async def results(
        self, encoded_results: list[bytes], take_next: JSONObject | None = None
    ) -> tuple[list[Reply], list[Task]]:
        """POST /tasks/results with results already encoded (see :func:`encode_json`): one
        Reply per result, in order, and the tasks leased at once when ``take_next`` (the
        request's ``next``) offers to take them."""
        content = b'{"results":[' + b",".join(encoded_results) + b"]"
        if take_next is not None:
            content += b',"next":' + encode_json(take_next)
        reply, response = await self._send_with_retries("/tasks/results", content + b"}")
        if not reply.ok or response is None:
            return [reply] * len(encoded_results), []
        try:
            data = response.json()
            statuses = data["results"]
            replies = [_reply_of(int(item["status"]), item.get("error") or "") for item in statuses]
        except (ValueError, KeyError, TypeError) as exc:
            broken = Reply(ReplyStatus.REJECTED, response.status_code, f"bad answer: {exc}")
            return [broken] * len(encoded_results), []
        return replies, _tasks_of(data.get("tasks") if isinstance(data, dict) else None)

    async def heartbeat(self, task_id: str) -> Reply:
        return await self._post_with_retries(_task_path(task_id, "heartbeat"), {})

    async def poll(
        self, worker_id: str, actions: list[str], max_tasks: int, wait_seconds: float
    ) -> list[Task]:
        """One long-poll, sent once. Raises :class:`PollError` when no tasks list came back."""
        body = {
            "workerId": worker_id,
            "actions": actions,
            "max": max_tasks,
            "waitSeconds": wait_seconds,
        }
        # The server holds the request for up to ``wait_seconds`` before answering.
        timeout = self._timeout_seconds + wait_seconds
        try:
            response = await self._post("/tasks/poll", encode_json(body), timeout)
        except TRANSPORT_ERRORS as exc:
            raise PollError(describe_error(exc)) from exc
        if response.status_code != OK:
            raise PollError(
                f"server answered {response.status_code}: {_answer_message(response)}",
                response.status_code,
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise PollError(f"poll answer is not JSON: {exc}") from exc
        raw_tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(raw_tasks, list):
            raise PollError(f"poll answer has no tasks list: {str(data)[:_MAX_LOGGED_BODY_CHARS]}")
        return _tasks_of(raw_tasks)

    async def _post_with_retries(self, path: str, body: JSON) -> Reply:
        reply, _ = await self._send_with_retries(path, encode_json(body))
        return reply

    async def _send_with_retries(self, path: str, content: bytes) -> tuple[Reply, Answer | None]:
        reason = ""
        for attempt in range(self._retries + 1):
            http_status: int | None = None
            try:
                response = await self._post(path, content)
            except TRANSPORT_ERRORS as exc:
                reason = describe_error(exc)
            else:
                http_status = response.status_code
                if http_status < SERVER_ERROR:
                    return _reply(response), response
                reason = f"server answered {http_status}: {_answer_message(response)}"
            if attempt < self._retries:
                delay = self._backoff_seconds * 2**attempt
                logger.info(
                    "POST %s failed (%s); retry %d/%d in %.2f s",
                    path,
                    reason,
                    attempt + 1,
                    self._retries,
                    delay,
                )
                await asyncio.sleep(delay)
        return Reply(ReplyStatus.UNREACHABLE, http_status, reason), None


def _tasks_of(raw_tasks: JSON) -> list[Task]:
    """The usable tasks of an answer's ``tasks`` list."""
    tasks: list[Task] = []
    for raw in raw_tasks if isinstance(raw_tasks, list) else []:
        try:
            tasks.append(Task.from_json(raw))
        except ValueError as exc:
            # Leased but unusable: it comes back when its lease expires.
            logger.error("dropping a malformed task from the server's answer: %s", exc)
    return tasks


def _task_path(task_id: str, verb: str) -> str:
    return f"/tasks/{quote(task_id, safe='')}/{verb}"


def _reply(response: Answer) -> Reply:
    code = response.status_code
    if _is_success(code):
        return Reply(ReplyStatus.OK, code, "")
    return _reply_of(code, _answer_message(response))


def _reply_of(code: int, message: str) -> Reply:
    if _is_success(code):
        return Reply(ReplyStatus.OK, code, "")
    if code == CONFLICT:
        return Reply(ReplyStatus.STALE, code, message)
    if code == NOT_FOUND:
        return Reply(ReplyStatus.NOT_FOUND, code, message)
    return Reply(ReplyStatus.REJECTED, code, message)
