"""The user actions of ``log_action_example.json``: Orchy's ``logAction`` example.

``orchy worker workflows/log_action_example_worker.py``, then run ``logActionExample`` with
``--input @workflows/log_action_example.input.json``. ``make-key1`` and ``make-x`` answer
``key1`` and ``x`` from the input; ``logAction`` (action 4) gets its parameters resolved:
``k1`` 23, ``k2`` from ``{$1.output.key1}`` and ``k3`` from ``{$6.output.x}`` (Orchy's
shorthand for ``{$.1.output.key1}`` and ``{$.6.output.x}``), values keeping their JSON type.
``logAction`` logs its input and answers it unchanged, so action 3, a second
``logAction``, gets the first one's parameters as ``logged``.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import Worker

logger = logging.getLogger("orchy.worker.log_action_example")

worker = Worker()


@worker.action("make-key1")
async def make_key1(input: dict[str, Any]) -> dict[str, Any]:
    return {"key1": input.get("key1")}


@worker.action("make-x")
async def make_x(input: dict[str, Any]) -> dict[str, Any]:
    return {"x": input.get("x")}


@worker.action("logAction")
async def log_action(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("logAction: %s", input)
    return dict(input)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
