"""Processes that read large data documents for the planner.

JSONPath over a big run's data (``{$..*}`` over megabytes) creates millions of objects. In
a thread it would still hold the interpreter lock in turns with the event loop, and the
garbage collections it sets off stop every thread for hundreds of milliseconds: one run's
data would stall every request. In a process of its own it stalls nothing; what crosses is
JSON text one way and the answer the other.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")


class DocumentPool:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in one of the processes (started on first use): a function
        of a module, with arguments and an answer that pickle."""
        executor = self._executor
        if executor is None:
            # Spawned, not forked: the server has threads, and a fork copies their locks.
            context = multiprocessing.get_context("spawn")
            executor = ProcessPoolExecutor(self.processes, mp_context=context)
            self._executor = executor
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, function, *args)
        except BrokenProcessPool:
            # A process died (killed, out of memory): the next call gets fresh ones.
            if self._executor is executor:
                self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
