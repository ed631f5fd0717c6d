"""Workers: poll, results, heartbeats. Every route here is a ``WorkerRoute``
(``app/api/worker_routes.py``): documented by FastAPI, served by the fast path, its endpoint
called with its path parameters, its validated body and the request.

A worker token limited to some action names (``Principal.actions``) may poll, and offer in a
``next``, only those. Results, failures and heartbeats are not checked against the task's
action: a task id carries the lease secret that only the poll (or ``next``) leasing it was
told, so a limited worker holds ids of its own actions' tasks only, and checking would cost
a read of the task per result."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request, Response

from app.api.deps import engine_and_settings
from app.api.errors import error_for
from app.api.hangup import watch_disconnect
from app.api.models import (
    Accepted,
    Completed,
    CompleteRequest,
    FailRequest,
    PollRequest,
    PollResponse,
    ResultsRequest,
    ResultsResponse,
    ResultStatus,
    TakeNextRequest,
)
from app.api.openapi_docs import request_example, responses
from app.api.security.guard import require_actions
from app.api.security.permissions import Permission, needs
from app.api.worker_routes import WorkerRoute
from app.engine.engine import Engine, Failure, Result, Success, TakeNext
from app.engine.errors import EngineError, Invalid, TooLarge
from app.settings import Settings
from app.store import LeasedTask

router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=WorkerRoute)
JSON_MEDIA_TYPE = "application/json"
OK = 200
_STATUS_OK = b'{"status":"ok"}'
_STATUS_HELD = b'{"status":"held"}'
TASK_ID = "0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b.1.1"
TASK_EXAMPLE = {
    "taskId": TASK_ID,
    "flowId": "0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b",
    "actionId": 1,
    "name": "query-db",
    "attempt": 1,
    "input": {"userId": 42},
}
POLL_EXAMPLE = {"workerId": "worker-1", "actions": ["query-db"], "max": 16, "waitSeconds": 20}
OUTPUT_EXAMPLE = {"user": {"gender": "FEMALE", "age": 30}, "email": "user42@example.com"}


def _json(body: bytes) -> Response:
    return Response(body, media_type=JSON_MEDIA_TYPE)


@router.post(
    "/poll",
    response_model=PollResponse,
    responses=responses({"tasks": [TASK_EXAMPLE]}, 413, 422),
    openapi_extra=needs(Permission.WORK, request_example(POLL_EXAMPLE)),
)
async def poll(request: PollRequest, http_request: Request) -> Response:
    """Leases up to ``max`` tasks of ``actions`` to ``workerId``, waiting up to
    ``waitSeconds`` (at most ``ORCHY_POLL_MAX_WAIT_SECONDS``) for one; ``tasks`` is empty
    when none came. Each task is leased for its action's ``timeoutSeconds``: answer it with
    ``/complete`` or ``/fail`` (or extend it with ``/heartbeat``) before then."""
    require_actions(http_request.scope, request.actions, "actions")
    engine, settings = await engine_and_settings(http_request)
    if request.max > settings.poll_max_tasks:
        raise Invalid(f"max: at most {settings.poll_max_tasks} tasks per poll")
    gone = asyncio.Event()
    # A poll nobody will read must not lease: its client's hang-up is watched for.
    watcher = asyncio.create_task(watch_disconnect(http_request.receive, gone))
    try:
        tasks = await engine.poll(
            request.workerId, request.actions, request.max, request.waitSeconds, gone
        )
    finally:
        watcher.cancel()
    return _json(b'{"tasks":' + _tasks_json(tasks, engine) + b"}")


def _tasks_json(tasks: list[LeasedTask], engine: Engine) -> bytes:
    """A list of leased tasks, each with its input spliced in as stored: no parse, no re-dump.
    With tracing on, each carries its attempt's span as ``traceparent``."""
    parts = []
    traced = engine.telemetry.tracing is not None
    for task in tasks:
        fields: dict[str, object] = {
            "taskId": task.task_id,
            "flowId": task.flow_id,
            "actionId": task.action_id,
            "name": task.name,
            "attempt": task.attempt,
        }
        if traced:
            fields["traceparent"] = engine.telemetry.traceparent(task.flow_id, task.task_id)
        head = orjson.dumps(fields)
        parts.append(head[:-1] + b',"input":' + task.input_json.encode() + b"}")
    return b"[" + b",".join(parts) + b"]"


