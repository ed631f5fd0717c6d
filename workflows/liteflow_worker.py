"""The steps of LiteFlow's README samples (``liteflow_*.json``), as user actions.

``orchy worker workflows/liteflow_worker.py``, then run any of the samples, for example
``orchy run liteflowPassingData --input @workflows/liteflow_passing_data.input.json --wait``.
LiteFlow's steps print; these log the same and answer what they did, so that a run's view
shows it.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import NonRetryableError, Worker

logger = logging.getLogger("orchy.worker.liteflow")

worker = Worker()


@worker.action("hello")
async def hello(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("Hello world")
    return {"said": "Hello world"}


@worker.action("goodbye")
async def goodbye(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("Goodbye")
    return {"said": "Goodbye", **input}


@worker.action("add-numbers")
async def add_numbers(input: dict[str, Any]) -> dict[str, Any]:
    first, second = input.get("input1"), input.get("input2")
    for name, value in (("input1", first), ("input2", second)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NonRetryableError(f"{name} must be a number, not {value!r}")
    assert isinstance(first, int | float) and isinstance(second, int | float)
    return {"output": first + second}


@worker.action("do-stuff")
async def do_stuff(input: dict[str, Any]) -> dict[str, Any]:
    """Answers ``your_value``, ``my_value`` + 1, when given a number ``my_value`` (the while
    sample's body)."""
    logger.info("doing stuff...%s", input)
    my_value = input.get("my_value")
    if isinstance(my_value, int) and not isinstance(my_value, bool):
        return {"did": input, "your_value": my_value + 1}
    return {"did": input}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
