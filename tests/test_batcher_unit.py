"""The worker's result batcher against a real server: results that finish while a request is
out go together in the next one, and a request offers its slots to the tasks its results
start.

The server is ``orchy serve`` in a process of its own: the batcher is the worker's side, and
mutation testing (README, "Mutation testing") then sees only the worker's code run here."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from app.jsontypes import JSONObject
from orchy.worker.batcher import Handoff, ResultBatcher
from orchy.worker.client import OrchyClient, Reply, ReplyStatus, Task, UnencodableBodyError
from tests.helpers.http import Api, api_of, free_port
from tests.helpers.processes import clean_env
from tests.helpers.waiting import unique, wait_until

T = TypeVar("T")
# A deadline on every answer: a batcher that lost a result fails its test rather than hang.
ANSWER_SECONDS = 10.0


async def answered(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, ANSWER_SECONDS)


class RecordingClient(OrchyClient):
    """The real client, noting what each ``POST /tasks/results`` carried."""

    def __init__(self, server_url: str) -> None:
        super().__init__(server_url, timeout_seconds=10, retries=0, backoff_seconds=0)
        self.requests: list[tuple[int, JSONObject | None]] = []
        self.senders: list[str] = []  # the name of the task that sent each request

    async def results(
        self, encoded_results: list[bytes], take_next: JSONObject | None = None
    ) -> tuple[list[Reply], list[Task]]:
        self.requests.append((len(encoded_results), take_next))
        sender = asyncio.current_task()
        self.senders.append("" if sender is None else sender.get_name())
        return await super().results(encoded_results, take_next)


@pytest.fixture(scope="module")
def server_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``orchy serve`` of this virtualenv on the tests' Redis, with one script process."""
    port = free_port()
    # The partition count of the tests' Redis (a server with another refuses to start).
    env = clean_env(ORCHY_REDIS_URL=redis_url, ORCHY_JS_PROCESSES="1", ORCHY_PORT=str(port))
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "orchy"), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_until(lambda: answers(url), what=f"orchy serve: {log}"))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(ANSWER_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def answers(url: str) -> bool:
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"{url}/health")).status_code == 200
        except httpx.TransportError:
            return False


@pytest_asyncio.fixture
async def api(server_url: str) -> AsyncIterator[Api]:
    async with api_of(server_url) as api:
        yield api


@pytest_asyncio.fixture
async def client(server_url: str) -> AsyncIterator[RecordingClient]:
    async with RecordingClient(server_url) as client:
        yield client


async def leased(api: Api, runs: int) -> tuple[str, str, list[Task]]:
    """``runs`` runs of a two-step workflow, and their first steps' tasks, leased."""
    first, second = unique("first"), unique("second")
    name = unique("wf")
    await api.register(
        {
            "name": name,
            "rootAction": 1,
            "actions": [
                {"id": 1, "type": "user", "name": first, "next": {"default": [2]}},
                {"id": 2, "type": "user", "name": second, "parameters": {"n": "{$.1.output.n}"}},
            ],
        }
    )
    for n in range(runs):
        await api.start(name, {"n": n})
    tasks = await answered(polled(api, first, runs))
    return first, second, [Task.from_json(task) for task in tasks]


