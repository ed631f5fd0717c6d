"""Sends results in batches: while one ``POST /tasks/results`` is out, the results that
finish meanwhile wait and go together in the next one. A lone result goes at once, so
batching costs no latency; under load one request carries many results."""

from __future__ import annotations

import asyncio

from app.jsontypes import JSONObject
from app.worker.client import OrchyClient, Reply, encode_json


class ResultBatcher:
    def __init__(self, client: OrchyClient, max_batch: int) -> None:
        self._client = client
        self._max_batch = max_batch
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
            try:
                replies = await self._client.results([encoded for encoded, _ in batch])
            except BaseException as error:
                for _, reply in batch:
                    if not reply.done():
                        reply.set_exception(error)
                raise
            for (_, reply), answer in zip(batch, replies, strict=True):
                if not reply.done():
                    reply.set_result(answer)