@router.post(
    "/{task_id}/complete",
    response_model=Completed,
    responses=responses({"status": "ok"}, 404, 409, 413, 422),
    openapi_extra=needs(Permission.WORK, request_example({"output": OUTPUT_EXAMPLE})),
)
async def complete(task_id: str, request: CompleteRequest, http_request: Request) -> Response:
    """Applies the attempt's output (at most ``ORCHY_MAX_OUTPUT_BYTES``): ``ok``, or
    ``held`` while the run is paused. 404 for an unknown task, 409 when the attempt is
    stale or already answered; either way nothing changes. With
    ``next``, as in ``/tasks/results``, the user tasks the output starts are leased to that
    worker at once and answered in ``tasks``."""
    engine, settings = await engine_and_settings(http_request)
    take_next = _take_next(request.next, settings, http_request)
    applied = await engine.apply_results([(task_id, Success(request.output))], take_next)
    [answer] = applied.answers
    if isinstance(answer, EngineError):
        raise answer
    status = b'{"status":"held"' if answer == "held" else b'{"status":"ok"'
    if take_next is None:
        return _json(status + b"}")
    return _json(status + b',"tasks":' + _tasks_json(applied.leased, engine) + b"}")


@router.post(
    "/{task_id}/fail",
    response_model=Accepted,
    responses=responses({"status": "ok"}, 404, 409, 413, 422),
    openapi_extra=needs(
        Permission.WORK, request_example({"error": "SMTP server refused", "retryable": True})
    ),
)
async def fail(task_id: str, request: FailRequest, http_request: Request) -> Response:
    """Reports a failed attempt: retried per the action's policy, unless ``retryable`` is
    false or the retries are spent, when the action FAILS (taking its ``error`` branch if it
    has one). Answers as ``/complete`` does."""
    engine, _ = await engine_and_settings(http_request)
    answer = await engine.fail_task(task_id, request.error, request.retryable)
    return _json(_STATUS_HELD if answer == "held" else _STATUS_OK)


@router.post(
    "/results",
    response_model=ResultsResponse,
    responses=responses(
        {
            "results": [{"taskId": TASK_ID, "status": 200, "held": False, "error": None}],
            "tasks": [{**TASK_EXAMPLE, "taskId": "0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b.2.1"}],
        },
        413,
        422,
    ),
    openapi_extra=needs(
        Permission.WORK,
        request_example(
            {
                "results": [{"taskId": TASK_ID, "output": OUTPUT_EXAMPLE}],
                "next": {"workerId": "worker-1", "actions": ["query-db", "sendEmail"], "max": 16},
            }
        ),
    ),
)
async def results(request: ResultsRequest, http_request: Request) -> Response:
    """Applies many results in one request, each as its own ``/complete`` or ``/fail`` would,
    and answers a status for each: one failing result never affects the others."""
    engine, settings = await engine_and_settings(http_request)
    if len(request.results) > settings.poll_max_tasks:
        raise Invalid(f"results: at most {settings.poll_max_tasks} per request")
    take_next = _take_next(request.next, settings, http_request)
    statuses: list[ResultStatus | None] = [None] * len(request.results)
    accepted: list[tuple[int, tuple[str, Result]]] = []
    for index, item in enumerate(request.results):
        if item.output is not None:
            try:
                size = len(orjson.dumps(item.output))
            except orjson.JSONEncodeError as error:
                statuses[index] = _refused(item.taskId, error)
                continue
            if size > settings.max_output_bytes:
                too_large = (
                    f"output is {size} bytes; the limit is {settings.max_output_bytes} bytes "
                    "(ORCHY_MAX_OUTPUT_BYTES)"
                )
                statuses[index] = _refused(item.taskId, TooLarge(too_large))
                continue
            accepted.append((index, (item.taskId, Success(item.output))))
        else:
            accepted.append((index, (item.taskId, Failure(item.error or "", item.retryable))))
    applied = await engine.apply_results([result for _, result in accepted], take_next)
    for (index, (task_id, _)), answer in zip(accepted, applied.answers, strict=True):
        if isinstance(answer, EngineError):
            statuses[index] = _refused(task_id, answer)
        else:
            statuses[index] = ResultStatus(taskId=task_id, status=OK, held=answer == "held")
    replies = orjson.dumps([status.model_dump() for status in statuses if status is not None])
    return _json(
        b'{"results":' + replies + b',"tasks":' + _tasks_json(applied.leased, engine) + b"}"
    )


def _take_next(
    offer: TakeNextRequest | None, settings: Settings, http_request: Request
) -> TakeNext | None:
    if offer is None:
        return None
    require_actions(http_request.scope, offer.actions, "next.actions")
    if offer.max > settings.poll_max_tasks:
        raise Invalid(f"next.max: at most {settings.poll_max_tasks} tasks")
    return TakeNext(offer.workerId, frozenset(offer.actions), offer.max)


def _refused(task_id: str, error: Exception) -> ResultStatus:
    status, message = error_for(error)
    return ResultStatus(taskId=task_id, status=status, error=message)


@router.post(
    "/{task_id}/heartbeat",
    response_model=Accepted,
    responses=responses({"status": "ok"}, 404, 409, 422),
    openapi_extra=needs(Permission.WORK),
)
async def heartbeat(task_id: str, http_request: Request) -> Response:
    """Extends the attempt's lease by the action's ``timeoutSeconds``."""
    engine, _ = await engine_and_settings(http_request)
    await engine.heartbeat(task_id)
    return _json(_STATUS_OK)
