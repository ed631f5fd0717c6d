"""Sends results in batches: while one ``POST /tasks/results`` is out, the results that
finish meanwhile wait and go together in the next one. A lone result goes at once, so
batching costs no latency; under load one request carries many results.

With a :class:`Handoff`, each request also offers the slots of its results to the tasks
those results start: the server leases them in the same request, and they start before
the results' own tasks let go of their slots, so the worker never holds more than its
concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from orchy.worker.client import OrchyClient, Reply, ReplyStatus, Task, encode_json
from orchy.worker.jsontypes import JSONObject


@dataclass(frozen=True)
class Handoff:
    worker_id: str
    actions: list[str]
    accepting: Callable[[], bool]  # False once the worker stops taking work
    start: Callable[[Task], None]


class ResultBatcher:
    def __init__(self, client: OrchyClient, max_batch: int, handoff: Handoff | None = None) -> None:
        self._client = client
        self._max_batch = max_batch
        self._handoff = handoff
        self._pending: list[tuple[bytes, asyncio.Future[Reply]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def complete(self, task_id: str, output: JSONObject) -> Reply:
        """Raises :class:`UnencodableBodyError` at once when ``output`` is not JSON."""
        return await self._submit(encode_json({"taskId": task_id, "output": output}))

    async def fail(self, task_id: str, error: str, *, retryable: bool) -> Reply:
        body = {"taskId": task_id, "error": error, "retryable": retryable}
        return await self._submit(encode_json(body))

    async def _submit(self, encoded: bytes) -> Reply:
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending.append((encoded, reply))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_pending(), name="orchy-results")
        return await asyncio.shield(reply)

    async def _send_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            handoff = self._handoff
            take_next: JSONObject | None = None
            if handoff is not None and handoff.accepting():
                take_next = {"workerId": handoff.worker_id, "actions": handoff.actions}
                take_next["max"] = len(batch)
            try:
                replies, tasks = await self._send([encoded for encoded, _ in batch], take_next)
            except BaseException as error:
                for _, reply in batch:
                    if not reply.done():
                        reply.set_exception(error)
                raise
            if handoff is not None:
                for task in tasks:
                    handoff.start(task)
            for (_, reply), answer in zip(batch, replies, strict=True):
                if not reply.done():
                    reply.set_result(answer)

    async def _send(
        self, encoded: list[bytes], take_next: JSONObject | None
    ) -> tuple[list[Reply], list[Task]]:
        replies, tasks = await self._client.results(encoded, take_next)
        if len(encoded) == 1 or not all(r.status is ReplyStatus.REJECTED for r in replies):
            return replies, tasks
        # A request refused whole (its body checks stop at one result, an integer beyond 64
        # bits or nesting too deep; or the results together are over the batch limit) says
        # nothing of each result: each alone gets its own answer, so one refused output does
        # not fail the tasks it was sent with.
        one_slot = None if take_next is None else {**take_next, "max": 1}
        replies, tasks = [], []
        for result in encoded:
            reply, leased = await self._client.results([result], one_slot)
            replies += reply
            tasks += leased
        return replies, tasks
