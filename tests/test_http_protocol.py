"""The HTTP protocol `orchy serve` runs (``app/http_protocol.py``): a response of known
length leaves in one socket write, and nothing a client waits for is held back."""

from __future__ import annotations

import asyncio

import orjson

from tests.helpers.http import ServerThread

READ_DEADLINE_SECONDS = 10.0
TASK_PATH = "/tasks/0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b.1.1/fail"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_DEADLINE_SECONDS)


async def test_a_client_that_expects_100_continue_gets_it_before_it_sends_its_body(
    server: ServerThread,
) -> None:
    body = orjson.dumps({"error": "boom"})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            f"POST {TASK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        assert (await read_head(reader)).startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        await writer.drain()
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 404 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = await asyncio.wait_for(reader.readexactly(length), READ_DEADLINE_SECONDS)
        assert orjson.loads(answer)["error"].startswith("task ")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_answers_on_one_connection_each_come_whole_and_in_order(
    server: ServerThread,
) -> None:
    """Keep-alive: each answer's head and body go out together, before the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for index in range(3):
            body = orjson.dumps({"error": f"boom {index}"})
            writer.write(
                f"POST /tasks/x{index}/fail HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 404 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = await asyncio.wait_for(reader.readexactly(length), READ_DEADLINE_SECONDS)
            assert f"'x{index}'" in orjson.loads(answer)["error"]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_head_request_gets_its_head_and_the_connection_goes_on(
    server: ServerThread,
) -> None:
    """A HEAD answer has no body to carry its head: the head leaves on its own, at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):  # the same connection answers again after it
            writer.write(b"HEAD /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b"content-length: " in head.lower()
    finally:
        writer.close()
        await writer.wait_closed()
