"""One pipeline for the Redis commands of every request served in the same turn of the
event loop.

Workers send many small concurrent requests (a ``/complete`` per task); each one's
transition is one Redis command. Sent each on its own, every command costs the server a
socket write and a read of its own, which on a loopback connection cost more than the rest
of the round trip. Commands issued in the same turn of the loop are instead sent together,
at the end of that turn, in one pipeline: each script still runs as its own atomic call, and
each caller gets its own replies, in order. A caller waits one turn of the loop more.

On a plain Redis (not a cluster) the pipeline is sent on a connection of the client's pool
directly, and its replies read one after the other: redis-py's ``Pipeline`` object costs
more per command (its queue, its command parsing, its reply handling) than the round trip
itself, for commands that need none of it. It is retried on a connection error as
redis-py retries a pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection, ConnectionPool

    from app.store.store import RedisClient

Command = tuple[Any, ...]
HGETALL = "HGETALL"  # its reply is pairs, given as a dict as redis-py gives it


class Coalescer:
    def __init__(self, client: RedisClient) -> None:
        self._client = client
        # A cluster client has no pool of its own: it goes through redis-py's pipeline.
        self._pool: ConnectionPool | None = getattr(client, "connection_pool", None)
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
        try:
            replies = await self._execute([command for calls, _ in batch for command in calls])
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

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """The commands' replies, in order, an error reply as its exception."""
        if self._pool is None:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
        pool = self._pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            replies: list[Any] = await connection.retry.call_with_retry(
                lambda: _round_trip(connection, commands),
                lambda _error: connection.disconnect(),
            )
        finally:
            await pool.release(connection)
        return [
            _as_dict(reply) if command[0] == HGETALL and isinstance(reply, list) else reply
            for command, reply in zip(commands, replies, strict=True)
        ]


async def _round_trip(connection: AbstractConnection, commands: list[Command]) -> list[Any]:
    try:
        await connection.send_packed_command(connection.pack_commands(commands), False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:
                replies.append(error)
    except BaseException:
        # Replies left unread would be read by the connection's next user.
        await connection.disconnect(nowait=True)
        raise
    return replies


def _as_dict(pairs: list[Any]) -> dict[Any, Any]:
    return dict(zip(pairs[::2], pairs[1::2], strict=True))
