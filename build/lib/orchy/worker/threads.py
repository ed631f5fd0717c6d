"""A pool of daemon threads for synchronous actions.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so
one action stuck in a blocking call would keep a stopped worker alive forever. Abandoned
work must not do that: its lease expires on the server and the task is retried elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DaemonThreadPool:
    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError(f"a thread pool needs at least one thread, not {size}")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(self, func: Callable[..., R], *args: Any) -> R:
        """Run ``func(*args)`` in a pool thread, with the caller's context variables."""
        if self._closed:
            raise RuntimeError("the thread pool is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        context = contextvars.copy_context()
        self._jobs.put((lambda: context.run(func, *args), loop, future))
        if len(self._threads) < self._size:
            self._start_thread()
        return await future

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end after their job, and never block exit."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, loop, future = job
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting coroutine, not lost
                _settle_soon(loop, future, None, exc)
            else:
                _settle_soon(loop, future, result, None)


def _settle_soon(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    # A closed loop means the worker stopped and abandoned this job.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # cancelled: the job was abandoned
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