async def polled(api: Api, action: str, count: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    while len(tasks) < count:
        tasks += await api.poll([action], most=count - len(tasks))
    return tasks


async def test_a_lone_result_goes_at_once(api: Api, client: RecordingClient) -> None:
    _, second, (task,) = await leased(api, 1)
    batcher = ResultBatcher(client, max_batch=10)

    reply = await answered(batcher.complete(task.task_id, {"n": 7}))

    assert reply.ok
    assert client.requests == [(1, None)]
    (next_task,) = await api.poll([second], most=5)
    assert next_task["input"] == {"n": 7}


async def test_results_finishing_together_go_in_batches_of_at_most_max(
    api: Api, client: RecordingClient
) -> None:
    _, second, tasks = await leased(api, 5)
    batcher = ResultBatcher(client, max_batch=2)

    replies = await answered(
        asyncio.gather(
            *(batcher.complete(task.task_id, {"n": index}) for index, task in enumerate(tasks))
        )
    )

    assert [reply.status for reply in replies] == [ReplyStatus.OK] * 5
    assert client.requests == [(2, None), (2, None), (1, None)]
    # The task that sends them is named, so that it can be told apart in a dump of tasks.
    assert client.senders == ["orchy-results"] * 3
    started = await answered(polled(api, second, 5))
    assert sorted(task["input"]["n"] for task in started) == [0, 1, 2, 3, 4]


async def test_each_result_gets_its_own_reply(api: Api, client: RecordingClient) -> None:
    _, _, (done, again) = await leased(api, 2)
    batcher = ResultBatcher(client, max_batch=10)
    assert (await answered(batcher.complete(done.task_id, {"n": 1}))).ok
    client.requests.clear()

    stale, fresh = await answered(
        asyncio.gather(
            batcher.complete(done.task_id, {"n": 2}), batcher.complete(again.task_id, {"n": 3})
        )
    )

    assert client.requests == [(2, None)]
    assert stale.status is ReplyStatus.STALE
    assert fresh.ok


async def test_a_batch_offers_its_slots_to_the_tasks_its_results_start(
    api: Api, client: RecordingClient
) -> None:
    _, second, tasks = await leased(api, 3)
    started: list[Task] = []
    handoff = Handoff("worker-1", [second], lambda: True, started.append)
    batcher = ResultBatcher(client, max_batch=2, handoff=handoff)

    replies = await answered(
        asyncio.gather(
            *(batcher.complete(task.task_id, {"n": index}) for index, task in enumerate(tasks))
        )
    )

    assert all(reply.ok for reply in replies)
    offer = {"workerId": "worker-1", "actions": [second]}
    assert client.requests == [(2, {**offer, "max": 2}), (1, {**offer, "max": 1})]
    assert sorted(task.input["n"] for task in started) == [0, 1, 2]
    assert {task.name for task in started} == {second}
    assert await api.poll([second], most=5, wait=0) == []


async def test_no_slots_are_offered_once_the_worker_stops_taking_work(
    api: Api, client: RecordingClient
) -> None:
    _, second, (task,) = await leased(api, 1)
    started: list[Task] = []
    batcher = ResultBatcher(
        client, max_batch=2, handoff=Handoff("worker-1", [second], lambda: False, started.append)
    )

    assert (await answered(batcher.complete(task.task_id, {"n": 4}))).ok

    assert client.requests == [(1, None)]
    assert started == []
    assert len(await api.poll([second], most=5)) == 1


async def test_a_batch_refused_whole_is_sent_again_one_result_at_a_time(
    api: Api, client: RecordingClient
) -> None:
    # An integer beyond 64 bits in one output makes the server refuse the whole request.
    _, second, (good, bad) = await leased(api, 2)
    started: list[Task] = []
    handoff = Handoff("worker-1", [second], lambda: True, started.append)
    batcher = ResultBatcher(client, max_batch=10, handoff=handoff)

    accepted, refused = await answered(
        asyncio.gather(
            batcher.complete(good.task_id, {"n": 1}),
            batcher.complete(bad.task_id, {"n": 2**70}),
        )
    )

    assert accepted.ok
    assert refused.status is ReplyStatus.REJECTED
    offer = {"workerId": "worker-1", "actions": [second]}
    assert client.requests == [
        (2, {**offer, "max": 2}),
        (1, {**offer, "max": 1}),
        (1, {**offer, "max": 1}),
    ]
    assert [task.input for task in started] == [{"n": 1}]
    assert (await api.flow(bad.flow_id))["status"] == "RUNNING"


async def test_a_lone_result_refused_is_not_sent_again(api: Api, client: RecordingClient) -> None:
    _, _, (bad,) = await leased(api, 1)
    batcher = ResultBatcher(client, max_batch=10)

    refused = await answered(batcher.complete(bad.task_id, {"n": 2**70}))

    assert refused.status is ReplyStatus.REJECTED
    assert client.requests == [(1, None)]


async def test_results_refused_whole_without_an_offer_are_sent_again_without_one(
    api: Api, client: RecordingClient
) -> None:
    _, second, (bad, good, other) = await leased(api, 3)
    batcher = ResultBatcher(client, max_batch=10)

    replies = await answered(
        asyncio.gather(
            batcher.complete(bad.task_id, {"n": 2**70}),
            batcher.complete(good.task_id, {"n": 5}),
            batcher.complete(other.task_id, {"n": 6}),
        )
    )

    assert [reply.status for reply in replies] == [
        ReplyStatus.REJECTED,
        ReplyStatus.OK,
        ReplyStatus.OK,
    ]
    assert client.requests == [(3, None), (1, None), (1, None), (1, None)]
    started = await answered(polled(api, second, 2))
    assert sorted(task["input"]["n"] for task in started) == [5, 6]


async def test_a_failure_is_sent_with_its_error_and_whether_to_retry(
    api: Api, client: RecordingClient
) -> None:
    first, _, (final, retried) = await leased(api, 2)
    batcher = ResultBatcher(client, max_batch=10)

    final_reply, retried_reply = await answered(
        asyncio.gather(
            batcher.fail(final.task_id, "card declined", retryable=False),
            batcher.fail(retried.task_id, "busy", retryable=True),
        )
    )

    assert final_reply.ok
    assert retried_reply.ok
    failed = await api.flow(final.flow_id)  # a result is applied before its reply
    assert failed["status"] == "FAILED"
    assert "card declined" in str(failed)
    (again,) = await answered(polled(api, first, 1))
    assert (again["flowId"], again["attempt"]) == (retried.flow_id, 2)
    assert (await api.flow(retried.flow_id))["status"] == "RUNNING"


async def test_an_output_that_is_not_json_is_refused_at_once(client: RecordingClient) -> None:
    batcher = ResultBatcher(client, max_batch=10)

    with pytest.raises(UnencodableBodyError):
        await batcher.complete("f.1.1", {"x": float("nan")})

    assert client.requests == []


async def test_a_request_that_raises_fails_every_result_it_carried(server_url: str) -> None:
    # A closed session raises, where a server that is away gives an UNREACHABLE reply.
    client = RecordingClient(server_url)
    client._http()
    await client.aclose()
    batcher = ResultBatcher(client, max_batch=10)

    outcomes = await answered(
        asyncio.gather(
            batcher.complete("f.1.1", {}),
            batcher.fail("f.1.2", "x", retryable=True),
            return_exceptions=True,
        )
    )

    assert [type(outcome) for outcome in outcomes] == [RuntimeError, RuntimeError]
    assert client.requests == [(2, None)]
    sender = batcher._sender
    assert sender is not None
    with pytest.raises(RuntimeError):
        await answered(sender)  # the sender ends with the error too
