"""Watching for a client that hangs up during a long request (a poll, a wait for a run)."""

from __future__ import annotations

import asyncio

from starlette.types import Receive


async def watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Sets ``gone`` when the client hangs up (the body has been read, so the next message
    the server gets for this request is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
