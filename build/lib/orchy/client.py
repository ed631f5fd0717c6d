"""The run client: register workflows, start runs, wait for their end, send events, pause,
resume, terminate, list and read runs, from ordinary code (``Client``) or from asyncio
(``AsyncClient``).

One implementation: each operation is written once, in ``_Operations``, as a generator that
yields request descriptions (``Call``) and receives their parsed answers; ``Client`` drives
it over a blocking transport and ``AsyncClient`` over an asyncio one (``orchy/_http.py``).
The two classes only hand their arguments over.

Waiting for a run is a long wait served by the server (``GET /flow/{id}?waitSeconds=``,
answered when the run ends): no polling. The server caps one wait
(``ORCHY_MAX_RUN_WAIT_SECONDS``); a longer ``timeout`` asks again with what is left."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from orchy._http import AsyncTransport, Call, SyncTransport
from orchy.credentials import Credentials
from orchy.errors import RunFailed, RunNotEnded
from orchy.settings import ClientSettings

T = TypeVar("T")
Operation = Generator[Call[Any], Any, T]


class RunStatus(StrEnum):
    """A run's status."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"


# A wait without a timeout asks for this long each time (the server answers at its cap).
FOREVER = 86400.0
ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TERMINATED})


class _Model(BaseModel):
    """Answers: read by the server's camelCase names, offered in snake_case; fields a newer
    server adds are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class RunLink(_Model):
    """A run started by a subWorkflow action, or the run whose action started this one."""

    flow_id: str = Field(alias="flowId")
    action_id: int = Field(alias="actionId")


class ActionState(_Model):
    """The latest execution of one action of a run."""

    status: str
    attempts: int
    input: Any = None
    output: Any = None
    error: str | None = None
    child: str | None = None


class Run(_Model):
    """A run as the server answers ``GET /flow/{id}``."""

    id: str
    name: str
    version: int
    status: RunStatus
    reason: str = ""
    input: Any = None
    data: dict[str, Any] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    output: Any = None
    actions: dict[str, ActionState] = Field(default_factory=dict)
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")
    parent: RunLink | None = None
    children: list[RunLink] = Field(default_factory=list)
    rerun_of: str | None = Field(default=None, alias="rerunOf")  # the run a rerun reruns

    @property
    def ended(self) -> bool:
        """True once COMPLETED, FAILED or TERMINATED."""
        return self.status in ENDED

    def result(self) -> Any:
        """The run's ``output`` when COMPLETED. Raises ``RunFailed`` (with the reason) when it
        FAILED or was TERMINATED, ``RunNotEnded`` when it is still RUNNING or PAUSED."""
        if self.status is RunStatus.COMPLETED:
            return self.output
        if self.ended:
            raise RunFailed(self)
        raise RunNotEnded(self)


class RunSummary(_Model):
    """A run in a listing."""

    id: str
    name: str
    version: int
    status: RunStatus
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")


class RunPage(_Model):
    """One page of ``list_runs``; ``next_offset`` asks for the next page (None: last)."""

    runs: list[RunSummary]
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        """The ``offset`` of the next page, or None when this page was the last."""
        return self.offset + self.limit if len(self.runs) == self.limit else None


class Registered(_Model):
    """A registered workflow: its version, and whether this registration created it (an
    identical definition changes nothing)."""

    name: str
    version: int
    created: bool


class ActionSettings(_Model):
    """A user action's retry and timeout settings as the server stored them."""

    name: str
    retry_count: int = Field(alias="retryCount")
    retry_after_seconds: float = Field(alias="retryAfterSeconds")
    retry_policy: str = Field(alias="retryPolicy")
    timeout_seconds: float = Field(alias="timeoutSeconds")
    poll_timeout_seconds: float | None = Field(default=None, alias="pollTimeoutSeconds")


class Delivery(_Model):
    """A wait that got a published event."""

    flow_id: str = Field(alias="flowId")
    action_id: int = Field(alias="actionId")


