"""uvicorn's httptools protocol, answering a response of known length in one socket write.

uvicorn writes a response's head (status line and headers) to the socket as soon as the
application sends ``http.response.start``, and its body on ``http.response.body``: two
writes, two system calls and two wake-ups of the client, for answers of a few bytes that
the worker routes send by the thousand. Here the head of a response with a
``content-length`` is held and goes out with the first write of its body. A response
without one (chunked: streamed, of unknown length) is written as uvicorn writes it, so that
its client sees the head at once; so is the answer to a HEAD request, which has no body to
carry it, and everything a cycle writes before its response starts (``100 Continue``). A held head is never left behind: the cycle's next write, or
its transport's close, takes it out first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _HeadWithBody:
    """One cycle's transport: the connection's own, but for the head it holds."""

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head_seen = False
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        cycle = self._cycle
        if not self._head_seen and cycle.response_started:
            self._head_seen = True  # the first write once the response has started
            # A HEAD answer's body is never written: its head has nothing to wait for.
            if not cycle.chunked_encoding and cycle.scope["method"] != "HEAD":
                self._held = bytes(data)
                return
        if self._held:
            data, self._held = self._held + data, b""
        self._transport.write(data)

    def close(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._transport.write(held)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        cycle.transport = _HeadWithBody(cycle.transport, cycle)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)
