"""The user actions of ``switch_example.json``: Orchy's switch on ``"200"``, ``"300"`` and
``default``.

``orchy worker workflows/switch_example_worker.py``, then run ``switchExample`` with the input
``{"key1": 200}`` (action 3, ``handle-200``, runs), ``{"key1": 300}`` (action 4,
``handle-300``) or any other ``key1`` (action 6, ``handle-default``). ``read-status`` answers
``key1`` as given: the switch compares it as text, so ``200`` and ``"200"`` take the same
branch.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import Worker

logger = logging.getLogger("orchy.worker.switch_example")

worker = Worker()


@worker.action("read-status")
async def read_status(input: dict[str, Any]) -> dict[str, Any]:
    return {"key1": input.get("key1")}


def _handled(branch: str, input: dict[str, Any]) -> dict[str, Any]:
    logger.info("branch %s for key1 %r", branch, input.get("key1"))
    return {"branch": branch, "key1": input.get("key1")}


@worker.action("handle-200")
async def handle_200(input: dict[str, Any]) -> dict[str, Any]:
    return _handled("200", input)


@worker.action("handle-300")
async def handle_300(input: dict[str, Any]) -> dict[str, Any]:
    return _handled("300", input)


@worker.action("handle-default")
async def handle_default(input: dict[str, Any]) -> dict[str, Any]:
    return _handled("default", input)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