class Published(_Model):
    """The answer to ``publish_event``: the waits that got the event, and whether it was
    kept for waits to come (``ttl_seconds``)."""

    delivered: list[Delivery]
    kept: bool


@runtime_checkable
class Definable(Protocol):
    """A workflow built in code: anything whose ``to_json()`` is the JSON definition."""

    def to_json(self) -> Mapping[str, Any]:
        """The workflow definition as the server takes it."""
        ...


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


def _status(body: Any) -> str:
    return str(body["status"])


class _Operations:
    """Every operation once, as a generator of calls (see the module's docstring)."""

    def register_workflow(self, definition: Mapping[str, Any] | Definable) -> Operation[Registered]:
        body = definition.to_json() if isinstance(definition, Definable) else definition
        # The same definition twice registers it once: safe to repeat.
        registered: Registered = yield Call(
            "POST",
            "/metadata/workflow",
            Registered.model_validate,
            json=dict(body),
            idempotent=True,
        )
        return registered

    def register_action(self, name: str, settings: Mapping[str, Any]) -> Operation[ActionSettings]:
        body = {
            "name": name,
            **{key: value for key, value in settings.items() if value is not None},
        }
        # A definition replaces the one stored before: safe to repeat.
        stored: ActionSettings = yield Call(
            "POST", "/metadata/action", ActionSettings.model_validate, json=body, idempotent=True
        )
        return stored

    def start(
        self, name: str, input: Any, version: int | None, idempotency_key: str | None
    ) -> Operation[str]:
        body: dict[str, Any] = {"name": name, "input": {} if input is None else input}
        if version is not None:
            body["version"] = version
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        # Without a key a second try could start a second run: it is never repeated.
        answer = yield Call(
            "POST", "/flow/execute", json=body, idempotent=idempotency_key is not None
        )
        return str(answer["flowId"])

    def get(self, flow_id: str) -> Operation[Run]:
        run: Run = yield Call("GET", _path("flow", flow_id), Run.model_validate, idempotent=True)
        return run

    def wait(self, flow_id: str, timeout: float | None) -> Operation[Run]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # The server caps each wait (ORCHY_MAX_RUN_WAIT_SECONDS): asking for more is
            # harmless, and what is left is asked for again.
            left = FOREVER if deadline is None else max(deadline - time.monotonic(), 0.0)
            run: Run = yield Call(
                "GET",
                _path("flow", flow_id),
                Run.model_validate,
                params={"waitSeconds": left},
                idempotent=True,
                wait_seconds=min(left, FOREVER),
            )
            if run.ended or (deadline is not None and time.monotonic() >= deadline):
                return run

    def execute(
        self,
        name: str,
        input: Any,
        timeout: float | None,
        version: int | None,
        idempotency_key: str | None,
    ) -> Operation[Run]:
        flow_id = yield from self.start(name, input, version, idempotency_key)
        return (yield from self.wait(flow_id, timeout))

    def send_event(self, flow_id: str, event: str, data: Any) -> Operation[str]:
        path = _path("flow", flow_id, "events", event)
        status: str = yield Call("POST", path, _status, json={} if data is None else data)
        return status

    def publish_event(
        self, event: str, key: str, data: Any, ttl_seconds: float | None, first_only: bool
    ) -> Operation[Published]:
        body: dict[str, Any] = {"key": key, "data": {} if data is None else data}
        if ttl_seconds is not None:
            body["ttlSeconds"] = ttl_seconds
        if first_only:
            body["firstOnly"] = True
        published: Published = yield Call(
            "POST", _path("events", event), Published.model_validate, json=body
        )
        return published

    def retry(self, flow_id: str, input: Any) -> Operation[list[int]]:
        body = None if input is None else {"input": input}
        # A second retry of a run that goes on again is refused (409): never repeated.
        answer = yield Call("POST", _path("flow", flow_id, "retry"), json=body)
        return [int(action) for action in answer["actions"]]

    def rerun(self, flow_id: str, input: Any) -> Operation[str]:
        body = None if input is None else {"input": input}
        # A second try could start a second run: never repeated.
        answer = yield Call("POST", _path("flow", flow_id, "rerun"), json=body)
        return str(answer["flowId"])

    def lifecycle(self, flow_id: str, what: str) -> Operation[None]:
        yield Call("POST", _path("flow", flow_id, what))

    def list_runs(
        self, name: str | None, status: RunStatus | str | None, offset: int, limit: int
    ) -> Operation[RunPage]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if name is not None:
            params["name"] = name
        if status is not None:
            params["status"] = str(status)
        page: RunPage = yield Call(
            "GET", "/flow", RunPage.model_validate, params=params, idempotent=True
        )
        return page

    def history(self, flow_id: str) -> Operation[list[dict[str, Any]]]:
        answer = yield Call("GET", _path("flow", flow_id, "history"), idempotent=True)
        return list(answer["history"])


