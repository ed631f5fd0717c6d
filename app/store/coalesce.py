"""One pipeline for the Redis commands of every request served in the same turn of the
event loop.

Workers send many small concurrent requests (a ``/complete`` per task); each one's
transition is one Redis command. Sent each on its own, every command costs the server a
socket write and a read of its own, which on a loopback connection cost more than the rest
of the round trip. Commands issued in the same turn of the loop are instead sent together,
at the end of that turn, in one pipeline: each script still runs as its own atomic call, and
each caller gets its own replies, in order. A caller waits one turn of the loop more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.store.store import RedisClient

Command = tuple[Any, ...]


class Coalescer:
    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._pending: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The commands' replies, in order; a command's error is its reply, not raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((commands, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)  # a reference, until it is done
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for commands, _ in batch:
            for command in commands:
                pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # the connection failed: every caller is told
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for commands, future in batch:
            if not future.done():  # a caller that was cancelled is gone
                future.set_result(replies[start : start + len(commands)])
            start += len(commands)
