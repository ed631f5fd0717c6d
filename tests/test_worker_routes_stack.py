"""The worker routes (``/tasks/poll``, ``/results``, ``/{id}/complete``, ``/fail``,
``/heartbeat``) are served inside the application's middleware stack, answer errors the way
every other route does, and stay documented; ``/complete`` takes a ``next`` offer."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.engine.engine import Engine, Success
from app.engine.status import RunStatus
from app.settings import Settings
from app.store import Store
from app.store.coalesce import Coalescer
from tests.helpers.definitions import user, workflow
from tests.helpers.http import Api, ServerThread, serving
from tests.helpers.waiting import unique, wait_until

WORKER_ROUTES = [
    "/tasks/poll",
    "/tasks/results",
    "/tasks/{task_id}/complete",
    "/tasks/{task_id}/fail",
    "/tasks/{task_id}/heartbeat",
]
SEEN_HEADER = "x-seen-by"


class CountingMiddleware:
    """A pure ASGI middleware such as a user adds for every route (metrics, tracing): it
    counts requests by path and marks each response with a header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.paths[scope["path"]] += 1

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (SEEN_HEADER.encode(), b"1")],
                }
            await send(message)

        await self.app(scope, receive, marked)


@pytest.fixture(scope="module")
def counted_server(settings: Settings, redis_client: Any) -> Iterator[ServerThread]:
    with serving(settings, CountingMiddleware) as thread:
        yield thread


@pytest_asyncio.fixture
async def counted(counted_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=counted_server.url, timeout=30) as client:
        yield client


def counting_middleware(server: ServerThread) -> CountingMiddleware:
    """The instance the app built from its middleware list."""
    layer: Any = server.app.middleware_stack
    while layer is not None and not isinstance(layer, CountingMiddleware):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, CountingMiddleware)
    return layer


async def test_a_middleware_added_for_every_route_covers_the_worker_routes(
    counted_server: ServerThread, counted: httpx.AsyncClient
) -> None:
    api = Api(counted)
    name = unique("stack")
    await api.register(workflow(name, user(1, f"{name}-a", {"default": [2]}), user(2, f"{name}-b")))
    first, second = await api.start(name), await api.start(name)
    answers: list[httpx.Response] = []

    poll = {"workerId": "w", "actions": [f"{name}-a"], "max": 2, "waitSeconds": 5}
    answers.append(await counted.post("/tasks/poll", json=poll))
    tasks = {task["flowId"]: task["taskId"] for task in answers[-1].json()["tasks"]}
    assert set(tasks) == {first, second}
    answers.append(await counted.post(f"/tasks/{tasks[first]}/heartbeat"))
    answers.append(await counted.post(f"/tasks/{tasks[first]}/complete", json={"output": {}}))
    answers.append(
        await counted.post(f"/tasks/{tasks[second]}/fail", json={"error": "no", "retryable": False})
    )
    second_step = await api.poll_one(f"{name}-b")
    answers.append(
        await counted.post(
            "/tasks/results", json={"results": [{"taskId": second_step["taskId"], "output": {}}]}
        )
    )
    # Errors too: they leave through the same stack.
    answers.append(await counted.post(f"/tasks/{tasks[first]}/complete", json={"output": {}}))
    answers.append(await counted.post("/tasks/poll", content=b"not json"))
    answers.append(await counted.get("/health"))
    answers.append(await counted.get(f"/flow/{first}"))

    assert [answer.status_code for answer in answers] == [
        200, 200, 200, 200, 200, 409, 422, 200, 200
    ]  # fmt: skip
    assert all(answer.headers.get(SEEN_HEADER) == "1" for answer in answers)
    paths = counting_middleware(counted_server).paths
    for path in [
        "/tasks/poll",
        f"/tasks/{tasks[first]}/heartbeat",
        f"/tasks/{tasks[first]}/complete",
        f"/tasks/{tasks[second]}/fail",
        "/tasks/results",
        "/health",
        f"/flow/{first}",
    ]:
        assert paths[path] >= 1, f"the middleware never saw {path}"
    assert (await api.flow(first))["status"] == "COMPLETED"