_OPS = _Operations()


def _settings(
    url: str | None,
    timeout_seconds: float | None,
    retries: int | None,
    credentials: Credentials,
) -> ClientSettings:
    """The ``ORCHY_*`` settings, with the arguments that were given instead."""
    token = SecretStr(credentials.token) if credentials.token is not None else None
    given = {
        "url": url,
        "timeout_seconds": timeout_seconds,
        "client_retries": retries,
        "token": token,
        "ca_bundle": credentials.ca_bundle,
        "client_cert": credentials.client_cert,
        "client_key": credentials.client_key,
    }
    return ClientSettings().model_copy(
        update={name: value for name, value in given.items() if value is not None}
    )


def _action_settings(
    retry_count: int | None,
    retry_after_seconds: float | None,
    retry_policy: str | None,
    timeout_seconds: float | None,
    poll_timeout_seconds: float | None,
) -> dict[str, Any]:
    return {
        "retryCount": retry_count,
        "retryAfterSeconds": retry_after_seconds,
        "retryPolicy": retry_policy,
        "timeoutSeconds": timeout_seconds,
        "pollTimeoutSeconds": poll_timeout_seconds,
    }


class Client:
    """The blocking client. ``url``, ``timeout_seconds`` and ``retries`` default to
    ``ORCHY_URL``, ``ORCHY_TIMEOUT_SECONDS`` and ``ORCHY_CLIENT_RETRIES`` (see
    ``ClientSettings``); ``token`` (sent as ``Authorization: Bearer``), ``ca_bundle`` (the
    CA of an HTTPS server), ``client_cert`` and ``client_key`` (for a server that asks for a
    client certificate) to ``ORCHY_TOKEN``, ``ORCHY_CA_BUNDLE``, ``ORCHY_CLIENT_CERT`` and
    ``ORCHY_CLIENT_KEY``. Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        retries: int | None = None,
        token: str | None = None,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        settings: ClientSettings | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        credentials = Credentials(token, ca_bundle, client_cert, client_key)
        self.settings = settings or _settings(url, timeout_seconds, retries, credentials)
        self._transport = SyncTransport(self.settings, http)

    def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(self._transport.send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's connections."""
        self._transport.close()

    def register_workflow(self, definition: Mapping[str, Any] | Definable) -> Registered:
        """Registers a workflow definition (a dict, or a builder with ``to_json()``); an
        identical one changes nothing (``created`` False). ``Invalid`` names the problem."""
        return self._run(_OPS.register_workflow(definition))

    def register_action(
        self,
        name: str,
        *,
        retry_count: int | None = None,
        retry_after_seconds: float | None = None,
        retry_policy: str | None = None,
        timeout_seconds: float | None = None,
        poll_timeout_seconds: float | None = None,
    ) -> ActionSettings:
        """Stores a user action's retry and timeout settings (those left None take the
        server's defaults); answers them as stored."""
        settings = _action_settings(
            retry_count, retry_after_seconds, retry_policy, timeout_seconds, poll_timeout_seconds
        )
        return self._run(_OPS.register_action(name, settings))

    def start(
        self,
        name: str,
        input: Any = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Starts a run of workflow ``name`` (its latest version, or ``version``); its flow id.
        With ``idempotency_key`` a second start answers the first run's id, and the call is
        retried on 503 and connection errors; without one it never is."""
        return self._run(_OPS.start(name, input, version, idempotency_key))

    def get(self, flow_id: str) -> Run:
        """The run as it is now. ``NotFound`` when there is no such run."""
        return self._run(_OPS.get(flow_id))

    def wait(self, flow_id: str, timeout: float | None = None) -> Run:
        """The run once it has ended, or as it is when ``timeout`` seconds are over (None:
        until it ends); check ``Run.ended``, or call ``Run.result()``."""
        return self._run(_OPS.wait(flow_id, timeout))

    def execute(
        self,
        name: str,
        input: Any = None,
        timeout: float | None = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """``start`` then ``wait``: the run once ended (or at ``timeout``). ``Run.result()``
        gives its output, or raises ``RunFailed`` with the reason."""
        return self._run(_OPS.execute(name, input, timeout, version, idempotency_key))

    def send_event(self, flow_id: str, event: str, data: Any = None) -> str:
        """Sends ``event`` with ``data`` to a run: ``delivered``, ``buffered`` (no wait for it
        yet) or ``held`` (the run is paused). ``Conflict`` when the run has ended."""
        return self._run(_OPS.send_event(flow_id, event, data))

    def publish_event(
        self,
        event: str,
        key: str,
        data: Any = None,
        *,
        ttl_seconds: float | None = None,
        first_only: bool = False,
    ) -> Published:
        """Delivers ``event`` to every run waiting for it with correlation key ``key`` (only
        the longest waiting one with ``first_only``), or keeps it ``ttl_seconds`` for waits
        to come."""
        return self._run(_OPS.publish_event(event, key, data, ttl_seconds, first_only))

    def pause(self, flow_id: str) -> None:
        """Pauses a RUNNING run (``Conflict`` otherwise)."""
        self._run(_OPS.lifecycle(flow_id, "pause"))

    def resume(self, flow_id: str) -> None:
        """Resumes a PAUSED run (``Conflict`` otherwise)."""
        self._run(_OPS.lifecycle(flow_id, "resume"))

    def terminate(self, flow_id: str) -> None:
        """Ends a run as TERMINATED (``Conflict`` when it has already ended)."""
        self._run(_OPS.lifecycle(flow_id, "terminate"))

    def retry(self, flow_id: str, input: Any = None) -> list[int]:
        """Lets a FAILED or TERMINATED run go on from the actions that failed (or were open
        when it was terminated), each at a fresh attempt, keeping all that completed.
        ``input`` replaces the input of the one user task started again. Returns the ids of
        the actions started again. Raises ``Conflict`` unless the run is FAILED or
        TERMINATED, ``NotFound`` for an unknown run."""
        return self._run(_OPS.retry(flow_id, input))

    def rerun(self, flow_id: str, input: Any = None) -> str:
        """Starts a new run of the run's workflow version with its input (or ``input``);
        returns the new run's id."""
        return self._run(_OPS.rerun(flow_id, input))

    def list_runs(
        self,
        name: str | None = None,
        status: RunStatus | str | None = None,
        *,
        offset: int = 0,
        limit: int = 50,
    ) -> RunPage:
        """One page of runs, newest first; pass ``page.next_offset`` for the next."""
        return self._run(_OPS.list_runs(name, status, offset, limit))

    def history(self, flow_id: str) -> list[dict[str, Any]]:
        """Every transition of the run, in order (``at``, ``event`` and what it concerns)."""
        return self._run(_OPS.history(flow_id))


class AsyncClient:
    """The asyncio client: ``Client``'s methods, awaited. Use it as an async context
    manager, or call ``aclose()``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_seconds: float | None = None,
        retries: int | None = None,
        token: str | None = None,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        settings: ClientSettings | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        credentials = Credentials(token, ca_bundle, client_cert, client_key)
        self.settings = settings or _settings(url, timeout_seconds, retries, credentials)
        self._transport = AsyncTransport(self.settings, http)

    async def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._transport.send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the client's connections."""
        await self._transport.aclose()

    async def register_workflow(self, definition: Mapping[str, Any] | Definable) -> Registered:
        """See ``Client.register_workflow``."""
        return await self._run(_OPS.register_workflow(definition))

    async def register_action(
        self,
        name: str,
        *,
        retry_count: int | None = None,
        retry_after_seconds: float | None = None,
        retry_policy: str | None = None,
        timeout_seconds: float | None = None,
        poll_timeout_seconds: float | None = None,
    ) -> ActionSettings:
        """See ``Client.register_action``."""
        settings = _action_settings(
            retry_count, retry_after_seconds, retry_policy, timeout_seconds, poll_timeout_seconds
        )
        return await self._run(_OPS.register_action(name, settings))

    async def start(
        self,
        name: str,
        input: Any = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """See ``Client.start``."""
        return await self._run(_OPS.start(name, input, version, idempotency_key))

    async def get(self, flow_id: str) -> Run:
        """See ``Client.get``."""
        return await self._run(_OPS.get(flow_id))

    async def wait(self, flow_id: str, timeout: float | None = None) -> Run:
        """See ``Client.wait``."""
        return await self._run(_OPS.wait(flow_id, timeout))

    async def execute(
        self,
        name: str,
        input: Any = None,
        timeout: float | None = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """See ``Client.execute``."""
        return await self._run(_OPS.execute(name, input, timeout, version, idempotency_key))

    async def send_event(self, flow_id: str, event: str, data: Any = None) -> str:
        """See ``Client.send_event``."""
        return await self._run(_OPS.send_event(flow_id, event, data))

    async def publish_event(
        self,
        event: str,
        key: str,
        data: Any = None,
        *,
        ttl_seconds: float | None = None,
        first_only: bool = False,
    ) -> Published:
        """See ``Client.publish_event``."""
        return await self._run(_OPS.publish_event(event, key, data, ttl_seconds, first_only))

    async def pause(self, flow_id: str) -> None:
        """See ``Client.pause``."""
        await self._run(_OPS.lifecycle(flow_id, "pause"))

    async def resume(self, flow_id: str) -> None:
        """See ``Client.resume``."""
        await self._run(_OPS.lifecycle(flow_id, "resume"))

    async def terminate(self, flow_id: str) -> None:
        """See ``Client.terminate``."""
        await self._run(_OPS.lifecycle(flow_id, "terminate"))

    async def retry(self, flow_id: str, input: Any = None) -> list[int]:
        """See ``Client.retry``."""
        return await self._run(_OPS.retry(flow_id, input))

    async def rerun(self, flow_id: str, input: Any = None) -> str:
        """See ``Client.rerun``."""
        return await self._run(_OPS.rerun(flow_id, input))

    async def list_runs(
        self,
        name: str | None = None,
        status: RunStatus | str | None = None,
        *,
        offset: int = 0,
        limit: int = 50,
    ) -> RunPage:
        """See ``Client.list_runs``."""
        return await self._run(_OPS.list_runs(name, status, offset, limit))

    async def history(self, flow_id: str) -> list[dict[str, Any]]:
        """See ``Client.history``."""
        return await self._run(_OPS.history(flow_id))


__all__ = [
    "ActionSettings",
    "ActionState",
    "AsyncClient",
    "Client",
    "Definable",
    "Delivery",
    "Published",
    "Registered",
    "Run",
    "RunLink",
    "RunPage",
    "RunStatus",
    "RunSummary",
]
