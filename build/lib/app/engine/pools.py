"""The heavy parts an engine works with: the threads that run JavaScript (and the script
processes behind them) and the processes that read large data documents. One set per
server process, shared by the engines of every tenant."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app.actions import javascript
from app.engine.document_pool import DocumentPool
from app.settings import Settings


@dataclass(frozen=True)
class Pools:
    executor: ThreadPoolExecutor
    documents: DocumentPool

    @classmethod
    def create(cls, settings: Settings) -> Pools:
        threads = max(settings.js_threads, settings.js_processes)
        return cls(
            ThreadPoolExecutor(threads, thread_name_prefix="orchy-js"),
            DocumentPool(settings.document_processes),
        )

    async def warm_up(self) -> None:
        """Starts the script processes now rather than on the first script."""
        await asyncio.get_running_loop().run_in_executor(self.executor, javascript.start)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.documents.close()
        javascript.close()