NOT_UTF8 = b'{"name": "\xff\xfe"}'
TOO_LARGE_OUTPUT = b'{"output": {"x": "' + b"a" * (1024 * 1024 + 10) + b'"}}'
UNKNOWN = "x.1.1"
NOT_A_TASK_ID = "not found: task ids look like <flowId>.<n>.<n>.<secret>, as a poll hands them out"

# (method, path, body) -> (status, error): the worker routes' errors, word for word as the
# app's handlers answer them on every other route (validation under "body", etc.).
ERROR_CASES: list[tuple[str, bytes, int, str]] = [
    (
        "/tasks/poll",
        b'{"workerId": "w", "actions": ["a"], "max": 0}',
        422,
        "body.max: Input should be greater than or equal to 1",
    ),
    ("/tasks/poll", b'{"workerId": "w"}', 422, "body.actions: Field required"),
    (
        "/tasks/poll",
        b"not json",
        422,
        "body: invalid JSON: Expecting value: line 1 column 1 (char 0)",
    ),
    ("/tasks/poll", b"", 422, "body: Field required"),
    (
        "/tasks/poll",
        b"[1]",
        422,
        "body: Input should be a valid dictionary or object to extract fields from",
    ),
    ("/tasks/poll", NOT_UTF8, 422, "body: not UTF-8 (byte 10)"),
    (
        "/tasks/poll",
        b'{"workerId": "w", "actions": ["a"], "max": 100000}',
        422,
        "max: at most 500 tasks per poll",
    ),
    (
        "/tasks/results",
        b'{"results": [{"taskId": "x.1.1"}]}',
        422,
        "body.results.0: Value error, give exactly one of output (completed) or error (failed)",
    ),
    (
        "/tasks/results",
        b'{"results": [{"taskId": "x", "output": {}}], "next": {"workerId": "w", "actions": []}}',
        422,
        "body.next.actions: List should have at least 1 item after validation, not 0; "
        "body.next.max: Field required",
    ),
    (f"/tasks/{UNKNOWN}/complete", b'{"output": {}}', 404, f"task '{UNKNOWN}' {NOT_A_TASK_ID}"),
    (
        f"/tasks/{UNKNOWN}/complete",
        b'{"output": 3}',
        422,
        "body.output: Input should be a valid dictionary",
    ),
    (f"/tasks/{UNKNOWN}/complete", b"", 422, "body: Field required"),
    (f"/tasks/{UNKNOWN}/complete", NOT_UTF8, 422, "body: not UTF-8 (byte 10)"),
    (
        f"/tasks/{UNKNOWN}/complete",
        TOO_LARGE_OUTPUT,
        413,
        f"the request body is {len(TOO_LARGE_OUTPUT)} bytes; the limit is 1048576 bytes "
        "(ORCHY_MAX_OUTPUT_BYTES)",
    ),
    (
        f"/tasks/{UNKNOWN}/complete",
        b'{"output": {}, "next": {"workerId": "w", "actions": ["a"], "max": 100000}}',
        422,
        "next.max: at most 500 tasks",
    ),
    (
        "/tasks/nodots/complete",
        b'{"output": {}}',
        404,
        f"task 'nodots' {NOT_A_TASK_ID}",
    ),
    (
        f"/tasks/{UNKNOWN}/fail",
        b'{"error": ""}',
        422,
        "body.error: String should have at least 1 character",
    ),
    (
        f"/tasks/{UNKNOWN}/fail",
        b'{"error": "e", "retryable": "maybe"}',
        422,
        "body.retryable: Input should be a valid boolean",
    ),
    (f"/tasks/{UNKNOWN}/heartbeat", b"", 404, f"task '{UNKNOWN}' {NOT_A_TASK_ID}"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    ERROR_CASES,
    ids=[f"{path} {body[:40]!r}" for path, body, _, _ in ERROR_CASES],
)
async def test_worker_route_errors_are_answered_as_everywhere(
    http: httpx.AsyncClient, path: str, body: bytes, status: int, error: str
) -> None:
    response = await http.post(path, content=body)
    assert response.status_code == status, response.text
    assert response.json() == {"error": error}
    assert response.headers["content-type"] == "application/json"


async def test_bad_bodies_get_the_same_error_on_worker_and_other_routes(
    http: httpx.AsyncClient,
) -> None:
    for body in (b"not json", b"", NOT_UTF8, b"[1]"):
        worker = await http.post("/tasks/x.1.1/fail", content=body)
        other = await http.post("/flow/execute", content=body)
        assert (worker.status_code, worker.json()) == (other.status_code, other.json()), body


async def test_a_wrong_method_on_a_worker_route_is_405_as_elsewhere(
    http: httpx.AsyncClient,
) -> None:
    worker = await http.put("/tasks/poll")
    other = await http.put("/flow/execute")
    assert (worker.status_code, worker.json()) == (405, {"error": "Method Not Allowed"})
    assert (other.status_code, other.json()) == (405, {"error": "Method Not Allowed"})


async def test_complete_with_next_leases_the_tasks_it_starts(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("complete-next")
    step_a, step_b = f"{name}-a", f"{name}-b"
    await api.register(
        workflow(name, user(1, step_a, {"default": [2]}), user(2, step_b, seen="{$.1.output.n}"))
    )
    flow_id = await api.start(name)
    task = await api.poll_one(step_a)
    offer = {"workerId": "w", "actions": [step_b], "max": 4}
    response = await http.post(
        f"/tasks/{task['taskId']}/complete", json={"output": {"n": 7}, "next": offer}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok"
    [leased] = answer["tasks"]
    assert (leased["flowId"], leased["name"], leased["actionId"], leased["attempt"]) == (
        flow_id,
        step_b,
        2,
        1,
    )
    assert leased["input"] == {"seen": 7}
    # Leased to this worker: not left in the queue for anyone else.
    assert await api.poll([step_b], wait=0) == []
    done = await http.post(f"/tasks/{leased['taskId']}/complete", json={"output": {}})
    assert done.json() == {"status": "ok"}  # no next: the answer as it always was
    assert (await api.flow(flow_id))["status"] == "COMPLETED"


async def test_complete_with_next_for_other_actions_queues_as_usual(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("complete-next-other")
    step_a, step_b = f"{name}-a", f"{name}-b"
    await api.register(workflow(name, user(1, step_a, {"default": [2]}), user(2, step_b)))
    await api.start(name)
    task = await api.poll_one(step_a)
    offer = {"workerId": "w", "actions": [f"{name}-other"], "max": 1}
    response = await http.post(
        f"/tasks/{task['taskId']}/complete", json={"output": {}, "next": offer}
    )
    assert response.json() == {"status": "ok", "tasks": []}
    assert len(await api.poll([step_b])) == 1


async def test_a_run_that_changes_between_poll_and_result_still_takes_the_result(
    api: Api, http: httpx.AsyncClient
) -> None:
    """The server keeps the runs of the tasks a poll leased, to plan their results without
    reading them again; a run that changed meanwhile (here: an event received, a pause and a
    resume) must be read again, not planned from the old copy."""
    name = unique("kept-run")
    step = f"{name}-a"
    await api.register(workflow(name, user(1, step, {"default": [2]}), user(2, f"{name}-b")))
    flow_id = await api.start(name)
    task = await api.poll_one(step)
    assert (await http.post(f"/flow/{flow_id}/pause")).status_code == 200
    assert (await http.post(f"/flow/{flow_id}/resume")).status_code == 200
    response = await api.complete(task["taskId"], {"n": 1})
    assert response.json() == {"status": "ok"}
    flow = await api.flow(flow_id)
    assert flow["status"] == "RUNNING"
    assert flow["actions"]["1"]["status"] == "COMPLETED"
    assert flow["actions"]["1"]["output"] == {"n": 1}
    assert len(await api.poll([f"{name}-b"])) == 1


async def test_a_poll_keeps_the_runs_of_its_tasks_for_their_results(
    server: ServerThread, api: Api
) -> None:
    """The runs of the tasks a poll leased are read once for the batch and kept, so that
    each task's result plans from the copy instead of reading its run again."""
    engine = server.app.state.engine
    name = unique("kept-at-poll")
    await api.register(workflow(name, user(1, f"{name}-a", {"default": [2]}), user(2, f"{name}-b")))
    flow_ids = {await api.start(name) for _ in range(3)}
    tasks = await api.poll([f"{name}-a"], most=3)
    assert {task["flowId"] for task in tasks} == flow_ids

    async def all_kept() -> bool:
        return all(flow_id in engine.runs for flow_id in flow_ids)

    await wait_until(all_kept, what="the polled runs kept")
    for task in tasks:
        assert (await api.complete(task["taskId"], {})).json() == {"status": "ok"}
    # Each copy served its result (a copy serves one transition).
    assert not any(flow_id in engine.runs for flow_id in flow_ids)
    assert len(await api.poll([f"{name}-b"], most=3)) == 3


async def test_a_result_sent_before_the_read_of_its_run_is_back_plans_from_that_read(
    store: Store, settings: Settings
) -> None:
    """A result that reaches the server before the read of its run (begun when its poll
    leased the task) is back waits for that read and takes its copy, rather than reading the
    run itself and letting the read land afterwards with a copy already out of date."""
    engine = Engine(store, settings)
    try:
        name = unique("read-in-flight")
        steps = [f"{name}-a", f"{name}-b"]
        definition = workflow(name, user(1, steps[0], {"default": [2]}), user(2, steps[1]))
        await engine.catalog.register_workflow(definition)
        [(flow_id, _)] = await engine.start_many(name, [{}], by="tester")
        for step in steps:
            [task] = await engine.poll("w", [step], 1, 0)
            applied = await engine.apply_results([(task.task_id, Success({}))])
            assert applied.answers == ["ok"]
            # The copy served this result: none is left behind for the next one.
            assert flow_id not in engine.runs
        assert (await engine.snapshot(flow_id)).status is RunStatus.COMPLETED
    finally:
        engine.close()


def test_the_schema_documents_the_worker_routes(server: ServerThread) -> None:
    paths = server.app.openapi()["paths"]
    for path in WORKER_ROUTES:
        operation = paths[path]["post"]
        assert operation["description"], path
        assert "200" in operation["responses"], path
        expected = {"422"}
        if "{task_id}" in path:
            expected |= {"404", "409"}
        if not path.endswith("/heartbeat"):  # the one route with no body
            expected.add("413")
        for status in expected:
            assert status in operation["responses"], (path, status)
    body = paths["/tasks/{task_id}/complete"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CompleteRequest"
    }
    schemas = server.app.openapi()["components"]["schemas"]
    assert "next" in schemas["CompleteRequest"]["properties"]
    assert "tasks" in schemas["Completed"]["properties"]


async def test_coalesced_commands_each_get_their_own_replies(redis_client: Any) -> None:
    """Commands issued in the same turn of the loop go out in one pipeline; each caller gets
    its replies in order, and a command's error is its own."""
    coalescer = Coalescer(redis_client)
    key = f"coalesce-{uuid.uuid4().hex}"
    await redis_client.hset(f"{key}-hash", "f", "v")
    calls = [coalescer.execute([("INCR", key), ("GET", key)]) for _ in range(20)]
    calls.append(coalescer.execute([("INCR", f"{key}-hash"), ("HGET", f"{key}-hash", "f")]))
    *counts, failing = await asyncio.gather(*calls)
    assert sorted(int(first) for first, _ in counts) == list(range(1, 21))
    assert all(int(second) == int(first) for first, second in counts)
    assert isinstance(failing[0], Exception) and failing[1] == "v"


async def test_a_cancelled_caller_does_not_hold_up_the_others(redis_client: Any) -> None:
    coalescer = Coalescer(redis_client)
    key = f"coalesce-{uuid.uuid4().hex}"
    gone = asyncio.ensure_future(coalescer.execute([("INCR", key)]))
    staying = asyncio.ensure_future(coalescer.execute([("INCR", key)]))
    await asyncio.sleep(0)
    gone.cancel()
    [reply] = await asyncio.wait_for(staying, 10)
    assert int(reply) in (1, 2)

    async def both_applied() -> bool:
        return int(await redis_client.get(key) or 0) == 2

    await wait_until(both_applied, what="both commands applied")
